"""Signed proof bundles, shared by every simulator.

A bundle is a directory that a third party can check with stock tools::

    report.json        in-toto Statement v1, predicate "test-result" v0.1, canonical JSON
    report.json.p7s    detached CMS signature (DER) of report.json by the simulated PKI
    report.html        the same verdicts for humans, with the SIMULATION banner
    VERIFY.md          how to check the bundle (our command, openssl, sha256sum)
    ca/root.pem        the simulated root, so openssl can run anywhere (integrity only)
    artefacts/...      transcripts, raw messages, validator reports...

Every file except the report and its signature is a ``subject`` of the statement, so
its sha256 is covered by the signature. Each report also carries the sha256 of the
previous report of its data directory (``previousProofSha256``): a hash chain.

cryptography (48) can build a CMS signature but cannot verify one, so this module
also holds a small, strict DER reader for the one shape we emit. Being strict about
that shape (versions, algorithms, no unused certificate, no trailing byte) is what
makes a one-byte edit anywhere in the ``.p7s`` fail, not only in the signed parts.
openssl, when present, is asked for a second opinion.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html as html_lib
import json
import os
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7

from simulators import DISCLAIMER, __version__
from simulators.core.pki import TestPKI

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://in-toto.io/attestation/test-result/v0.1"
RESULTS = ("PASSED", "WARNED", "FAILED")

REPORT_JSON = "report.json"
SIGNATURE = "report.json.p7s"
REPORT_HTML = "report.html"
VERIFY_MD = "VERIFY.md"
ROOT_PEM = "ca/root.pem"
ARTEFACTS = "artefacts"

# Keys the bundle writer owns; a caller may not set them in its predicate.
_RESERVED = ("simulation", "disclaimer", "previousProofSha256", "generatedAt", "kind", "runId")


# ---- small helpers ----------------------------------------------------------------------
def canonical_json(obj: Any) -> bytes:
    """The one serialisation we sign: sorted keys, no whitespace, UTF-8."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()


def utc_now_iso() -> str:
    # Fixed width with microseconds, so ISO strings sort in time order.
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def safe_relative_name(name: str) -> PurePosixPath:
    """A relative POSIX path without ``..``; raises ValueError otherwise."""
    if not name or "\\" in name or "\x00" in name:
        raise ValueError(f"unsafe artefact name {name!r}")
    path = PurePosixPath(name)
    if path.is_absolute() or (path.parts and ":" in path.parts[0]):
        raise ValueError(f"artefact name {name!r} is absolute")
    if any(part in ("..", ".", "") for part in name.split("/")):
        raise ValueError(f"artefact name {name!r} has '..', '.' or an empty segment")
    return path


# ---- signing ----------------------------------------------------------------------------
def sign_detached(content: bytes, pki: TestPKI) -> bytes:
    """Detached CMS SignedData (DER) over ``content``, with the signer's chain."""
    creds = pki.signing_credentials()
    key = pki.load_signing_key()
    builder = pkcs7.PKCS7SignatureBuilder().set_data(content)
    builder = builder.add_signer(creds.cert, key, hashes.SHA256())
    for cert in x509.load_pem_x509_certificates(creds.chain_path.read_bytes())[1:]:
        builder = builder.add_certificate(cert)  # intermediates; the root stays outside
    options = [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary]
    return builder.sign(serialization.Encoding.DER, options)


