"""Signed proof bundles: layout, signature (ours and openssl), tampering, hash chain."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509

from simulators import DISCLAIMER
from simulators.core import proof
from simulators.core.pki import TestPKI
from simulators.core.proof_cli import proof as proof_group

ARTEFACTS = {
    "smtp/transcript.txt": b"220 mssante.localhost ESMTP\r\nEHLO client\r\n",
    "message.eml": b"From: a@mssante.localhost\r\nSubject: test\r\n\r\nbody\r\n",
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return TestPKI.load_or_create(tmp_path_factory.mktemp("pki"), "mssante.localhost")


@pytest.fixture(scope="module")
def pristine(pki: TestPKI, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "run-1"
    return proof.write_bundle(
        out,
        kind="mss",
        predicate={
            "passedTests": ["MSS-SMTP-01"],
            "failedTests": ["MSS-IMAP-02"],
            "suite": "MOTCO2",
            "mailbox": "app@mssante.localhost",
            "tests": [{"id": "MSS-IMAP-02", "verdict": "FAILED", "requirements": ["EX-1"]}],
        },
        artefacts=ARTEFACTS,
        html="<p>Caller content &amp; verdicts</p>",
        pki=pki,
        run_id="run-1",
    )


@pytest.fixture
def bundle(pristine: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(pristine, copy)
    return copy


def openssl_ok(bundle: Path, ca: Path) -> bool:
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


def flip_byte(path: Path, position: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    index = len(data) // 2 if position is None else position
    data[index] ^= 0x01
    path.write_bytes(bytes(data))


def test_layout_and_statement(pristine: Path) -> None:
    report = (pristine / "report.json").read_bytes()
    statement = json.loads(report)
    assert proof.canonical_json(statement) == report
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://in-toto.io/attestation/test-result/v0.1"
    predicate = statement["predicate"]
    assert predicate["result"] == "FAILED"  # derived from failedTests
    assert predicate["simulation"] is True
    assert predicate["disclaimer"] == DISCLAIMER
    assert predicate["previousProofSha256"] is None
    assert predicate["suite"] == "MOTCO2"
    assert predicate["runId"] == "run-1"
    assert predicate["generatedAt"].endswith("Z")
    subjects = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}
    on_disk = {
        p.relative_to(pristine).as_posix()
        for p in pristine.rglob("*")
        if p.is_file() and p.name not in ("report.json", "report.json.p7s")
    }
    assert set(subjects) == on_disk
    assert {"artefacts/smtp/transcript.txt", "artefacts/message.eml", "report.html"} <= on_disk
    for name, digest in subjects.items():
        assert proof.sha256_file(pristine / name) == digest
    html = (pristine / "report.html").read_text()
    assert "NOT an official ANS / CNDA proof" in html
    assert "Caller content &amp; verdicts" in html
    assert "<style>" in html and "http" not in html.split("<style>")[1].split("</style>")[0]
    assert "openssl cms -verify" in (pristine / "VERIFY.md").read_text()


def test_verifies_with_ours_and_openssl(pristine: Path, pki: TestPKI) -> None:
    result = proof.verify_bundle(pristine, ca_file=pki.root_cert_path)
    assert result.ok, result.problems
    assert result.signer is not None and "PROOF SIGNING" in result.signer
    assert result.predicate["result"] == "FAILED"
    assert openssl_ok(pristine, pki.root_cert_path)


def test_without_ca_trusts_bundled_root_and_says_so(pristine: Path) -> None:
    result = proof.verify_bundle(pristine)
    assert result.ok, result.problems
    assert any("integrity" in note for note in result.notes)


@pytest.mark.parametrize(
    "name",
    [
        "report.json",
        "report.json.p7s",
        "report.html",
        "VERIFY.md",
        "ca/root.pem",
        "artefacts/message.eml",
        "artefacts/smtp/transcript.txt",
    ],
)
def test_one_byte_edit_fails(bundle: Path, pki: TestPKI, name: str) -> None:
    flip_byte(bundle / name)
    result = proof.verify_bundle(bundle, ca_file=pki.root_cert_path, use_openssl=False)
    assert not result.ok
    assert any(p.startswith(name) for p in result.problems), result.problems
    if name in ("report.json", "report.json.p7s"):
        assert not openssl_ok(bundle, pki.root_cert_path)
        with_openssl = proof.verify_bundle(bundle, ca_file=pki.root_cert_path)
        assert any("openssl" in p for p in with_openssl.problems)


def test_every_byte_of_the_signature_matters(pristine: Path, pki: TestPKI) -> None:
    # Our verifier is strict about the whole DER, not only the signed parts.
    report = (pristine / "report.json").read_bytes()
    signature = (pristine / "report.json.p7s").read_bytes()
    anchors = [x509.load_pem_x509_certificate(pki.root_cert_path.read_bytes())]
    assert proof.verify_detached(report, signature, anchors).ok
    accepted = []
    for index in range(len(signature)):
        edited = bytearray(signature)
        edited[index] ^= 0x01
        if proof.verify_detached(report, bytes(edited), anchors).ok:
            accepted.append(index)
    assert accepted == []


def test_openssl_refuses_edits_in_signed_parts(bundle: Path, pki: TestPKI) -> None:
    sig = bundle / "report.json.p7s"
    flip_byte(sig, len(sig.read_bytes()) - 5)  # inside the RSA signature value
    assert not openssl_ok(bundle, pki.root_cert_path)


def test_deleted_artefact_is_named(bundle: Path, pki: TestPKI) -> None:
    (bundle / "artefacts" / "message.eml").unlink()
    result = proof.verify_bundle(bundle, ca_file=pki.root_cert_path)
    assert not result.ok
    assert result.problems == ["artefacts/message.eml: missing (deleted?)"]


def test_extra_file_in_artefacts_fails(bundle: Path, pki: TestPKI) -> None:
    (bundle / "artefacts" / "smtp" / "extra.txt").write_text("slipped in")
    result = proof.verify_bundle(bundle, ca_file=pki.root_cert_path)
    assert not result.ok
    assert result.problems == ["artefacts/smtp/extra.txt: not listed in report.json (added?)"]


def test_foreign_signer_is_refused(tmp_path: Path, pki: TestPKI) -> None:
    other = TestPKI.load_or_create(tmp_path / "other-pki", "mssante.localhost")
    out = proof.write_bundle(
        tmp_path / "b", kind="mss", predicate={}, artefacts={}, html="", pki=other, run_id="x"
    )
    assert proof.verify_bundle(out, ca_file=other.root_cert_path).ok
    result = proof.verify_bundle(out, ca_file=pki.root_cert_path)
    assert not result.ok
    assert any("trust anchor" in p for p in result.problems), result.problems
    assert not openssl_ok(out, pki.root_cert_path)


def test_hash_chain_links(tmp_path: Path, pki: TestPKI) -> None:
    proofs_dir = tmp_path / "proofs"
    assert proof.latest_report(proofs_dir) is None
    first = proof.write_bundle(
        proof.bundle_dir_for(proofs_dir, "mss", "r1"),
        kind="mss", predicate={}, artefacts={}, html="", pki=pki, run_id="r1",
    )  # fmt: skip
    head = proof.latest_report(proofs_dir)
    assert head == first / "report.json"
    second = proof.write_bundle(
        proof.bundle_dir_for(proofs_dir, "interop", "r2"),
        kind="interop", predicate={}, artefacts={}, html="", pki=pki, run_id="r2",
        previous=head,
    )  # fmt: skip
    third = proof.write_bundle(
        proof.bundle_dir_for(proofs_dir, "mss", "r3"),
        kind="mss", predicate={}, artefacts={}, html="", pki=pki, run_id="r3",
        previous=second,  # a directory is accepted too
    )  # fmt: skip
    chain = [json.loads((b / "report.json").read_bytes())["predicate"] for b in (second, third)]
    assert chain[0]["previousProofSha256"] == proof.sha256_file(first / "report.json")
    assert chain[1]["previousProofSha256"] == proof.sha256_file(second / "report.json")
    assert proof.latest_report(proofs_dir) == third / "report.json"
    assert proof.latest_report(proofs_dir, "interop") == second / "report.json"
    # The link is signed: it shows in the verified statement.
    assert proof.verify_bundle(third, ca_file=pki.root_cert_path).predicate[
        "previousProofSha256"
    ] == proof.sha256_file(second / "report.json")


@pytest.mark.parametrize("name", ["/etc/passwd", "../escape", "a/../../b", "a\\b", "", "a//b"])
def test_unsafe_artefact_names_are_rejected(tmp_path: Path, pki: TestPKI, name: str) -> None:
    with pytest.raises(ValueError):
        proof.write_bundle(
            tmp_path / "b", kind="mss", predicate={}, artefacts={name: b"x"}, html="",
            pki=pki, run_id="x",
        )  # fmt: skip
    assert not (tmp_path / "b").exists()
    assert list(tmp_path.iterdir()) == []  # no half-written temporary left behind


def test_reserved_keys_and_bad_result_are_rejected(tmp_path: Path, pki: TestPKI) -> None:
    for predicate in ({"simulation": False}, {"result": "OK"}):
        with pytest.raises(ValueError):
            proof.write_bundle(
                tmp_path / "b", kind="mss", predicate=predicate, artefacts={}, html="",
                pki=pki, run_id="x",
            )  # fmt: skip


def test_existing_bundle_is_never_rewritten(pristine: Path, pki: TestPKI) -> None:
    with pytest.raises(FileExistsError):
        proof.write_bundle(
            pristine, kind="mss", predicate={}, artefacts={}, html="", pki=pki, run_id="x"
        )


def test_cli_verify_and_show(bundle: Path, pki: TestPKI) -> None:
    runner = CliRunner()
    ok = runner.invoke(proof_group, ["verify", str(bundle), "--ca", str(pki.root_cert_path)])
    assert ok.exit_code == 0, ok.output
    assert "VALID" in ok.output
    shown = runner.invoke(proof_group, ["show", str(bundle)])
    assert shown.exit_code == 0
    assert "MSS-IMAP-02" in shown.output and "FAILED" in shown.output

    flip_byte(bundle / "artefacts" / "message.eml")
    bad = runner.invoke(
        proof_group, ["verify", str(bundle), "--ca", str(pki.root_cert_path), "--json"]
    )
    assert bad.exit_code == 1
    verdict = json.loads(bad.output)
    assert verdict["ok"] is False
    assert verdict["problems"][0].startswith("artefacts/message.eml: modified")


def test_symlinked_artefact_fails(bundle: Path, pki: TestPKI, tmp_path: Path) -> None:
    target = bundle / "artefacts" / "message.eml"
    outside = tmp_path / "outside.eml"
    outside.write_bytes(target.read_bytes())  # same bytes: only the link itself is wrong
    target.unlink()
    target.symlink_to(outside)
    result = proof.verify_bundle(bundle, ca_file=pki.root_cert_path)
    assert result.problems == ["artefacts/message.eml: is a symbolic link"]
