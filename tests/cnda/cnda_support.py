"""Helpers shared by the CNDA tests (a module, so test files can import them)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from simulators.cnda.repository import Dossier
from simulators.cnda.service import CndaService
from simulators.cnda.states import Role, State

AGENT, EDITOR = Role.AGENT.value, Role.EDITOR.value
DMP_PSC = {"profiles": ["alimentation"], "auth_modes": ["psc"]}
DMP_PLAIN = {"profiles": ["consultation"], "auth_modes": ["indirecte-certificat-es"]}

BundleMaker = Callable[..., Path]


def new_dossier(service: CndaService, perimeter: dict[str, list[str]] | None = None) -> Dossier:
    editor = service.register_editor("Éditeur Exemple SAS", "qa@example.test")
    software = service.create_software(editor.nie, "DPI Exemple", "4.2")
    service.create_software(editor.nie, "Connecteur DMP", "1.0", component_of=software.nil)
    return service.open_request(editor.nie, software.nil, "DMP", perimeter or DMP_PLAIN)


def plan_ids(service: CndaService, request_id: str) -> list[str]:
    """The case IDs of the dossier's personalised test plan (sent at pre_examen)."""
    return [c["id"] for c in (service.dossier(request_id).test_plan or {}).get("cases", [])]


def covering_bundle(service: CndaService, make_bundle: BundleMaker, request_id: str) -> Path:
    """A PASSED bundle whose passedTests name every case of the dossier's plan."""
    return make_bundle(passed=["MSS-SMTP-01", *plan_ids(service, request_id)])


def deposit_initial_documents(service: CndaService, dossier: Dossier) -> None:
    service.deposit_document(dossier.id, "contract_request", "demande.pdf", b"%PDF contract")
    service.deposit_document(dossier.id, "signed_conditions", "cgu.pdf", b"%PDF conditions")
    if dossier.psc:
        service.deposit_document(
            dossier.id, "psc_maturity_attestation", "maturite.pdf", b"%PDF maturity"
        )


def walk_to(
    service: CndaService,
    make_bundle: BundleMaker,
    target: State,
    perimeter: dict[str, list[str]] | None = None,
) -> Dossier:
    """A fresh dossier moved to ``target`` along the main path."""
    dossier = new_dossier(service, perimeter)
    rid = dossier.id
    if target is State.ABANDONNE:
        return service.transition(rid, "abandon", role=EDITOR, reason="project stopped")
    path = [
        (State.INITIALISATION, None),
        (State.PRE_EXAMEN, "send-test-plan"),
        (State.CORRECTION, "refuse"),
        (State.EXAMEN_A_PLANIFIER, "validate"),
        (State.EXAMEN_PLANIFIE, "schedule-exam"),
        (State.FINALISATION, "pass-exam"),
        (State.ATTESTATION_EMISE, "finalise"),
        (State.CONFORME, "complete"),
    ]
    for state, action in path:
        if action == "send-test-plan":
            deposit_initial_documents(service, dossier)
        if action in ("refuse", "validate"):
            service.deposit_proof(rid, make_bundle())
        if action == "validate" and service.dossier(rid).state == State.CORRECTION:
            service.transition(rid, "resubmit", role=EDITOR)
        if action == "complete":
            service.deposit_document(rid, "satisfaction_questionnaire", "q.txt", b"5/5")
            if dossier.psc:
                service.deposit_document(rid, "psc_habilitation_receipt", "r.pdf", b"%PDF r")
        if action is not None:
            role = EDITOR if action == "complete" else AGENT
            service.transition(
                rid, action, role=role, reason="test", exam_date="2025-04-01", exam_mode="remote"
            )
        if state is target:
            break
    dossier = service.dossier(rid)
    assert dossier.state == target
    return dossier