# ---- writing a bundle -------------------------------------------------------------------
def write_bundle(
    out_dir: Path,
    *,
    kind: str,
    predicate: dict[str, Any],
    artefacts: Mapping[str, bytes],
    html: str,
    pki: TestPKI,
    previous: Path | None = None,
    run_id: str,
) -> Path:
    """Write a signed bundle into ``out_dir`` (which must not exist yet) and return it.

    ``predicate`` holds the test-result fields (``result``, ``passedTests``...) and the
    caller's own fields; missing test-result fields get defaults, and ``result`` is
    derived from the test lists when absent. ``html`` is trusted markup (escape your
    values) placed inside the standard page. ``previous`` is the previous bundle (its
    directory or its report.json), see :func:`latest_report`.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} exists and is not empty: bundles are never rewritten")
    names = {name: safe_relative_name(name) for name in artefacts}
    clash = [n for n in names if n.lower() in {k.lower() for k in names if k != n}]
    if clash:
        raise ValueError(f"artefact names differ only by case: {sorted(clash)}")
    for name in _RESERVED:
        if name in predicate:
            raise ValueError(f"predicate key {name!r} is set by write_bundle itself")

    previous_sha: str | None = None
    if previous is not None:
        previous_report = previous / REPORT_JSON if previous.is_dir() else previous
        previous_sha = sha256_file(previous_report)

    full = _complete_predicate(predicate, kind=kind, run_id=run_id, previous_sha=previous_sha)

    # Build in a hidden sibling and rename at the end: a crash never leaves a half
    # bundle that latest_report could pick as the head of the chain.
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        subjects: dict[str, str] = {}
        for name, data in artefacts.items():
            target = tmp / ARTEFACTS / names[name]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            subjects[f"{ARTEFACTS}/{names[name]}"] = sha256_bytes(data)
        root_pem = pki.root_cert_path.read_bytes()
        (tmp / "ca").mkdir()
        (tmp / ROOT_PEM).write_bytes(root_pem)
        subjects[ROOT_PEM] = sha256_bytes(root_pem)
        page = render_page(full, html, sorted(subjects.items())).encode("utf-8")
        (tmp / REPORT_HTML).write_bytes(page)
        subjects[REPORT_HTML] = sha256_bytes(page)
        verify_md = _verify_md(sorted(subjects.items())).encode("utf-8")
        (tmp / VERIFY_MD).write_bytes(verify_md)
        subjects[VERIFY_MD] = sha256_bytes(verify_md)

        statement = {
            "_type": STATEMENT_TYPE,
            "subject": [
                {"name": name, "digest": {"sha256": digest}}
                for name, digest in sorted(subjects.items())
            ],
            "predicateType": PREDICATE_TYPE,
            "predicate": full,
        }
        report = canonical_json(statement)
        (tmp / REPORT_JSON).write_bytes(report)
        (tmp / SIGNATURE).write_bytes(sign_detached(report, pki))
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked above
        tmp.chmod(0o755)  # mkdtemp makes it private; a bundle is meant to be shared
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _complete_predicate(
    predicate: Mapping[str, Any], *, kind: str, run_id: str, previous_sha: str | None
) -> dict[str, Any]:
    full: dict[str, Any] = {
        "configuration": [],
        "url": f"urn:segur-sim:{kind}:{run_id}",
        "passedTests": [],
        "warnedTests": [],
        "failedTests": [],
        "toolVersions": {"segur-sim": __version__},
    }
    full.update(predicate)
    if "result" not in full:
        full["result"] = (
            "FAILED" if full["failedTests"] else "WARNED" if full["warnedTests"] else "PASSED"
        )
    if full["result"] not in RESULTS:
        raise ValueError(f"predicate result must be one of {RESULTS}, not {full['result']!r}")
    full.update(
        {
            "kind": kind,
            "runId": run_id,
            "simulation": True,
            "disclaimer": DISCLAIMER,
            "previousProofSha256": previous_sha,
            "generatedAt": utc_now_iso(),
        }
    )
    return full


PAGE_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1b1b1b;
background:#f6f6f6}
.simu{background:#b00020;color:#fff;padding:18px 24px;font-size:1.25rem;font-weight:700;
border-bottom:6px solid #ffcc00;letter-spacing:.02em}
.simu small{display:block;font-weight:400;font-size:.9rem;margin-top:6px}
main{max-width:1000px;margin:24px auto;background:#fff;padding:24px 32px;
box-shadow:0 1px 4px rgba(0,0,0,.15)}
table{border-collapse:collapse;width:100%;margin:12px 0}
th,td{border:1px solid #ccc;padding:6px 8px;text-align:left;vertical-align:top}
th{background:#eee}
code,.hash{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85rem;
word-break:break-all}
.PASSED{color:#0a6b2d;font-weight:700}.FAILED{color:#b00020;font-weight:700}
.WARNED{color:#9a5b00;font-weight:700}
footer{color:#555;font-size:.85rem;margin-top:24px}
"""


def simulation_banner() -> str:
    """The banner every page of the simulator shows; shared by CNDA pages."""
    return (
        '<div class="simu" role="alert">SIMULATION &mdash; segur-sim. '
        "NOT an official ANS / CNDA proof."
        f"<small>{html_lib.escape(DISCLAIMER)}</small></div>"
    )


