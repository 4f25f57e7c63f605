"""``segur-sim cnda``: a dossier walked from the command line, and clean errors."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result
from cnda_support import BundleMaker

from simulators.cli import cli
from simulators.core.config import DataDir


def run(data_dir: DataDir, *args: str, code: int = 0) -> Result:
    result = CliRunner().invoke(cli, ["cnda", "--data-dir", str(data_dir.root), *args])
    assert result.exit_code == code, (result.output, result.exception)
    return result


def test_cli_walks_a_dossier(data_dir: DataDir, make_bundle: BundleMaker, tmp_path: Path) -> None:
    nie = run(data_dir, "editor", "register", "--name", "CLI SAS").output.strip()
    nil = run(
        data_dir, "software", "create", "--nie", nie, "--name", "DPI", "--version", "3"
    ).output.strip()
    run(data_dir, "software", "create", "--nie", nie, "--name", "M", "--version", "1",
        "--component-of", nil)  # fmt: skip
    opened = run(
        data_dir, "request", "open", "--nie", nie, "--nil", nil, "--service", "DMP",
        "-p", "profiles=alimentation,consultation", "-p", "auth_modes=indirecte-certificat-es",
        "--json",
    )  # fmt: skip
    rid = json.loads(opened.output)["id"]
    doc = tmp_path / "doc.pdf"
    doc.write_bytes(b"%PDF simulated")
    for doc_type in ("contract_request", "signed_conditions"):
        run(data_dir, "document", "deposit", rid, str(doc), "--type", doc_type)
    run(data_dir, "agent", "send-test-plan", rid)
    run(data_dir, "proof", "deposit", rid, str(make_bundle("FAILED")))
    run(data_dir, "agent", "refuse", rid, "--reason", "IMAP test fails")
    run(data_dir, "proof", "deposit", rid, str(make_bundle()))
    run(data_dir, "request", "resubmit", rid)
    run(data_dir, "agent", "validate", rid)
    run(data_dir, "agent", "schedule-exam", rid, "--date", "2025-06-02", "--mode", "remote")
    run(data_dir, "agent", "fail-exam", rid, "--reason", "no", "--date", "2025-06-09")
    run(data_dir, "agent", "pass-exam", rid)
    run(data_dir, "agent", "finalise", rid)
    run(data_dir, "document", "deposit", rid, str(doc), "--type", "satisfaction_questionnaire")
    done = run(data_dir, "request", "complete", rid, "--json")
    assert json.loads(done.output)["state"] == "conforme"

    page = tmp_path / "status.html"
    status = run(data_dir, "status", rid, "--html", str(page))
    assert "Conforme" in status.output and "SIMULATION" in status.output
    assert "NOT an official ANS / CNDA proof" in page.read_text()
    assert "chain: ok" in run(data_dir, "events", rid, "--verify").output
    shown = json.loads(run(data_dir, "attestation", "show", rid, "--json").output)
    verified = run(data_dir, "attestation", "verify", shown["directory"])
    assert "VALID" in verified.output
    assert shown["attestation"]["exam"]["attempts"] == 2


def test_cli_agent_run_and_errors(data_dir: DataDir, make_bundle: BundleMaker) -> None:
    nie = run(data_dir, "editor", "register", "--name", "E").output.strip()
    nil = run(
        data_dir, "software", "create", "--nie", nie, "--name", "S", "--version", "1"
    ).output.strip()
    rid = run(
        data_dir, "request", "open", "--nie", nie, "--nil", nil, "--service", "INSi",
        "-p", "operations=verification", "-p", "auth_modes=cps",
    ).output.strip()  # fmt: skip

    def refused(*args: str, fragment: str) -> None:
        result = run(data_dir, *args, code=2)
        assert fragment in result.output
        assert "Traceback" not in result.output

    refused("agent", "finalise", rid, fragment="cannot finalise while the dossier is initialis")
    refused("agent", "send-test-plan", rid, fragment="missing")
    refused("status", "SIMU-DOS-ZZZZZZ", fragment="unknown homologation request")
    refused("editor", "show", "SIMU-NIE-ZZZZZZ", fragment="unknown editor")
    refused("request", "open", "--nie", nie, "--nil", nil, "--service", "NOPE",
            fragment="unknown service")  # fmt: skip
    refused("request", "open", "--nie", nie, "--nil", nil, "--service", "DMP", "-p", "oops",
            fragment="axis=value")  # fmt: skip
    refused("agent", "refuse", rid, fragment="--reason")
    refused("proof", "deposit", rid, str(make_bundle()), fragment="cannot deposit proofs")

    tampered = make_bundle()
    (tampered / "VERIFY.md").write_text("trust me")
    run(data_dir, "document", "deposit", rid, str(tampered / "report.html"),
        "--type", "contract_request")  # fmt: skip
    run(data_dir, "document", "deposit", rid, str(tampered / "report.html"),
        "--type", "signed_conditions")  # fmt: skip
    ran = json.loads(run(data_dir, "agent", "run", rid, "--json").output)
    assert [e["action"] for e in ran["done"]] == ["send-test-plan"]
    refused("proof", "deposit", rid, str(tampered), fragment="VERIFY.md: modified")
    assert "editor: deposit test proofs" in run(data_dir, "agent", "run", rid).output
