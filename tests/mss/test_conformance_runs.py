"""End-to-end conformance runs: the runner, the reference client (a real subprocess over
real TLS sockets), its faulty variants, the proof bundles and the coverage table."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simulators.controller import SimulatorController
from simulators.core.proof import openssl_verify, verify_bundle
from simulators.core.store.mail import MailboxType
from simulators.core.verdict import Status
from simulators.mss.conformance import report
from simulators.mss.conformance.api import reference_client_command
from simulators.mss.conformance.catalogue import load_catalogue
from simulators.mss.conformance.coverage import coverage_rows
from simulators.mss.conformance.driver import PersistentDriver
from simulators.mss.conformance.runner import RunError, Runner, RunRequest
from simulators.mss.conformance.runs import RunRecord

DOMAIN = "mssante.localhost"
PER = f"dr.reference@{DOMAIN}"
APP = f"labo.reference@{DOMAIN}"
NIL = "DEV935997"
STEP_TIMEOUT = 25.0


@pytest.fixture(scope="module")
def conf_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorController]:
    data = tmp_path_factory.mktemp("conformance") / "data"
    # Short PSC tokens so that the refresh-token tests see a refresh within seconds.
    with SimulatorController(data, auth_failure_delay=0.05, access_token_lifetime=4) as sim:
        assert sim.services is not None
        sim.services.store.create_mailbox(
            PER, MailboxType.PER, "Dr_Alice_MARTIN_CABINET SIMU", "CABINET SIMU"
        )
        sim.services.store.create_mailbox(APP, MailboxType.APP, "LABO SIMU", "LABO SIMU")
        yield sim


def run_suite(
    sim: SimulatorController,
    suite: str,
    mailbox: str,
    tests: tuple[str, ...] = (),
    *,
    fault: str | None = None,
    client_cmd: str | None = None,
    step_timeout: float = STEP_TIMEOUT,
    driver: str = "per-step",
    runners: list[Runner] | None = None,
) -> RunRecord:
    assert sim.simulator is not None
    runner = Runner(sim.simulator)
    if runners is not None:
        runners.append(runner)
    if client_cmd is None:
        client_cmd = reference_client_command(fault)
        if driver == "persistent":
            client_cmd += " --serve"
    request = RunRequest(
        suite=suite,
        mailbox=mailbox,
        nil=NIL,
        tests=tests,
        client_cmd=client_cmd,
        step_timeout=step_timeout,
        settle=0.5,
        driver=driver,
    )
    run = runner.plan(request)
    steps = sum(len(t.steps) for t in run.tests)
    sim.call(runner.execute(run, request), timeout=steps * (step_timeout + 10) + 30)
    return run


def failures(run: RunRecord) -> dict[str, str]:
    return {
        t.test_id: (t.verdict.message if t.verdict else "")
        for t in run.tests
        if t.status is not Status.PASS
    }


# ---- the reference client passes both referencing cases -----------------------------------
@pytest.fixture(scope="module")
def per_org_run(conf_sim: SimulatorController) -> RunRecord:
    return run_suite(conf_sim, "per-org", PER)


@pytest.fixture(scope="module")
def app_run(conf_sim: SimulatorController) -> RunRecord:
    return run_suite(conf_sim, "app", APP)


def test_reference_client_passes_per_org(per_org_run: RunRecord) -> None:
    assert failures(per_org_run) == {}
    assert [t.test_id for t in per_org_run.tests] == [f"MSS-{i:02d}" for i in range(1, 19)]
    assert per_org_run.case_status is Status.PASS and per_org_run.passed
    for test in per_org_run.tests:
        assert test.verdict is not None and test.verdict.evidence, test.test_id
        assert test.verdict.requirements == test.requirements


def test_reference_client_passes_app(app_run: RunRecord) -> None:
    assert failures(app_run) == {}
    assert len(app_run.tests) == 16
    assert app_run.case_status is Status.PASS


def test_reference_client_passes_the_extra_checks(conf_sim: SimulatorController) -> None:
    run = run_suite(conf_sim, "extra", PER)
    assert failures(run) == {}
    assert {t.test_id for t in run.tests} == {"MSS-X1", "MSS-X2", "MSS-X3", "MSS-X4"}


def test_verdicts_point_at_recorded_evidence(
    conf_sim: SimulatorController, per_org_run: RunRecord
) -> None:
    assert conf_sim.services is not None
    recorder = conf_sim.services.recorder
    starttls = per_org_run.tests[0]
    assert starttls.verdict is not None
    sessions = [e.ref for e in starttls.verdict.evidence if e.kind == "session"]
    assert sessions
    transcript = recorder.transcript(sessions[0])
    assert "STARTTLS" in transcript and "AUTH XOAUTH2" in transcript
    assert "Bearer" not in transcript  # tokens are redacted in the recorder


# ---- proof bundles ---------------------------------------------------------------------------
def test_proof_bundle_verifies_and_detects_edits(
    conf_sim: SimulatorController, app_run: RunRecord, tmp_path: Path
) -> None:
    assert conf_sim.services is not None
    bundle = report.write_proof(app_run, conf_sim.services, tmp_path / "proofs")
    result = verify_bundle(bundle)
    assert result.ok, result.problems
    predicate = json.loads((bundle / "report.json").read_bytes())["predicate"]
    assert predicate["simulation"] is True and "NOT an official" in predicate["disclaimer"]
    assert predicate["run"]["mailbox"] == APP and predicate["run"]["nil"] == NIL
    assert len(predicate["passedTests"]) == 16 and predicate["result"] == "PASSED"
    assert {v["test"] for v in predicate["verdicts"]} >= {"MSS-A1", "MSS-A3"}
    transcripts = list((bundle / "artefacts" / "transcripts").iterdir())
    messages = list((bundle / "artefacts" / "messages").iterdir())
    assert transcripts and messages
    if shutil.which("openssl"):
        assert (
            openssl_verify(
                bundle / "report.json", bundle / "report.json.p7s", bundle / "ca" / "root.pem"
            )
            is None
        )

    # One byte changed in an artefact: our verifier names the file; the signature holds.
    victim = messages[0]
    data = bytearray(victim.read_bytes())
    data[10] ^= 0x01
    victim.write_bytes(bytes(data))
    broken = verify_bundle(bundle)
    assert not broken.ok
    assert any(victim.name in p for p in broken.problems), broken.problems

    # One byte changed in report.json: the CMS signature fails, for openssl too.
    report_json = bundle / "report.json"
    raw = bytearray(report_json.read_bytes())
    raw[-3] ^= 0x01
    report_json.write_bytes(bytes(raw))
    assert not verify_bundle(bundle).ok
    if shutil.which("openssl"):
        assert (
            openssl_verify(report_json, bundle / "report.json.p7s", bundle / "ca" / "root.pem")
            is not None
        )


def test_proof_bundles_are_hash_chained(
    conf_sim: SimulatorController, per_org_run: RunRecord, app_run: RunRecord, tmp_path: Path
) -> None:
    assert conf_sim.services is not None
    first = report.write_proof(per_org_run, conf_sim.services, tmp_path)
    second = report.write_proof(app_run, conf_sim.services, tmp_path)
    import hashlib

    previous = json.loads((second / "report.json").read_bytes())["predicate"]
    assert (
        previous["previousProofSha256"]
        == hashlib.sha256((first / "report.json").read_bytes()).hexdigest()
    )


# ---- coverage ---------------------------------------------------------------------------------
def test_coverage_lists_every_requirement_with_latest_verdicts(
    conf_sim: SimulatorController, per_org_run: RunRecord, app_run: RunRecord
) -> None:
    assert conf_sim.simulator is not None
    latest = Runner(conf_sim.simulator).repo.latest_test_results()
    rows = {r["id"]: r for r in coverage_rows(load_catalogue(), latest)}
    assert rows["ECO.1.0.1"]["latest"] == "pass"
    assert "MSS-01" in rows["ECO.1.0.1"]["tests"]
    assert rows["ECO.1.2.6"]["tests"] == ["MSS-18"]
    assert rows["ECO.1.2.5"]["latest"] == "not-testable"
    assert "not testable here" in rows["ECO.1.2.5"]["note"]
    assert rows["ECO.1.3.1"]["latest"] == "pass"


# ---- bad input -----------------------------------------------------------------------------------
def test_unknown_test_mailbox_and_wrong_suite_are_refused(conf_sim: SimulatorController) -> None:
    assert conf_sim.simulator is not None
    runner = Runner(conf_sim.simulator)
    with pytest.raises(RunError, match="unknown test 'MSS-99'"):
        runner.plan(RunRequest("per-org", PER, NIL, tests=("MSS-99",)))
    with pytest.raises(RunError, match="unknown mailbox"):
        runner.plan(RunRequest("per-org", f"nobody@{DOMAIN}", NIL))
    with pytest.raises(RunError, match="MSS-A1 not in suite per-org"):
        runner.plan(RunRequest("per-org", PER, NIL, tests=("MSS-A1",)))
    with pytest.raises(RunError, match="is a APP mailbox; suite per-org"):
        runner.plan(RunRequest("per-org", APP, NIL))
    with pytest.raises(RunError, match="unknown suite"):
        runner.plan(RunRequest("gen", PER, NIL))
    with pytest.raises(RunError, match="unknown driver mode 'daemon'"):
        runner.plan(RunRequest("per-org", PER, NIL, client_cmd="true", driver="daemon"))
    with pytest.raises(RunError, match="persistent driver mode needs a client command"):
        runner.plan(RunRequest("per-org", PER, NIL, driver="persistent"))


def test_a_hanging_client_command_is_stopped_at_the_timeout(
    conf_sim: SimulatorController,
) -> None:
    run = run_suite(conf_sim, "per-org", PER, ("MSS-08",), client_cmd="sleep 600", step_timeout=1)
    step = run.tests[0].steps[0]
    assert run.tests[0].status is Status.FAIL
    assert step.client["stoppedByRunner"] is True
    assert step.client["seconds"] < 15
    assert "(waited 1 s)" in (step.verdict.message if step.verdict else "")


# ---- the persistent driver mode -----------------------------------------------------------------
PERSISTENT_TESTS = ("MSS-03", "MSS-05", "MSS-09", "MSS-13", "MSS-16", "MSS-17", "MSS-18")


def test_persistent_driver_runs_the_reference_client_once_per_run(
    conf_sim: SimulatorController,
) -> None:
    # Staged TLS profiles, two-step tests, a refused token, runner actions mid-step.
    runners: list[Runner] = []
    run = run_suite(
        conf_sim, "per-org", PER, PERSISTENT_TESTS, driver="persistent", runners=runners
    )
    assert failures(run) == {}
    steps = [s for t in run.tests for s in t.steps]
    assert len(steps) == 9
    driver = runners[0]._driver
    assert driver is not None and driver.starts == 1 and driver.process is None  # closed
    assert all(s.client["persistent"] is True for s in steps)
    assert {s.client["exitCode"] for s in steps} >= {0, 2, 3}  # done, TLS refused, gave up
    # each step's output is its own: the log names that step's action only
    for test in run.tests:
        for s in test.steps:
            assert f"{s.action} for {PER}" in s.client["output"], (test.test_id, s.step_id)
    keep = [s for t in run.tests for s in t.steps if s.action == "keep-session-open"]
    assert {s.client["stoppedByRunner"] for s in keep} == {True, False}  # 17 stopped, 18 ended


def test_persistent_driver_faults_fail_their_tests(conf_sim: SimulatorController) -> None:
    run = run_suite(
        conf_sim,
        "per-org",
        PER,
        ("MSS-06", "MSS-17"),
        fault="no-reconnect",
        driver="persistent",
        step_timeout=12,
    )
    assert failures(run).keys() == {"MSS-17"}
    assert EXPECTED_FAILURES["no-reconnect"] in failures(run)["MSS-17"]


PROTOCOL_SCRIPT = r"""
n=0
while IFS= read -r line; do
  case "$line" in
    *'"type": "step"'*)
      n=$((n+1))
      echo "step $n seen"
      if [ "$n" = 2 ]; then exit 9; fi ;;
    *'"type": "stop"'*)
      echo "@@SEGUR-SIM-STEP-DONE@@ 7" ;;
  esac