def html_page(title: str, body: str) -> str:
    """A self-contained page (inline CSS) with the SIMULATION banner around ``body``."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="fr"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>[SIMULATION] {html_lib.escape(title)}</title>"
        f"<style>{PAGE_CSS}</style></head><body>"
        f"{simulation_banner()}<main>{body}"
        f"<footer>{html_lib.escape(DISCLAIMER)}</footer></main></body></html>\n"
    )


def render_page(predicate: Mapping[str, Any], body: str, files: list[tuple[str, str]]) -> str:
    esc = html_lib.escape
    result = str(predicate.get("result", ""))
    previous = predicate.get("previousProofSha256") or "none (first of its chain)"
    rows = "".join(
        f"<tr><th>{esc(label)}</th><td>{value}</td></tr>"
        for label, value in (
            ("Kind", esc(str(predicate.get("kind", "")))),
            ("Run", f"<code>{esc(str(predicate.get('runId', '')))}</code>"),
            ("Result", f'<span class="{esc(result)}">{esc(result)}</span>'),
            ("Generated at", esc(str(predicate.get("generatedAt", "")))),
            (
                "Previous proof (sha256)",
                f'<span class="hash">{esc(str(previous))}</span>',
            ),
        )
    )
    listing = "".join(
        f'<tr><td><code>{esc(name)}</code></td><td class="hash">{digest}</td></tr>'
        for name, digest in files
    )
    page_body = (
        f"<h1>Proof bundle &mdash; {esc(str(predicate.get('kind', '')))}</h1>"
        f"<table>{rows}</table>"
        f"<section>{body}</section>"
        "<h2>Files</h2><table><tr><th>File</th><th>sha256</th></tr>"
        f"{listing}</table>"
        "<p>The signed <code>report.json</code> lists these digests (and this page's). "
        "See <code>VERIFY.md</code>.</p>"
    )
    return html_page(f"proof {predicate.get('kind', '')} {predicate.get('runId', '')}", page_body)


def _verify_md(files: list[tuple[str, str]]) -> str:
    sums = "\n".join(f"{digest}  {name}" for name, digest in files)
    return f"""# How to verify this bundle

> {DISCLAIMER}

`report.json` is an in-toto Statement (predicate `test-result`) listing the sha256
of every other file of the bundle (this one included). `report.json.p7s` is a
detached CMS signature of `report.json` by the simulator's test PKI.

## With segur-sim

    segur-sim proof verify . --ca <data-dir>/pki/root.pem

It checks the signature and its chain, every digest, and that no file was added or
removed. Without `--ca` it trusts `ca/root.pem` from the bundle itself, which proves
integrity but not origin.

## With openssl and sha256sum

    openssl cms -verify -binary -inform DER -in report.json.p7s -content report.json \\
        -CAfile <data-dir>/pki/root.pem -purpose any -out /dev/null

Then compare the digests below with `report.json` (they are copied here for
convenience; the signed ones are in `report.json`):

    sha256sum -c <<'EOF'
{sums}
EOF

