"""Deposited proofs against the personalised test plan: which cases are covered, how."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from cnda_support import (
    AGENT,
    EDITOR,
    BundleMaker,
    covering_bundle,
    deposit_initial_documents,
    new_dossier,
    plan_ids,
)
from fastapi.testclient import TestClient

from simulators.cli import cli
from simulators.cnda.api import ROLE_HEADER, create_app
from simulators.cnda.attestation import render_attestation
from simulators.cnda.catalogue import CatalogueError, default_directory, load_catalogue
from simulators.cnda.errors import InvalidInputError
from simulators.cnda.pages import status_page
from simulators.cnda.service import CndaService
from simulators.cnda.states import State
from simulators.core.config import DataDir
from simulators.core.pki import TestPKI
from simulators.core.proof import sha256_file
from simulators.core.store.database import Database

APCV_READ = {"usages": ["lecture-identite"]}  # plan: APCV-010, APCV-030


def in_pre_examen(service: CndaService, perimeter: dict[str, list[str]] | None = None) -> str:
    dossier = new_dossier(service, perimeter)
    deposit_initial_documents(service, dossier)
    service.transition(dossier.id, "send-test-plan", role=AGENT)
    return dossier.id


@pytest.fixture
def aliased(db: Database, data_dir: DataDir, pki: TestPKI, tmp_path: Path) -> CndaService:
    """A service whose ApCV catalogue maps APCV-010 to the MSS test ``MSS-01``."""
    directory = tmp_path / "catalogue"
    directory.mkdir()
    text = (default_directory() / "apcv.toml").read_text(encoding="utf-8")
    marker = 'id = "APCV-010"\n'
    assert marker in text
    text = text.replace(marker, marker + 'covered_by = ["MSS-01"]\n', 1)
    (directory / "apcv.toml").write_text(text, encoding="utf-8")
    return CndaService(db, data_dir, catalogue=load_catalogue(directory), pki=pki)


def open_apcv(service: CndaService) -> str:
    editor = service.register_editor("Éditeur ApCV")
    software = service.create_software(editor.nie, "Logiciel de facturation", "7.1")
    dossier = service.open_request(editor.nie, software.nil, "ApCV", APCV_READ)
    deposit_initial_documents(service, dossier)
    service.transition(dossier.id, "send-test-plan", role=AGENT)
    return dossier.id


def test_bundle_names_aliases_declarations_and_precedence(
    aliased: CndaService, make_bundle: BundleMaker, tmp_path: Path
) -> None:
    rid = open_apcv(aliased)
    plan = aliased.dossier(rid).test_plan or {}
    assert [c["id"] for c in plan["cases"]] == ["APCV-010", "APCV-030"]
    assert plan["cases"][0]["coveredBy"] == ["MSS-01"]  # the alias travels with the plan
    coverage = aliased.coverage(rid)
    assert coverage["uncovered"] == ["APCV-010", "APCV-030"] and not coverage["complete"]

    # MSS-01 passed stands for APCV-010; APCV-030 only warned.
    first = aliased.deposit_proof(rid, make_bundle(passed=["MSS-01"], warned=["APCV-030"]))
    assert first.details["cases"] == {"APCV-010": "passed", "APCV-030": "warned"}
    report = aliased.run_agent(rid)
    assert report.done == [] and aliased.dossier(rid).state == State.PRE_EXAMEN
    assert "not covered yet (round 1): APCV-030" in report.waiting_for[0]

    # A declared file does not outrank a verified warning.
    capture = tmp_path / "apcv-030.png"
    capture.write_bytes(b"\x89PNG capture of the refusal screen")
    declared = aliased.deposit_proof(rid, capture, cases=["APCV-030"])
    assert declared.details["cases"] == {"APCV-030": "declared"}
    assert aliased.coverage(rid)["warned"] == ["APCV-030"]

    second = aliased.deposit_proof(rid, make_bundle(passed=["APCV-030"]))
    coverage = aliased.coverage(rid)
    assert coverage["complete"] and coverage["passed"] == ["APCV-010", "APCV-030"]
    by_case = {c["id"]: c for c in coverage["cases"]}
    assert [p["sha256"] for p in by_case["APCV-030"]["proofs"]] == [
        first.sha256,
        declared.sha256,
        second.sha256,
    ]
    assert [p["outcome"] for p in by_case["APCV-030"]["proofs"]] == [
        "warned",
        "declared",
        "passed",
    ]
    # Fully covered, but a file is in the round: the rules leave it to a human.
    report = aliased.run_agent(rid)
    assert report.done == []
    assert report.waiting_for == ["agent: validate or refuse the proofs"]
    deposit = [e for e in aliased.events(rid) if e.action == "deposit-proof"]
    assert [e.data["cases"] for e in deposit] == [
        {"APCV-010": "passed", "APCV-030": "warned"},
        {"APCV-030": "declared"},
        {"APCV-030": "passed"},
    ]


def test_partial_coverage_is_not_auto_validated_until_complete(
    service: CndaService, make_bundle: BundleMaker
) -> None:
    rid = in_pre_examen(service)
    cases = plan_ids(service, rid)
    assert len(cases) >= 3
    service.deposit_proof(rid, make_bundle(passed=cases[:-1]))
    report = service.run_agent(rid)
    assert report.done == [] and service.dossier(rid).state == State.PRE_EXAMEN
    assert service.coverage(rid)["uncovered"] == [cases[-1]]
    service.deposit_proof(rid, make_bundle(passed=[cases[-1]]))
    report = service.run_agent(rid)
    assert [e.action for e in report.done][:1] == ["validate"]
    validated = report.done[0]
    assert validated.data["coverage"]["complete"] is True
    assert validated.data["coverage"]["passed"] == cases
    assert f"{len(cases)}/{len(cases)} plan case(s) covered" in (validated.reason or "")


def test_a_failed_case_wins_and_the_rules_refuse_then_the_round_starts_empty(
    service: CndaService, make_bundle: BundleMaker
) -> None:
    rid = in_pre_examen(service)
    cases = plan_ids(service, rid)
    service.deposit_proof(rid, covering_bundle(service, make_bundle, rid))
    service.deposit_proof(rid, make_bundle("FAILED", passed=[], failed=[cases[0]]))
    coverage = service.coverage(rid)
    assert coverage["failed"] == [cases[0]] and not coverage["complete"]
    report = service.run_agent(rid)
    assert [e.action for e in report.done] == ["refuse"]
    refused = report.done[0]
    assert f"failed plan cases: {cases[0]}" in (refused.reason or "")
    assert refused.data["coverage"]["failed"] == [cases[0]]
    # Round 2: the refused round's proofs no longer count.
    assert service.dossier(rid).round == 2
    assert service.coverage(rid)["uncovered"] == cases
    status = service.status(rid)
    assert {p["round"] for p in status["proofs"]} == {1}
    assert status["nextSteps"] == ["editor: deposit test proofs (round 2)"]
    service.deposit_proof(rid, covering_bundle(service, make_bundle, rid))
    assert service.status(rid)["nextSteps"] == ["editor: resubmit"]


def test_declaring_a_case_outside_the_plan_is_refused_everywhere(
    service: CndaService, make_bundle: BundleMaker, data_dir: DataDir, tmp_path: Path
) -> None:
    rid = in_pre_examen(service)
    capture = tmp_path / "capture.png"
    capture.write_bytes(b"\x89PNG")
    before = (service.dossier(rid), service.repo.events(rid))
    with pytest.raises(InvalidInputError, match=r"not cases of .* test plan: \['9.9-999'\]"):
        service.deposit_proof(rid, capture, cases=["0.2-100", "9.9-999"])
    with pytest.raises(InvalidInputError, match=r"9\.9-999"):
        service.deposit_proof(rid, make_bundle(), cases=["9.9-999"])
    with TestClient(create_app(service=service)) as client:
        response = client.post(
            f"/api/cnda/requests/{rid}/proofs",
            data={"cases": "0.2-100,9.9-999"},
            files={"file": ("capture.png", b"\x89PNG", "image/png")},
            headers={ROLE_HEADER: EDITOR},
        )
        assert response.status_code == 422 and "9.9-999" in response.json()["detail"]
        # Repeated and comma-separated fields both work when the cases are in the plan.
        cases = plan_ids(service, rid)
        response = client.post(
            f"/api/cnda/requests/{rid}/proofs",
            data={"cases": [",".join(cases[:2]), cases[2]]},
            files={"file": ("capture.png", b"\x89PNG", "image/png")},
            headers={ROLE_HEADER: EDITOR},
        )
        assert response.status_code == 201, response.text
        assert response.json()["details"]["cases"] == dict.fromkeys(sorted(cases[:3]), "declared")
    result = CliRunner().invoke(
        cli,
        ["cnda", "--data-dir", str(data_dir.root), "proof", "deposit", rid, str(capture),
         "--case", "9.9-999"],
    )  # fmt: skip
    assert result.exit_code == 2 and "9.9-999" in result.output
    proofs = service.repo.proofs(rid)
    assert len(proofs) == 1 and before[0].state == service.dossier(rid).state
    assert len(service.repo.events(rid)) == len(before[1]) + 1  # the one accepted deposit


def test_status_page_api_and_cli_show_the_coverage(
    service: CndaService, make_bundle: BundleMaker, data_dir: DataDir
) -> None:
    rid = in_pre_examen(service)
    cases = plan_ids(service, rid)
    service.deposit_proof(rid, make_bundle(passed=cases[:1]))
    page = status_page(service.status(rid), service.events(rid), captured_at="now")
    assert f"1/{len(cases)}</strong> cas couverts" in page
    assert "NON COUVERT" in page and ", ".join(cases[1:]) in page

    def coverage_cli() -> tuple[int, str]:
        result = CliRunner().invoke(
            cli, ["cnda", "--data-dir", str(data_dir.root), "coverage", rid, "--json"]
        )
        return result.exit_code, result.output

    code, output = coverage_cli()
    assert code == 1 and json.loads(output)["uncovered"] == cases[1:]
    status = CliRunner().invoke(cli, ["cnda", "--data-dir", str(data_dir.root), "status", rid])
    assert f"plan cases  1/{len(cases)} passed; not yet: {', '.join(cases[1:])}" in status.output

    bundle = make_bundle(passed=cases[1:])
    deposited = CliRunner().invoke(
        cli, ["cnda", "--data-dir", str(data_dir.root), "proof", "deposit", rid, str(bundle)]
    )
    assert deposited.exit_code == 0 and f"{cases[1]} passed" in deposited.output
    code, output = coverage_cli()
    assert code == 0 and json.loads(output)["complete"] is True
    page = status_page(service.status(rid), service.events(rid), captured_at="now")
    assert "plan entièrement couvert" in page and "NON COUVERT" not in page
    assert sha256_file(bundle / "report.json") in page
    with TestClient(create_app(service=service)) as client:
        assert client.get(f"/api/cnda/requests/{rid}/coverage").json()["complete"] is True
        assert client.get("/api/cnda/requests/SIMU-DOS-ZZZZZZ/coverage").status_code == 404
        assert "NON COUVERT" not in client.get(f"/api/cnda/requests/{rid}/page").text


def test_attestations_without_coverage_still_render_as_signed() -> None:
    old = {"productionNumber": "SIMU-PROD-AAAAAA", "proofs": []}
    assert "Couverture du plan" not in render_attestation(old)
    new = {**old, "coverage": {"cases": [{"id": "0.2-100", "status": "passed", "proofs": []}]}}
    assert "Couverture du plan" in render_attestation(new)


def test_covered_by_must_list_test_names(tmp_path: Path) -> None:
    text = (default_directory() / "apcv.toml").read_text(encoding="utf-8")
    text = text.replace('id = "APCV-010"\n', 'id = "APCV-010"\ncovered_by = "MSS-01"\n', 1)
    (tmp_path / "apcv.toml").write_text(text, encoding="utf-8")
    with pytest.raises(CatalogueError, match="covered_by must list test names"):
        load_catalogue(tmp_path)


def test_an_uncovered_plan_can_still_be_validated_by_a_human(
    service: CndaService, make_bundle: BundleMaker
) -> None:
    rid = in_pre_examen(service)
    service.deposit_proof(rid, make_bundle())  # names no plan case
    dossier = service.transition(rid, "validate", role=AGENT, actor="agent:human")
    assert dossier.state == State.EXAMEN_A_PLANIFIER
    event = service.events(rid)[-1]
    assert event.data["coverage"]["uncovered"] == plan_ids(service, rid)