done
"""


def test_persistent_driver_protocol_stop_and_restart(
    conf_sim: SimulatorController, tmp_path: Path
) -> None:
    # A shell driver that never does its steps: it answers the stop (at the timeout) with
    # exit code 7, and dies at its second step; the third step gets a new process.
    script = tmp_path / "driver.sh"
    script.write_text(PROTOCOL_SCRIPT)
    run = run_suite(
        conf_sim,
        "per-org",
        PER,
        ("MSS-08", "MSS-11", "MSS-14"),
        client_cmd=f"sh {script}",
        step_timeout=1,
        driver="persistent",
    )
    first, second, third = (t.steps[0] for t in run.tests)
    assert first.client["exitCode"] == 7 and first.client["stoppedByRunner"] is True
    assert first.client["output"] == "step 1 seen\n"
    assert "(waited 1 s)" in (first.verdict.message if first.verdict else "")
    assert second.client["exitCode"] == 9 and second.client["stoppedByRunner"] is False
    assert second.client["output"] == "step 2 seen\n"
    assert third.client["output"] == "step 1 seen\n"  # a fresh process
    assert all(t.status is Status.FAIL for t in run.tests)


def test_persistent_driver_that_ignores_stop_is_killed_and_restarted(tmp_path: Path) -> None:
    async def scenario() -> tuple[dict[str, Any], dict[str, Any], int]:
        driver = PersistentDriver("while IFS= read -r line; do echo got; done", {})
        driver.stop_grace = 0.2
        first = await driver.start_step({"SEGUR_SIM_STEP_ID": "1"})
        await first.stop()  # no done line: killed with its process group
        second = await driver.start_step({"SEGUR_SIM_STEP_ID": "2"})
        await second.stop()
        await driver.close()
        return first.summary(), second.summary(), driver.starts

    first, second, starts = asyncio.run(scenario())
    assert first["exitCode"] == -signal.SIGKILL and first["stoppedByRunner"] is True
    assert second["exitCode"] == -signal.SIGKILL
    assert starts == 2


# ---- the command line ---------------------------------------------------------------------------
def test_cli_run_writes_json_junit_and_proof(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cli = [sys.executable, "-m", "simulators"]
    subprocess.run(
        [*cli, "bal", "create", "--type", "PER", PER, "--data-dir", str(data)],
        check=True,
        capture_output=True,
    )
    out = subprocess.run(
        [
            *cli,
            "mss",
            "run",
            "--suite",
            "per-org",
            "--case",
            "MSS-08",
            "--case",
            "MSS-14",
            "--bal",
            PER,
            "--nil",
            NIL,
            "--client-cmd",
            reference_client_command(),
            "--json",
            str(tmp_path / "run.json"),
            "--junit",
            str(tmp_path / "junit.xml"),
            "--data-dir",
            str(data),
            "--port-base",
            "0",
            "--step-timeout",
            "20",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    document = json.loads((tmp_path / "run.json").read_text())
    assert document["simulation"] is True and document["status"] == "pass"
    assert [t["id"] for t in document["tests"]] == ["MSS-08", "MSS-14"]
    junit = (tmp_path / "junit.xml").read_text()
    assert 'name="MSS-08 X-MSS-NIL"' in junit and "<failure" not in junit
    bundle = Path(document["proofDir"])
    assert verify_bundle(bundle).ok

    failing = subprocess.run(
        [
            *cli,
            "mss",
            "run",
            "--suite",
            "per-org",
            "--case",
            "MSS-08",
            "--bal",
            PER,
            "--nil",
            NIL,
            "--client-cmd",
            reference_client_command("no-nil"),
            "--data-dir",
            str(data),
            "--port-base",
            "0",
            "--step-timeout",
            "20",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert failing.returncode == 1
    assert "FAIL   MSS-08" in failing.stdout

    unknown = subprocess.run(
        [
            *cli,
            "mss",
            "run",
            "--suite",
            "per-org",
            "--case",
            "MSS-77",
            "--bal",
            PER,
            "--nil",
            NIL,
            "--data-dir",
            str(data),
            "--port-base",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unknown.returncode == 2
    assert "unknown test 'MSS-77'" in unknown.stderr


# ---- every check can fail: one faulty reference-client variant per rule ------------------------
EXPECTED_FAILURES = {
    "smtp-implicit-tls-only": "no authenticated SMTP session used STARTTLS",
    "smtp-auth-before-starttls": "sent credentials or mail in clear text",
    "imap-auth-before-starttls": "sent credentials or mail in clear text",
    "tls-1.1-max": "the client offered less than TLS 1.2",
    "accept-tls-1.0": "accepted a server offering only TLS 1.0/1.1",
    "offer-cbc-sha": "offered suites outside the allowed six",
    "accept-weak-dh": "accepted a server offering only a 1024-bit DHE group",
    "accept-expired-cert": "accepted an expired server certificate",
    "skip-crl-check": "accepted a revoked server certificate",
    "trust-foreign-ca": "accepted a server certificate outside the IGC Santé",
    "no-nil": "has no X-MSS-NIL header",
    "wrong-nil": "has X-MSS-NIL 'DEV000000' instead of 'DEV935997'",
    "no-codecda": "but no X-MSS-CODECDA header",
    "codecda-on-plain-mail": "carries no CDA but has X-MSS-CODECDA",
    "wrong-codecda": "its CDA codes are",
    "wrong-ins": "has X-MSS-INS 'N', expected 'O'",
    "ins-on-plain-mail": "carries no CDA but has X-MSS-INS",
    "no-message-id": "has no Message-ID",
    "latin1-body": "declares charset=iso-8859-1, not UTF-8",
    "html-only": "the body is text/html only",
    "broken-xdm": "fails the XDM validation",
    "no-pdf-twin": "no PDF/A-1 twin",
    "bad-subject": "does not start with XDM/1.0/DDM+",
    "patientid-mismatch": "fails the XDM validation",
    "skip-autoconfig": "did not fetch the autoconfiguration XML",
    "smtp-auth-plain-token": "used AUTH PLAIN",
    "imap-login-token": "used LOGIN command",
    "retry-storm": "retry storm",
    "no-reconnect": "did not reconnect after the server closed its session",
    "ignore-revocation": "stayed open after the refresh token was revoked",
    "app-no-client-cert": "presented no client certificate",
    "imap-login-instead-of-plain": "used LOGIN command",
    "personal-cert": "OU=PERSONNE AUTH",
    "expired-client-cert": "was refused",
    "no-reply-to": "has no Reply-To",
    "no-footer": "has no footer saying the mail was generated automatically",
    "no-return-receipt": "no Return-Receipt-To",
    "no-mdn": "none was seen",
    "no-in-reply-to": "no mail is threaded as a reply",
    "patient-no-mes": "without X-MSS-MES: FIN",
}


def test_every_fault_has_an_expected_failure() -> None:
    from simulators.mss.refclient.faults import FAULTS

    assert set(FAULTS) == set(EXPECTED_FAILURES)
    covered = {f.test_id for f in FAULTS.values()}
    assert covered == set(load_catalogue().tests), "every unit test has a faulty variant"


@pytest.mark.parametrize("fault", sorted(EXPECTED_FAILURES))
def test_faulty_variant_fails_its_test(conf_sim: SimulatorController, fault: str) -> None:
    from simulators.mss.refclient.faults import FAULTS

    variant = FAULTS[fault]
    app = "PER" not in variant.bal_types
    suite = "extra" if variant.test_id.startswith("MSS-X") else "app" if app else "per-org"
    run = run_suite(
        conf_sim, suite, APP if app else PER, (variant.test_id,), fault=fault, step_timeout=12
    )
    test = run.tests[0]
    assert test.status is Status.FAIL, (fault, test.verdict)
    assert test.verdict is not None
    assert EXPECTED_FAILURES[fault] in test.verdict.message, test.verdict.message
    assert test.verdict.expected and test.verdict.requirements == test.requirements
    assert not run.passed