Only the files listed in `report.json`, `report.json` itself and
`report.json.p7s` may be present.
"""


# ---- finding the head of a chain --------------------------------------------------------
def latest_report(proofs_dir: Path, kind: str | None = None) -> Path | None:
    """The report.json of the most recent bundle under ``proofs_dir`` (of ``kind``).

    Pass its result as ``previous`` to :func:`write_bundle` to extend the chain. With
    ``kind=None`` the chain spans the whole data directory.
    """
    best: tuple[str, str] | None = None
    best_path: Path | None = None
    if not proofs_dir.is_dir():
        return None
    for report in proofs_dir.rglob(REPORT_JSON):
        if any(part.startswith(".") for part in report.relative_to(proofs_dir).parts):
            continue  # bundles being written
        if not (report.parent / SIGNATURE).exists():
            continue
        try:
            predicate = json.loads(report.read_bytes())["predicate"]
            generated = str(predicate["generatedAt"])
            report_kind = predicate.get("kind")
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if kind is not None and report_kind != kind:
            continue
        key = (generated, str(report))
        if best is None or key > best:
            best, best_path = key, report
    return best_path


def bundle_dir_for(proofs_dir: Path, kind: str, run_id: str) -> Path:
    """Where a simulator should write a bundle: ``proofs/<kind>/<run_id>``."""
    return proofs_dir / safe_relative_name(kind) / safe_relative_name(run_id)


# ---- verification -----------------------------------------------------------------------
@dataclass
class VerifyResult:
    problems: list[str] = field(default_factory=list)
    statement: dict[str, Any] | None = None
    signer: str | None = None
    trust_anchor: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def predicate(self) -> dict[str, Any]:
        if self.statement is None:
            return {}
        predicate = self.statement.get("predicate")
        return predicate if isinstance(predicate, dict) else {}

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "problems": self.problems,
            "signer": self.signer,
            "trustAnchor": self.trust_anchor,
            "notes": self.notes,
            "statement": self.statement,
        }


def verify_bundle(
    path: Path, *, ca_file: Path | None = None, use_openssl: bool = True
) -> VerifyResult:
    """Check a bundle: signature and chain, every digest, no extra or missing file.

    ``ca_file`` holds the trusted root(s) in PEM. Without it the bundle's own
    ``ca/root.pem`` is used, which proves integrity only (noted in the result).
    """
    result = VerifyResult()
    path = Path(path)
    if not path.is_dir():
        result.problems.append(f"{path}: not a directory")
        return result
    report_path, sig_path = path / REPORT_JSON, path / SIGNATURE
    for required in (report_path, sig_path):
        if not required.is_file():
            result.problems.append(f"{required.name}: missing")
    if result.problems:
        return result

    anchor = ca_file if ca_file is not None else path / ROOT_PEM
    if ca_file is None:
        result.notes.append(
            "trusting ca/root.pem shipped in the bundle: integrity is checked, origin is not"
        )
    result.trust_anchor = str(anchor)
    report = report_path.read_bytes()
    signature = sig_path.read_bytes()
    try:
        anchors = x509.load_pem_x509_certificates(anchor.read_bytes())
    except (OSError, ValueError) as exc:
        result.problems.append(f"trust anchor {anchor}: unreadable ({exc})")
        anchors = []
    if anchors:
        check = verify_detached(report, signature, anchors)
        result.signer = check.signer
        if check.content_mismatch:
            result.problems.append(
                f"{REPORT_JSON}: modified (its digest differs from the one signed in {SIGNATURE})"
            )
        result.problems.extend(f"{SIGNATURE}: {p}" for p in check.problems)
        if use_openssl and shutil.which("openssl"):
            problem = openssl_verify(report_path, sig_path, anchor)
            if problem:
                result.problems.append(
                    f"{REPORT_JSON}/{SIGNATURE}: openssl cms -verify refused them: {problem}"
                )

    try:
        statement = json.loads(report)
        if not isinstance(statement, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        result.problems.append(f"{REPORT_JSON}: not valid JSON ({exc})")
        return result
    result.statement = statement
    if canonical_json(statement) != report:
        result.problems.append(f"{REPORT_JSON}: not in canonical form (edited?)")
    if statement.get("_type") != STATEMENT_TYPE:
        result.problems.append(f"{REPORT_JSON}: _type is not {STATEMENT_TYPE}")
    if statement.get("predicateType") != PREDICATE_TYPE:
        result.problems.append(f"{REPORT_JSON}: predicateType is not {PREDICATE_TYPE}")
    result.problems.extend(_check_subjects(path, statement))
    return result


def _check_subjects(path: Path, statement: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    expected: dict[str, str] = {}
    subjects = statement.get("subject")
    if not isinstance(subjects, list):
        return [f"{REPORT_JSON}: no subject list"]
    for subject in subjects:
        try:
            name = str(subject["name"])
            digest = str(subject["digest"]["sha256"])
            safe_relative_name(name)
        except (KeyError, TypeError, ValueError):
            problems.append(f"{REPORT_JSON}: malformed subject {subject!r}")
            continue
        expected[name] = digest
    for name, digest in sorted(expected.items()):
        file = path / name
        try:
            if file.is_symlink():  # would let a bundle "contain" any file of the verifier's host
                problems.append(f"{name}: is a symbolic link")
                continue
            if not file.is_file():
                problems.append(f"{name}: missing (deleted?)")
                continue
            actual = sha256_file(file)
        except OSError as exc:  # a hostile name (too long...) is a verdict, not a crash
            problems.append(f"{name[:100]}: cannot be read ({exc.strerror or exc})")
            continue
        if actual != digest:
            problems.append(f"{name}: modified (sha256 {actual}, report says {digest})")
    allowed = set(expected) | {REPORT_JSON, SIGNATURE}
    for file in sorted(path.rglob("*")):
        if file.is_dir():
            continue
        name = file.relative_to(path).as_posix()
        if name not in allowed:
            problems.append(f"{name}: not listed in {REPORT_JSON} (added?)")
    return problems


def openssl_verify(content: Path, signature: Path, ca_file: Path) -> str | None:
    """Run stock ``openssl cms -verify``; returns None when it succeeds."""
    command = [
        "openssl", "cms", "-verify", "-binary", "-inform", "DER",
        "-in", str(signature), "-content", str(content),
        "-CAfile", str(ca_file), "-purpose", "any", "-out", os.devnull,
    ]  # fmt: skip
    try:
        proc = subprocess.run(command, capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if proc.returncode == 0:
        return None
    lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
    return lines[0] if lines else f"exit code {proc.returncode}"


# ---- in-process CMS verification --------------------------------------------------------
_OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
_OID_DATA = "1.2.840.113549.1.7.1"
_OID_CONTENT_TYPE = "1.2.840.113549.1.9.3"
_OID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
_OID_RSA = "1.2.840.113549.1.1.1"
_DIGESTS: dict[str, tuple[hashes.HashAlgorithm, str]] = {
    "2.16.840.1.101.3.4.2.1": (hashes.SHA256(), "1.2.840.113549.1.1.11"),
    "2.16.840.1.101.3.4.2.2": (hashes.SHA384(), "1.2.840.113549.1.1.12"),
    "2.16.840.1.101.3.4.2.3": (hashes.SHA512(), "1.2.840.113549.1.1.13"),
}


class _DerError(ValueError):
    pass


@dataclass(frozen=True)
class _Tlv:
    tag: int
    buf: bytes
    start: int
    header: int
    length: int

    @property
    def end(self) -> int:
        return self.start + self.header + self.length

    @property
    def value(self) -> bytes:
        return self.buf[self.start + self.header : self.end]

    @property
    def raw(self) -> bytes:
        return self.buf[self.start : self.end]

    def children(self) -> list[_Tlv]:
        if not self.tag & 0x20:
            raise _DerError(f"tag 0x{self.tag:02x} at {self.start} is not constructed")
        items, pos = [], self.start + self.header
        while pos < self.end:
            item = _read_tlv(self.buf, pos, self.end)
            items.append(item)
            pos = item.end
        return items

    def expect(self, tag: int, what: str) -> _Tlv:
        if self.tag != tag:
            raise _DerError(f"{what}: tag 0x{self.tag:02x} instead of 0x{tag:02x}")
        return self


def _read_tlv(buf: bytes, pos: int, limit: int) -> _Tlv:
    """One DER element; rejects BER leniencies (indefinite or non-minimal lengths)."""
    if pos + 2 > limit:
        raise _DerError(f"truncated element at offset {pos}")
    tag, first = buf[pos], buf[pos + 1]
    if tag & 0x1F == 0x1F:
        raise _DerError(f"multi-byte tag at offset {pos}")
    if first < 0x80:
        header, length = 2, first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + 2 + count > limit:
            raise _DerError(f"bad length at offset {pos}")
        length = int.from_bytes(buf[pos + 2 : pos + 2 + count], "big")
        if length < 0x80 or buf[pos + 2] == 0:
            raise _DerError(f"non-minimal length at offset {pos}")
        header = 2 + count
    if pos + header + length > limit:
        raise _DerError(f"element at offset {pos} overruns its parent")
    return _Tlv(tag, buf, pos, header, length)


def _oid(tlv: _Tlv) -> str:
    tlv.expect(0x06, "object identifier")
    data = tlv.value
    if not data or data[-1] & 0x80 or data[0] == 0x80:
        raise _DerError("malformed object identifier")
    arcs: list[int] = []
    value = 0
    for byte in data:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in [first, arcs[0] - 40 * first, *arcs[1:]])


def _small_int(tlv: _Tlv) -> int:
    tlv.expect(0x02, "integer")
    return int.from_bytes(tlv.value, "big", signed=True)


def _algorithm(tlv: _Tlv) -> str:
    """AlgorithmIdentifier with absent or NULL parameters."""
    parts = tlv.expect(0x30, "algorithm identifier").children()
    if not 1 <= len(parts) <= 2:
        raise _DerError("algorithm identifier with unexpected parameters")
    if len(parts) == 2 and parts[1].raw != b"\x05\x00":
        raise _DerError("algorithm parameters are not NULL")
    return _oid(parts[0])


@dataclass
class SignatureCheck:
    problems: list[str] = field(default_factory=list)
    signer: str | None = None
    content_mismatch: bool = False  # the signature is fine but not over this content

    @property
    def ok(self) -> bool:
        return not self.problems and not self.content_mismatch


def verify_detached(
    content: bytes,
    signature_der: bytes,
    anchors: list[x509.Certificate],
    *,
    at: dt.datetime | None = None,
) -> SignatureCheck:
    """Verify a detached CMS SignedData of the shape :func:`sign_detached` makes."""
    check = SignatureCheck()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecation chatter about hostile certificates
            _verify_detached(content, signature_der, anchors, at or dt.datetime.now(dt.UTC), check)
    except Exception as exc:  # any parse error of hostile input is a verdict, not a crash
        check.problems.append(f"malformed CMS signature ({type(exc).__name__}: {exc})")
    return check


def _verify_detached(
    content: bytes,
    der: bytes,
    anchors: list[x509.Certificate],
    now: dt.datetime,
    check: SignatureCheck,
) -> None:
    top = _read_tlv(der, 0, len(der)).expect(0x30, "ContentInfo")
    if top.end != len(der):
        raise _DerError("trailing bytes after the signature")
    content_type, wrapped = _exactly(top.children(), 2, "ContentInfo")
    if _oid(content_type) != _OID_SIGNED_DATA:
        raise _DerError("not a CMS SignedData")
    (signed_data,) = _exactly(wrapped.expect(0xA0, "content").children(), 1, "content")
    parts = signed_data.expect(0x30, "SignedData").children()
    if len(parts) != 5:
        raise _DerError("SignedData must hold version, algorithms, content, certs, signers")
    version, digest_set, encap, cert_set, signer_set = parts
    if _small_int(version) != 1:
        raise _DerError("SignedData version is not 1")
    digest_algs = [_algorithm(a) for a in digest_set.expect(0x31, "digestAlgorithms").children()]
    encap_parts = encap.expect(0x30, "encapContentInfo").children()
    if len(encap_parts) != 1 or _oid(encap_parts[0]) != _OID_DATA:
        raise _DerError("encapsulated content must be detached id-data")
    certs = [_load_certificate(c) for c in cert_set.expect(0xA0, "certificates").children()]
    (signer_info,) = _exactly(signer_set.expect(0x31, "signerInfos").children(), 1, "signers")
    fields_ = signer_info.expect(0x30, "SignerInfo").children()
    if len(fields_) != 6:
        raise _DerError("SignerInfo must hold exactly six fields (no unsigned attributes)")
    s_version, sid, digest_alg, attrs, sig_alg, sig_value = fields_
    if _small_int(s_version) != 1:
        raise _DerError("SignerInfo version is not 1")
    issuer, serial = _exactly(sid.expect(0x30, "issuerAndSerialNumber").children(), 2, "sid")
    digest_oid = _algorithm(digest_alg)
    if digest_oid not in _DIGESTS or digest_algs != [digest_oid]:
        raise _DerError("digest algorithm is unknown or differs from the SignedData list")
    hash_alg, sig_oid = _DIGESTS[digest_oid]
    if _algorithm(sig_alg) not in (_OID_RSA, sig_oid):
        raise _DerError("signature algorithm is not RSA with the declared digest")
    signature = sig_value.expect(0x04, "signature").value

    signer = next(
        (
            c
            for c in certs
            if c.serial_number == _serial(serial)
            and c.issuer.public_bytes() == issuer.expect(0x30, "issuer").raw
        ),
        None,
    )
    if signer is None:
        check.problems.append("the signer's certificate is not in the signature")
        return
    check.signer = signer.subject.rfc4514_string()

    # Signed attributes: contentType = data, messageDigest = H(content).
    seen: dict[str, bytes] = {}
    for attr in attrs.expect(0xA0, "signedAttrs").children():
        oid_tlv, values = _exactly(attr.expect(0x30, "attribute").children(), 2, "attribute")
        oid = _oid(oid_tlv)
        if oid in seen:
            raise _DerError(f"attribute {oid} appears twice")
        (single,) = _exactly(values.expect(0x31, "attribute values").children(), 1, "values")
        seen[oid] = single.raw
    if _OID_CONTENT_TYPE not in seen or _OID_MESSAGE_DIGEST not in seen:
        raise _DerError("contentType or messageDigest attribute is missing")
    ct = _read_tlv(seen[_OID_CONTENT_TYPE], 0, len(seen[_OID_CONTENT_TYPE]))
    if _oid(ct) != _OID_DATA:
        raise _DerError("contentType attribute is not id-data")
    md = _read_tlv(seen[_OID_MESSAGE_DIGEST], 0, len(seen[_OID_MESSAGE_DIGEST]))
    digest = hashes.Hash(hash_alg)
    digest.update(content)
    if md.expect(0x04, "messageDigest").value != digest.finalize():
        check.content_mismatch = True

    # The signature covers the attributes re-tagged as a SET OF (RFC 5652, 5.4).
    signed_bytes = b"\x31" + attrs.raw[1:]
    public_key = signer.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        check.problems.append("the signer's key is not RSA")
        return
    try:
        public_key.verify(signature, signed_bytes, padding.PKCS1v15(), hash_alg)
    except InvalidSignature:
        check.problems.append("the RSA signature does not verify (signature or attributes edited)")
    check.problems.extend(_check_chain(signer, certs, anchors, now))


def _load_certificate(tlv: _Tlv) -> x509.Certificate:
    _tbs, _alg, sig = _exactly(tlv.expect(0x30, "certificate").children(), 3, "certificate")
    # The outer signature's "unused bits" byte is outside what the issuer signed and
    # the X.509 parser tolerates a non-zero value: insist on the only DER-valid one.
    if sig.tag != 0x03 or not sig.value or sig.value[0] != 0:
        raise _DerError("certificate signature is not a whole-byte BIT STRING")
    return x509.load_der_x509_certificate(tlv.raw)


def _exactly(items: list[_Tlv], count: int, what: str) -> list[_Tlv]:
    if len(items) != count:
        raise _DerError(f"{what}: {len(items)} elements instead of {count}")
    return items


def _serial(tlv: _Tlv) -> int:
    tlv.expect(0x02, "serial number")
    return int.from_bytes(tlv.value, "big", signed=True)


def _check_chain(
    signer: x509.Certificate,
    certs: list[x509.Certificate],
    anchors: list[x509.Certificate],
    now: dt.datetime,
) -> list[str]:
    """Walk signer -> embedded intermediates -> a trusted anchor; all certs must be used."""
    problems: list[str] = []
    used = {signer}
    current = signer
    for _depth in range(8):
        _check_dates(current, now, problems)
        if current in anchors:
            break
        anchor = _issued_by(current, anchors)
        if anchor is not None:
            _check_dates(anchor, now, problems)
            break
        parent = _issued_by(current, [c for c in certs if c not in used])
        if parent is None:
            problems.append(
                f"no trusted path from {current.subject.rfc4514_string()} to the trust anchor"
            )
            break
        if not _is_ca(parent):
            problems.append(f"{parent.subject.rfc4514_string()} is not a CA certificate")
        used.add(parent)
        current = parent
    else:
        problems.append("certificate path too long")
    unused = [c.subject.rfc4514_string() for c in certs if c not in used]
    if unused:
        problems.append(f"certificates not on the signer's path: {unused}")
    return problems


def _issued_by(
    cert: x509.Certificate, candidates: list[x509.Certificate]
) -> x509.Certificate | None:
    for candidate in candidates:
        if candidate.subject != cert.issuer:
            continue
        try:
            cert.verify_directly_issued_by(candidate)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            continue
        return candidate
    return None


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _check_dates(cert: x509.Certificate, now: dt.datetime, problems: list[str]) -> None:
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        problems.append(f"{cert.subject.rfc4514_string()} is outside its validity period")
