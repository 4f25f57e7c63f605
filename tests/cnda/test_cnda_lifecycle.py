"""The dossier lifecycle through the service: end to end, illegal moves, races, chain."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from cnda_support import (
    DMP_PLAIN,
    DMP_PSC,
    BundleMaker,
    covering_bundle,
    deposit_initial_documents,
    new_dossier,
    plan_ids,
    walk_to,
)

from simulators import DISCLAIMER
from simulators.cnda.attestation import verify_attestation
from simulators.cnda.automation import AgentRules
from simulators.cnda.errors import (
    ForbiddenRoleError,
    IllegalTransitionError,
    InvalidInputError,
    NotFoundError,
    ProofRefusedError,
)
from simulators.cnda.identifiers import REAL_AUTHORIZATION_SHAPE, SIMULATED_ID
from simulators.cnda.service import CndaService
from simulators.cnda.states import Role, State
from simulators.core.config import DataDir
from simulators.core.pki import TestPKI
from simulators.core.proof import sha256_file
from simulators.core.store.database import Database

AGENT, EDITOR = Role.AGENT.value, Role.EDITOR.value


# ---- end to end -------------------------------------------------------------------------
def test_dossier_walks_end_to_end_with_correction_and_failed_exam(
    service: CndaService, make_bundle: BundleMaker, pki: TestPKI, tmp_path: Path
) -> None:
    dossier = new_dossier(service, DMP_PSC)
    rid = dossier.id
    assert dossier.psc and dossier.state == State.INITIALISATION
    assert len(dossier.components) == 1

    deposit_initial_documents(service, service.dossier(rid))
    dossier = service.transition(rid, "send-test-plan", role=AGENT)
    assert dossier.state == State.PRE_EXAMEN
    assert service.status(rid)["portalStatus"] == "En cours actif"
    assert dossier.expected_return_date == "2025-04-02"  # 30 days after the plan was sent
    assert dossier.provisional_number and SIMULATED_ID.match(dossier.provisional_number)
    cases = [c["id"] for c in (dossier.test_plan or {})["cases"]]
    assert "0.1-230" in cases and "2.1-100" in cases and "0.2-100" in cases  # psc, feeding
    assert "3.1-100" not in cases and "0.1-210" not in cases  # consultation, indirect auth

    failed = make_bundle("FAILED")
    service.deposit_proof(rid, failed)
    dossier = service.transition(rid, "refuse", role=AGENT, reason="MSS-IMAP-02 fails")
    assert dossier.state == State.CORRECTION and dossier.round == 2
    with pytest.raises(IllegalTransitionError, match="no proof deposited in round 2"):
        service.transition(rid, "resubmit", role=EDITOR)
    fixed = covering_bundle(service, make_bundle, rid)
    report_pdf = tmp_path / "capture-dmp.pdf"
    report_pdf.write_bytes(b"%PDF screenshots of the DMP tests")
    service.deposit_proof(rid, fixed)
    uploaded = service.deposit_proof(rid, report_pdf)
    assert uploaded.kind == "file" and uploaded.sha256 == sha256_file(report_pdf)
    service.transition(rid, "resubmit", role=EDITOR)
    dossier = service.transition(rid, "validate", role=AGENT)
    assert dossier.state == State.EXAMEN_A_PLANIFIER

    service.transition(rid, "schedule-exam", role=AGENT, exam_date="2025-04-10", exam_mode="remote")
    dossier = service.transition(
        rid, "fail-exam", role=AGENT, reason="VIHF incomplete", exam_date="2025-04-24"
    )
    assert dossier.state == State.EXAMEN_PLANIFIE
    assert (dossier.exam_date, dossier.exam_attempts) == ("2025-04-24", 1)
    dossier = service.transition(rid, "pass-exam", role=AGENT)
    assert dossier.state == State.FINALISATION and dossier.exam_attempts == 2
    with pytest.raises(IllegalTransitionError):
        service.transition(rid, "complete", role=EDITOR)  # attestation not issued yet

    dossier = service.transition(rid, "finalise", role=AGENT)
    assert dossier.state == State.ATTESTATION_EMISE
    assert dossier.production_number and SIMULATED_ID.match(dossier.production_number)
    with pytest.raises(IllegalTransitionError, match="psc_habilitation_receipt"):
        service.transition(rid, "complete", role=EDITOR)
    service.deposit_document(rid, "psc_habilitation_receipt", "recepisse.pdf", b"%PDF r")
    service.deposit_document(rid, "satisfaction_questionnaire", "q.json", b'{"note": 5}')
    dossier = service.transition(rid, "complete", role=EDITOR)
    assert dossier.state == State.CONFORME

    # The attestation says what the issue asks for, and verifies with ours and openssl.
    directory = service.attestation_dir(rid)
    check = verify_attestation(directory, ca_file=pki.root_cert_path)
    assert check.ok, check.problems
    doc = check.document or {}
    editor = service.editor(dossier.nie)
    assert doc["editor"] == {"nie": editor.nie, "name": "Éditeur Exemple SAS"}
    assert doc["software"]["nil"] == dossier.nil and doc["software"]["version"] == "4.2"
    assert [c["name"] for c in doc["components"]] == ["Connecteur DMP"]
    assert doc["service"]["id"] == "DMP" and doc["perimeter"] == DMP_PSC
    assert doc["referentiel"]["version"] == "SIMU-DMP-2024.1"
    assert doc["testPlan"]["version"] == "SIMU-1.0" and doc["testPlan"]["cases"] == cases
    assert doc["exam"] == {"date": "2025-04-24", "mode": "remote", "attempts": 2}
    assert doc["productionNumber"] == dossier.production_number
    assert doc["issuedAt"].startswith("2025-03-03") and doc["validUntil"] > "2028-01-01"
    # Relied on: the proofs of the validated round, not the refused FAILED one.
    proof_hashes = {p["sha256"] for p in doc["proofs"]}
    assert proof_hashes == {sha256_file(fixed / "report.json"), uploaded.sha256}
    assert {p["round"] for p in doc["proofs"]} == {2}
    assert doc["coverage"]["complete"] is True
    assert [c["id"] for c in doc["coverage"]["cases"]] == cases
    assert all(
        c["status"] == "passed" and c["proofs"] == [sha256_file(fixed / "report.json")]
        for c in doc["coverage"]["cases"]
    )
    assert doc["simulation"] is True and doc["disclaimer"] == DISCLAIMER
    proc = subprocess.run(
        ["openssl", "cms", "-verify", "-binary", "-inform", "DER",
         "-in", str(directory / "attestation.json.p7s"),
         "-content", str(directory / "attestation.json"),
         "-CAfile", str(pki.root_cert_path), "-purpose", "any", "-out", "/dev/null"],
        capture_output=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    html = (directory / "attestation.html").read_text()
    assert "SIMULATION" in html and dossier.production_number in html
    assert "Couverture du plan de tests" in html  # rendered from, and checked against, the JSON

    events = service.events(rid)
    assert service.verify_events(rid) == []
    transitions = [e.action for e in events if e.from_state != e.to_state]
    assert transitions == [
        "open", "send-test-plan", "refuse", "resubmit", "validate", "schedule-exam",
        "pass-exam", "finalise", "complete",
    ]  # fmt: skip
    fail = next(e for e in events if e.action == "fail-exam")
    assert (fail.from_state, fail.to_state, fail.reason) == (
        "examen_planifie", "examen_planifie", "VIHF incomplete",
    )  # fmt: skip
    finalise = next(e for e in events if e.action == "finalise")
    assert finalise.evidence_sha256 == sha256_file(directory / "attestation.json")
    deposit = next(e for e in events if e.action == "deposit-proof")
    assert deposit.evidence_sha256 == sha256_file(failed / "report.json")
    assert all(e.at and e.actor and e.role in ("editor", "agent") for e in events)


def test_edited_attestation_fails(
    service: CndaService, make_bundle: BundleMaker, pki: TestPKI, tmp_path: Path
) -> None:
    dossier = walk_to(service, make_bundle, State.ATTESTATION_EMISE)
    original = service.attestation_dir(dossier.id)
    for name in ("attestation.json", "attestation.html", "attestation.json.p7s"):
        copy = tmp_path / f"copy-{name}"
        shutil.copytree(original, copy)
        data = bytearray((copy / name).read_bytes())
        data[len(data) // 2] ^= 0x01
        (copy / name).write_bytes(bytes(data))
        check = verify_attestation(copy, ca_file=pki.root_cert_path)
        assert not check.ok, name


def test_agent_rules_walk_a_dossier_for_ci(service: CndaService, make_bundle: BundleMaker) -> None:
    dossier = new_dossier(service)
    report = service.run_agent(dossier.id)
    assert report.done == []
    assert "editor: deposit contract_request" in report.waiting_for

    deposit_initial_documents(service, dossier)
    report = service.run_agent(dossier.id)
    assert [e.action for e in report.done] == ["send-test-plan"]
    assert report.waiting_for == ["editor: deposit test proofs (round 1)"]

    service.deposit_proof(dossier.id, make_bundle("FAILED"))
    report = service.run_agent(dossier.id)
    assert [e.action for e in report.done] == ["refuse"]
    assert "MSS-IMAP-02" in (report.done[0].reason or "")

    service.deposit_proof(dossier.id, covering_bundle(service, make_bundle, dossier.id))
    service.transition(dossier.id, "resubmit", role=EDITOR)
    report = service.run_agent(dossier.id)
    assert [e.action for e in report.done] == ["validate", "schedule-exam", "pass-exam", "finalise"]
    assert report.waiting_for == ["editor: deposit satisfaction_questionnaire"]
    service.deposit_document(dossier.id, "satisfaction_questionnaire", "q.txt", b"ok")
    report = service.run_agent(dossier.id)
    assert [e.action for e in report.done] == ["complete"]
    assert service.dossier(dossier.id).state == State.CONFORME
    assert all(e.actor == "agent:rules" for e in report.done)


def test_agent_rules_leave_uploaded_files_to_a_human(service: CndaService, tmp_path: Path) -> None:
    dossier = new_dossier(service)
    deposit_initial_documents(service, dossier)
    service.run_agent(dossier.id)
    screenshot = tmp_path / "capture.png"
    screenshot.write_bytes(b"\x89PNG not really")
    cases = plan_ids(service, dossier.id)
    uploaded = service.deposit_proof(dossier.id, screenshot, cases=cases)
    assert uploaded.details["cases"] == dict.fromkeys(cases, "declared")
    report = service.run_agent(dossier.id, AgentRules())
    assert report.done == []
    assert service.dossier(dossier.id).state == State.PRE_EXAMEN
    assert report.waiting_for == [
        "editor: deposit passing proofs for the plan cases not covered yet (round 1): "
        + ", ".join(cases),
        "agent: validate or refuse the proofs",
    ]
    # A human agent may validate on declared files; the event says what it relied on.
    service.transition(dossier.id, "validate", role=AGENT, actor="agent:jdupont")
    validated = service.events(dossier.id)[-1]
    assert validated.actor == "agent:jdupont"
    assert validated.data["coverage"]["declared"] == cases
    assert validated.data["coverage"]["complete"] is False


# ---- illegal transitions ----------------------------------------------------------------
# Every pair the table forbids, for every role and surface: test_cnda_state_table.py.


def test_finalising_from_pre_examen_is_refused(
    service: CndaService, make_bundle: BundleMaker
) -> None:
    dossier = walk_to(service, make_bundle, State.PRE_EXAMEN)
    with pytest.raises(IllegalTransitionError, match="cannot finalise while the dossier is pre_"):
        service.transition(dossier.id, "finalise", role=AGENT)
    assert service.dossier(dossier.id).production_number is None
    assert not (service.storage.attestations / dossier.id).exists() or not any(
        (service.storage.attestations / dossier.id).iterdir()
    )


@pytest.mark.parametrize("closed", [State.CONFORME, State.ABANDONNE])
def test_depositing_on_a_closed_dossier_is_refused(
    service: CndaService, make_bundle: BundleMaker, closed: State
) -> None:
    dossier = walk_to(service, make_bundle, closed)
    events = len(service.events(dossier.id))
    with pytest.raises(IllegalTransitionError, match="closed"):
        service.deposit_proof(dossier.id, make_bundle())
    with pytest.raises(IllegalTransitionError):
        service.deposit_document(dossier.id, "contract_request", "c.pdf", b"%PDF")
    assert len(service.events(dossier.id)) == events


def test_guards(service: CndaService, make_bundle: BundleMaker) -> None:
    dossier = new_dossier(service)
    rid = dossier.id
    with pytest.raises(IllegalTransitionError, match="missing"):
        service.transition(rid, "send-test-plan", role=AGENT)
    with pytest.raises(IllegalTransitionError, match="cannot deposit proofs"):
        service.deposit_proof(rid, make_bundle())
    with pytest.raises(InvalidInputError, match="only for PSC"):
        service.deposit_document(rid, "psc_maturity_attestation", "m.pdf", b"%PDF")
    deposit_initial_documents(service, dossier)
    service.transition(rid, "send-test-plan", role=AGENT)
    with pytest.raises(IllegalTransitionError, match="no proof deposited"):
        service.transition(rid, "validate", role=AGENT)  # validating without any proof
    with pytest.raises(InvalidInputError, match="needs a reason"):
        service.transition(rid, "refuse", role=AGENT)
    with pytest.raises(ForbiddenRoleError):
        service.transition(rid, "validate", role=EDITOR)
    with pytest.raises(ForbiddenRoleError):
        service.transition(rid, "resubmit", role=AGENT)
    with pytest.raises(InvalidInputError, match="unknown action"):
        service.transition(rid, "approve", role=AGENT)
    with pytest.raises(InvalidInputError, match="unknown role"):
        service.transition(rid, "validate", role="admin")
    with pytest.raises(InvalidInputError, match="unknown document type"):
        service.deposit_document(rid, "invoice", "i.pdf", b"x")
    bundle = make_bundle()
    service.deposit_proof(rid, bundle)
    with pytest.raises(IllegalTransitionError, match="already deposited"):
        service.deposit_proof(rid, bundle)
    service.transition(rid, "validate", role=AGENT)
    with pytest.raises(InvalidInputError, match="needs an exam date"):
        service.transition(rid, "schedule-exam", role=AGENT)
    with pytest.raises(InvalidInputError, match="not a date"):
        service.transition(rid, "schedule-exam", role=AGENT, exam_date="next week")
    with pytest.raises(InvalidInputError, match="exam mode"):
        service.transition(rid, "schedule-exam", role=AGENT, exam_date="2025-05-01", exam_mode="x")
    service.transition(rid, "schedule-exam", role=AGENT, exam_date="2025-05-01")
    with pytest.raises(InvalidInputError, match="NEW date"):
        service.transition(rid, "fail-exam", role=AGENT, reason="r", exam_date="2025-05-01")
    assert service.dossier(rid).state == State.EXAMEN_PLANIFIE


def test_bad_registration_input(service: CndaService) -> None:
    editor = service.register_editor("E")
    other = service.register_editor("F")
    software = service.create_software(editor.nie, "S", "1")
    with pytest.raises(InvalidInputError):
        service.register_editor("  ")
    with pytest.raises(InvalidInputError, match="another editor"):
        service.create_software(other.nie, "C", "1", component_of=software.nil)
    with pytest.raises(InvalidInputError, match="does not belong"):
        service.open_request(other.nie, software.nil, "DMP", DMP_PLAIN)
    with pytest.raises(InvalidInputError, match="unknown service"):
        service.open_request(editor.nie, software.nil, "NOPE", {})
    with pytest.raises(InvalidInputError, match="choose at least one auth_modes"):
        service.open_request(editor.nie, software.nil, "DMP", {"profiles": ["alimentation"]})
    with pytest.raises(InvalidInputError, match="unknown value"):
        service.open_request(editor.nie, software.nil, "DMP", {**DMP_PLAIN, "profiles": ["x"]})
    with pytest.raises(InvalidInputError, match="unknown perimeter axis"):
        service.open_request(editor.nie, software.nil, "DMP", {**DMP_PLAIN, "colour": ["red"]})
    component = service.create_software(editor.nie, "C", "1", component_of=software.nil)
    with pytest.raises(InvalidInputError, match="is a component"):
        service.open_request(editor.nie, component.nil, "DMP", DMP_PLAIN)
    # Service names are case-insensitive; other services are data, not code.
    insi = service.open_request(
        editor.nie, software.nil, "insi", {"operations": ["verification"], "auth_modes": ["cps"]}
    )
    assert insi.service == "INSi" and not insi.psc


# ---- proofs -----------------------------------------------------------------------------
def test_tampered_bundle_is_refused_at_deposit(
    service: CndaService, make_bundle: BundleMaker
) -> None:
    dossier = walk_to(service, make_bundle, State.PRE_EXAMEN)
    bundle = make_bundle()
    (bundle / "artefacts" / "transcript.txt").write_bytes(b"edited after signing\r\n")
    before = service.dossier(dossier.id)
    with pytest.raises(ProofRefusedError) as caught:
        service.deposit_proof(dossier.id, bundle)
    assert any(p.startswith("artefacts/transcript.txt: modified") for p in caught.value.problems)
    after = service.dossier(dossier.id)
    assert after.state == before.state and service.repo.proofs(dossier.id) == []
    refused = service.events(dossier.id)[-1]
    assert refused.action == "proof-refused" and "transcript.txt" in (refused.reason or "")
    assert service.verify_events(dossier.id) == []
    with pytest.raises(IllegalTransitionError, match="no proof"):
        service.transition(dossier.id, "validate", role=AGENT)


def test_bundle_from_another_pki_is_refused(
    service: CndaService, make_bundle: BundleMaker, tmp_path: Path
) -> None:
    dossier = walk_to(service, make_bundle, State.PRE_EXAMEN)
    stranger = TestPKI.load_or_create(tmp_path / "stranger-pki", "mssante.localhost")
    with pytest.raises(ProofRefusedError) as caught:
        service.deposit_proof(dossier.id, make_bundle(signer=stranger))
    assert any("trust anchor" in p for p in caught.value.problems)


def test_deposited_bundle_is_kept_as_verified(
    service: CndaService, make_bundle: BundleMaker
) -> None:
    dossier = walk_to(service, make_bundle, State.PRE_EXAMEN)
    bundle = make_bundle()
    proof = service.deposit_proof(dossier.id, bundle)
    assert proof.kind == "bundle" and proof.result == "PASSED"
    assert proof.sha256 == sha256_file(bundle / "report.json")
    kept = Path(proof.stored_path)
    assert (
        kept != bundle
        and (kept / "report.json").read_bytes() == (bundle / "report.json").read_bytes()
    )
    shutil.rmtree(bundle)  # the editor's copy can go; ours stays
    assert (kept / "report.json.p7s").exists()
    assert proof.details["runId"] and proof.details["failedTests"] == []


def test_directory_that_is_not_a_bundle_is_refused(
    service: CndaService, make_bundle: BundleMaker, tmp_path: Path
) -> None:
    dossier = walk_to(service, make_bundle, State.PRE_EXAMEN)
    (tmp_path / "loose").mkdir()
    with pytest.raises(InvalidInputError, match="not a proof bundle"):
        service.deposit_proof(dossier.id, tmp_path / "loose")
    with pytest.raises(NotFoundError):
        service.deposit_proof(dossier.id, tmp_path / "missing.pdf")


# ---- concurrency ------------------------------------------------------------------------
def _race(calls: list[tuple[str, dict[str, str]]], service: CndaService, rid: str) -> list[str]:
    barrier = threading.Barrier(len(calls))
    outcomes: list[str] = []
    lock = threading.Lock()

    def run(action: str, kwargs: dict[str, str]) -> None:
        barrier.wait()
        try:
            service.transition(rid, action, **kwargs)
            outcome = f"won:{action}"
        except IllegalTransitionError:
            outcome = "refused"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=run, args=call) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def test_concurrent_transitions_cannot_both_win(
    service: CndaService, make_bundle: BundleMaker
) -> None:
    dossier = walk_to(service, make_bundle, State.PRE_EXAMEN)
    service.deposit_proof(dossier.id, make_bundle())
    calls = [("validate", {"role": AGENT})] * 6 + [("refuse", {"role": AGENT, "reason": "no"})] * 6
    outcomes = _race(calls, service, dossier.id)
    winners = [o for o in outcomes if o.startswith("won")]
    assert len(winners) == 1 and outcomes.count("refused") == 11
    after = service.dossier(dossier.id)
    assert after.state == ("correction" if winners[0] == "won:refuse" else "examen_a_planifier")
    changes = [e for e in service.events(dossier.id) if e.from_state != e.to_state]
    assert [e.action for e in changes][-1] == winners[0].split(":")[1]
    assert len(changes) == 3  # open, send-test-plan, the winner
    assert service.verify_events(dossier.id) == []


def test_two_store_connections_cannot_both_win(
    service: CndaService, make_bundle: BundleMaker, data_dir: DataDir, pki: TestPKI
) -> None:
    """Like a CLI and a server on one data dir: SQLite's write lock, not one queue."""
    dossier = walk_to(service, make_bundle, State.PRE_EXAMEN)
    service.deposit_proof(dossier.id, make_bundle())
    others = [Database(data_dir.db_path, durable=False) for _ in range(3)]
    try:
        services = [service] + [
            CndaService(db, data_dir, catalogue=service.catalogue, pki=pki) for db in others
        ]
        barrier = threading.Barrier(len(services) * 2)
        outcomes: list[str] = []
        lock = threading.Lock()

        def run(svc: CndaService, action: str) -> None:
            barrier.wait()
            try:
                svc.transition(dossier.id, action, role=AGENT, reason="race")
                outcome = f"won:{action}"
            except IllegalTransitionError:
                outcome = "refused"
            with lock:
                outcomes.append(outcome)

        threads = [
            threading.Thread(target=run, args=(svc, action))
            for svc in services
            for action in ("validate", "refuse")
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for db in others:
            db.close()
    assert len([o for o in outcomes if o.startswith("won")]) == 1, outcomes
    assert outcomes.count("refused") == len(services) * 2 - 1
    changes = [e for e in service.events(dossier.id) if e.from_state != e.to_state]
    assert len(changes) == 3 and service.verify_events(dossier.id) == []


def test_concurrent_finalise_issues_one_attestation(
    service: CndaService, make_bundle: BundleMaker
) -> None:
    dossier = walk_to(service, make_bundle, State.FINALISATION)
    outcomes = _race([("finalise", {"role": AGENT})] * 4, service, dossier.id)
    assert outcomes.count("won:finalise") == 1
    # Losers prepared an attestation too, then removed it: only the winner's remains.
    issued = list((service.storage.attestations / dossier.id).iterdir())
    assert [p.name for p in issued] == [service.dossier(dossier.id).production_number]


# ---- unknown identifiers ----------------------------------------------------------------
def test_unknown_ids_are_reported(service: CndaService, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="SIMU-NIE-ZZZZZZ"):
        service.editor("SIMU-NIE-ZZZZZZ")
    with pytest.raises(NotFoundError):
        service.create_software("SIMU-NIE-ZZZZZZ", "S", "1")
    editor = service.register_editor("E")
    with pytest.raises(NotFoundError, match="NIL"):
        service.open_request(editor.nie, "SIMU-NIL-ZZZZZZ", "DMP", DMP_PLAIN)
    with pytest.raises(NotFoundError):
        service.create_software(editor.nie, "C", "1", component_of="SIMU-NIL-ZZZZZZ")
    for call in (
        lambda: service.dossier("SIMU-DOS-ZZZZZZ"),
        lambda: service.status("SIMU-DOS-ZZZZZZ"),
        lambda: service.events("SIMU-DOS-ZZZZZZ"),
        lambda: service.transition("SIMU-DOS-ZZZZZZ", "validate", role=AGENT),
        lambda: service.deposit_document("SIMU-DOS-ZZZZZZ", "contract_request", "c", b"x"),
        lambda: service.deposit_proof("SIMU-DOS-ZZZZZZ", tmp_path),
        lambda: service.attestation_dir("SIMU-DOS-ZZZZZZ"),
    ):
        with pytest.raises(NotFoundError, match="SIMU-DOS-ZZZZZZ"):
            call()


# ---- the event chain --------------------------------------------------------------------
def test_event_chain_detects_an_edited_event(
    service: CndaService, make_bundle: BundleMaker
) -> None:
    dossier = walk_to(service, make_bundle, State.EXAMEN_A_PLANIFIER)
    assert service.verify_events(dossier.id) == []

    def tamper(sql: str, params: tuple[object, ...]) -> None:
        service.db.write_sync(lambda conn: conn.execute(sql, params))

    tamper(
        "UPDATE cnda_events SET reason = 'looked fine to me' WHERE request_id = ? AND seq = 3",
        (dossier.id,),
    )
    problems = service.verify_events(dossier.id)
    assert len(problems) == 1 and re.match(r"event #3 \(.+\): content does not match", problems[0])
    assert service.status(dossier.id)["eventChainOk"] is False


def test_event_chain_detects_removed_events_and_state_edits(
    service: CndaService, make_bundle: BundleMaker
) -> None:
    dossier = walk_to(service, make_bundle, State.EXAMEN_A_PLANIFIER)
    last = service.events(dossier.id)[-1].seq
    service.db.write_sync(
        lambda conn: conn.execute(
            "DELETE FROM cnda_events WHERE request_id = ? AND seq = ?", (dossier.id, last)
        )
    )
    assert any("head hash" in p for p in service.verify_events(dossier.id))

    other = walk_to(service, make_bundle, State.PRE_EXAMEN)
    service.db.write_sync(
        lambda conn: conn.execute(
            "UPDATE cnda_requests SET state = 'finalisation' WHERE id = ?", (other.id,)
        )
    )
    assert any("last event leads to" in p for p in service.verify_events(other.id))


# ---- identifiers ------------------------------------------------------------------------
def test_identifiers_are_visibly_fake(service: CndaService, make_bundle: BundleMaker) -> None:
    dossier = walk_to(service, make_bundle, State.ATTESTATION_EMISE)
    issued = [
        dossier.id,
        dossier.nie,
        dossier.nil,
        *dossier.components,
        dossier.provisional_number,
        dossier.production_number,
    ]
    for identifier in issued:
        assert identifier and identifier.startswith("SIMU-"), identifier
        assert SIMULATED_ID.match(identifier)
        assert not REAL_AUTHORIZATION_SHAPE.match(identifier)
    status = service.status(dossier.id)
    assert json.dumps(status)  # plain data
    assert status["phase"] == "Finalisation"
