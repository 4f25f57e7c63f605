"""``segur-sim interop`` commands: exit codes, formats, XDM build."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import zipfile
from pathlib import Path

from click.testing import CliRunner
from interop_helpers import FIXTURES, mutate
from lxml import etree

from simulators.core.proof import verify_bundle
from simulators.core.proof_cli import proof
from simulators.core.store.database import Database
from simulators.interop.cli import interop
from simulators.interop.report import GVR_NS
from simulators.interop.store import SqliteValidationRepository

GOOD = FIXTURES / "cda" / "segur-sim_VAC-NOTE_2023.01.xml"


def _bad(tmp_path: Path) -> Path:
    bad = tmp_path / "bad.xml"
    bad.write_bytes(
        mutate(GOOD.read_bytes(), b'confidentialityCode code="N"', b'confidentialityCode code="X"')
    )
    return bad


def test_validate_exit_codes(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(interop, ["validate", "--no-record", str(GOOD)])
    assert ok.exit_code == 0 and "PASSED" in ok.output
    mixed = runner.invoke(
        interop, ["validate", "--data-dir", str(tmp_path / "data"), str(GOOD), str(_bad(tmp_path))]
    )
    assert mixed.exit_code == 1
    assert "[2/2] FAILED" in mixed.output  # progress display (stderr is mixed in)
    usage = runner.invoke(interop, ["validate", "--rule-source", "official", str(GOOD)])
    assert usage.exit_code == 2
    missing = runner.invoke(interop, ["validate", str(tmp_path / "nope.xml")])
    assert missing.exit_code == 2


def test_validate_formats_and_out_file(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "r.xml"
    result = runner.invoke(
        interop,
        ["validate", "--no-record", "--format", "gvr", "--out", str(out), str(_bad(tmp_path))],
    )
    assert result.exit_code == 1
    root = etree.parse(str(out)).getroot()
    assert root.tag == f"{{{GVR_NS}}}validationReport" and root.get("result") == "FAILED"
    js = runner.invoke(
        interop, ["validate", "--no-record", "--format", "json", "--kind", "cda", str(GOOD)]
    )
    assert json.loads(js.stdout)["result"] == "PASSED"


def test_xdm_build_then_validate(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "IHE_XDM.ZIP"
    built = runner.invoke(interop, ["xdm", "build", str(GOOD), "--out", str(out)])
    assert built.exit_code == 0, built.output
    assert "IHE_XDM/SUBSET01/METADATA.XML" in zipfile.ZipFile(out).namelist()
    assert runner.invoke(interop, ["validate", "--no-record", str(out)]).exit_code == 0
    not_cda = tmp_path / "x.xml"
    not_cda.write_bytes(b"<a/>")
    assert runner.invoke(interop, ["xdm", "build", str(not_cda)]).exit_code == 2


def test_validations_are_recorded_and_listed_by_history(tmp_path: Path) -> None:
    runner = CliRunner()
    data = tmp_path / "data"
    empty = runner.invoke(interop, ["history", "--data-dir", str(data)])
    assert empty.exit_code == 0 and "no validation recorded" in empty.output
    assert not data.exists()  # listing does not create a data directory
    bad = _bad(tmp_path)
    assert runner.invoke(interop, ["validate", "--data-dir", str(data), str(GOOD)]).exit_code == 0
    assert runner.invoke(interop, ["validate", "--data-dir", str(data), str(bad)]).exit_code == 1
    skipped = runner.invoke(
        interop, ["validate", "--no-record", "--data-dir", str(data), str(GOOD)]
    )
    assert skipped.exit_code == 0
    listing = runner.invoke(interop, ["history", "--data-dir", str(data), "--json"])
    assert listing.exit_code == 0, listing.output
    payload = json.loads(listing.stdout)
    assert payload["total"] == 2
    newest, oldest = payload["items"]
    assert (newest["objectName"], newest["result"]) == ("bad.xml", "FAILED")
    assert (oldest["objectName"], oldest["result"]) == (GOOD.name, "PASSED")
    assert newest["origin"] == "cli" and newest["counters"]["errors"] >= 1
    assert newest["sha256"] == hashlib.sha256(bad.read_bytes()).hexdigest()
    assert newest["size"] == bad.stat().st_size
    text = runner.invoke(interop, ["history", "--data-dir", str(data), "--limit", "1"])
    assert "1 of 2 validation(s)" in text.output and "bad.xml" in text.output
    # the same rows the API lists; the whole report is kept
    with Database(data / "segur-sim.sqlite3") as db:
        stored = SqliteValidationRepository(db).get(newest["oid"])
    assert stored is not None and "FR-HDR-CONF-01" in stored.report.failed_ids()


def _openssl_verifies(bundle: Path, ca: Path) -> bool:
    proc = subprocess.run(
        [
            "openssl", "cms", "-verify", "-binary", "-inform", "DER",
            "-in", str(bundle / "report.json.p7s"), "-content", str(bundle / "report.json"),
            "-CAfile", str(ca), "-purpose", "any", "-out", "/dev/null",
        ],
        capture_output=True,
        check=False,
    )  # fmt: skip
    return proc.returncode == 0


def test_batch_goes_into_a_signed_chained_proof_bundle(tmp_path: Path) -> None:
    runner = CliRunner()
    data, proofs = tmp_path / "data", tmp_path / "proofs"
    bad = _bad(tmp_path)
    args = ["validate", "--quiet", "--data-dir", str(data), "--proof-dir", str(proofs)]
    first = runner.invoke(interop, [*args, str(GOOD), str(bad)])
    assert first.exit_code == 1, first.output
    (bundle,) = (proofs / "interop").iterdir()
    ca = data / "pki" / "root.pem"
    check = verify_bundle(bundle, ca_file=ca)
    assert check.ok, check.problems
    predicate = check.predicate
    assert predicate["kind"] == "interop" and predicate["result"] == "FAILED"
    assert predicate["previousProofSha256"] is None  # the first of its chain
    assert predicate["passedTests"] == [str(GOOD)] and predicate["failedTests"] == [str(bad)]
    by_file = {v["file"]: v for v in predicate["validations"]}
    assert by_file[str(GOOD)]["result"] == "PASSED"
    assert by_file[str(GOOD)]["failedConstraints"] == []
    assert by_file[str(bad)]["result"] == "FAILED"
    assert "FR-HDR-CONF-01" in by_file[str(bad)]["failedConstraints"]
    # each report is an artefact, covered by the signature
    subjects = {s["name"] for s in check.statement["subject"]}  # type: ignore[index]
    for entry in predicate["validations"]:
        assert len(entry["artefacts"]) == 4 and set(entry["artefacts"]) <= subjects
        gvr = bundle / next(a for a in entry["artefacts"] if a.endswith(".gvr.xml"))
        assert etree.parse(str(gvr)).getroot().get("result") == entry["result"]
    if shutil.which("openssl"):
        assert _openssl_verifies(bundle, ca)
    verified = runner.invoke(proof, ["verify", str(bundle), "--data-dir", str(data)])
    assert verified.exit_code == 0 and "VALID" in verified.output

    # the next batch is chained to this one
    second = runner.invoke(interop, [*args, str(GOOD)])
    assert second.exit_code == 0, second.output
    (newer,) = [b for b in (proofs / "interop").iterdir() if b != bundle]
    check2 = verify_bundle(newer, ca_file=ca)
    assert check2.ok and check2.predicate["result"] == "PASSED"
    expected = hashlib.sha256((bundle / "report.json").read_bytes()).hexdigest()
    assert check2.predicate["previousProofSha256"] == expected

    # an edited report inside the bundle is caught, by us and by the proof command
    gvr = bundle / next(a for a in by_file[str(bad)]["artefacts"] if a.endswith(".gvr.xml"))
    gvr.write_bytes(gvr.read_bytes().replace(b'result="FAILED"', b'result="PASSED"'))
    assert not verify_bundle(bundle, ca_file=ca).ok
    assert runner.invoke(proof, ["verify", str(bundle), "--data-dir", str(data)]).exit_code == 1


def test_junit_report_has_one_case_per_file_with_failed_ids(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "junit.xml"
    bad = _bad(tmp_path)
    result = runner.invoke(
        interop, ["validate", "--no-record", "--junit", str(out), str(GOOD), str(bad)]
    )
    assert result.exit_code == 1
    root = etree.parse(str(out)).getroot()
    suite = root.find("testsuite")
    assert suite is not None and suite.get("tests") == "2" and suite.get("failures") == "1"
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert set(cases) == {str(GOOD), str(bad)}
    assert cases[str(GOOD)].find("failure") is None
    assert cases[str(bad)].get("classname") == "segur-sim.interop.cda"
    failure = cases[str(bad)].find("failure")
    assert failure is not None
    assert "FR-HDR-CONF-01" in (failure.get("message") or "")
    assert "FR-HDR-CONF-01" in (failure.text or "") and "confidentialityCode" in (
        failure.text or ""
    )
    assert float(cases[str(bad)].get("time") or -1) >= 0
