"""The attestation de conformité: a signed JSON document and its readable page.

Same detached CMS scheme as the proof bundles (``simulators.core.proof``), so it
verifies with ``openssl cms -verify``. The page is rendered deterministically from
the signed JSON, and verification re-renders it: the page cannot say anything the
signature does not cover.

Directory layout::

    attestation.json        canonical JSON
    attestation.json.p7s    detached CMS signature (DER)
    attestation.html        the page, rendered from attestation.json
    ca/root.pem             the simulated root, for openssl anywhere (integrity only)
"""

from __future__ import annotations

import html as html_lib
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from simulators import DISCLAIMER
from simulators.core.pki import TestPKI
from simulators.core.proof import (
    canonical_json,
    html_page,
    openssl_verify,
    sign_detached,
    verify_detached,
)

ATTESTATION_TYPE = "urn:segur-sim:cnda:attestation-de-conformite:v1"
ATTESTATION_JSON = "attestation.json"
ATTESTATION_SIG = "attestation.json.p7s"
ATTESTATION_HTML = "attestation.html"
ROOT_PEM = "ca/root.pem"
EXAM_MODES = {"remote": "à distance", "in_person": "sur site"}


def write_attestation(out_dir: Path, document: dict[str, Any], pki: TestPKI) -> Path:
    """Write the signed attestation into ``out_dir`` (must not exist); returns it."""
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} exists: an attestation is never rewritten")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        content = canonical_json(document)
        (tmp / ATTESTATION_JSON).write_bytes(content)
        (tmp / ATTESTATION_SIG).write_bytes(sign_detached(content, pki))
        (tmp / ATTESTATION_HTML).write_text(render_attestation(document), encoding="utf-8")
        (tmp / "ca").mkdir()
        shutil.copyfile(pki.root_cert_path, tmp / ROOT_PEM)
        tmp.chmod(0o755)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


@dataclass
class AttestationCheck:
    problems: list[str] = field(default_factory=list)
    document: dict[str, Any] | None = None
    signer: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_attestation(
    directory: Path, *, ca_file: Path | None = None, use_openssl: bool = True
) -> AttestationCheck:
    check = AttestationCheck()
    content_path, sig_path = directory / ATTESTATION_JSON, directory / ATTESTATION_SIG
    for required in (content_path, sig_path):
        if not required.is_file():
            check.problems.append(f"{required.name}: missing")
    if check.problems:
        return check
    anchor = ca_file or directory / ROOT_PEM
    if ca_file is None:
        check.notes.append("trusting ca/root.pem shipped with the attestation: integrity only")
    try:
        anchors = x509.load_pem_x509_certificates(anchor.read_bytes())
    except (OSError, ValueError) as exc:
        check.problems.append(f"trust anchor {anchor}: unreadable ({exc})")
        return check
    content = content_path.read_bytes()
    signature = verify_detached(content, sig_path.read_bytes(), anchors)
    check.signer = signature.signer
    if signature.content_mismatch:
        check.problems.append(f"{ATTESTATION_JSON}: modified (differs from the signed digest)")
    check.problems.extend(f"{ATTESTATION_SIG}: {p}" for p in signature.problems)
    if use_openssl and shutil.which("openssl"):
        problem = openssl_verify(content_path, sig_path, anchor)
        if problem:
            check.problems.append(f"openssl cms -verify refused the attestation: {problem}")
    try:
        document = json.loads(content)
    except ValueError as exc:
        check.problems.append(f"{ATTESTATION_JSON}: not JSON ({exc})")
        return check
    check.document = document
    if document.get("type") != ATTESTATION_TYPE or document.get("simulation") is not True:
        check.problems.append(f"{ATTESTATION_JSON}: not a segur-sim CNDA attestation")
    page = directory / ATTESTATION_HTML
    if page.is_file() and page.read_text(encoding="utf-8") != render_attestation(document):
        check.problems.append(f"{ATTESTATION_HTML}: differs from the signed attestation (edited)")
    return check


def render_attestation(doc: dict[str, Any]) -> str:
    """The readable attestation. Deterministic: verification compares it byte for byte."""
    esc = html_lib.escape

    def cell(value: Any) -> str:
        return esc("" if value is None else str(value))

    editor, software = doc.get("editor", {}), doc.get("software", {})
    service, exam = doc.get("service", {}), doc.get("exam", {})
    referentiel, plan = doc.get("referentiel", {}), doc.get("testPlan", {})
    perimeter = "; ".join(
        f"{esc(axis)}: {esc(', '.join(values))}"
        for axis, values in sorted(doc.get("perimeter", {}).items())
    )
    components = "".join(
        f"<li>{cell(c.get('name'))} {cell(c.get('version'))} "
        f"(NIL <code>{cell(c.get('nil'))}</code>)</li>"
        for c in doc.get("components", [])
    )
    proofs = "".join(
        f"<tr><td>{cell(p.get('name'))}</td><td>{cell(p.get('kind'))}</td>"
        f"<td>{cell(p.get('round'))}</td><td>{cell(p.get('result') or '-')}</td>"
        f'<td class="hash">{cell(p.get("sha256"))}</td></tr>'
        for p in doc.get("proofs", [])
    )
    coverage = doc.get("coverage")
    # Only attestations that carry a coverage get the section: older ones must still
    # render byte for byte as they were signed.
    coverage_html = (
        "<h2>Couverture du plan de tests</h2>"
        "<table><tr><th>Cas</th><th>Couverture</th><th>Preuves (sha256)</th></tr>"
        + "".join(
            f"<tr><td><code>{cell(c.get('id'))}</code></td><td>{cell(c.get('status'))}</td>"
            f'<td class="hash">{"<br>".join(cell(h) for h in c.get("proofs", []))}</td></tr>'
            for c in coverage.get("cases", [])
        )
        + "</table>"
        if isinstance(coverage, dict)
        else ""
    )
    mode = EXAM_MODES.get(str(exam.get("mode")), exam.get("mode"))
    cases = len(plan.get("cases", []))
    rows = [
        ("NIE", f"<code>{cell(editor.get('nie'))}</code>"),
        ("Éditeur", cell(editor.get("name"))),
        ("NIL", f"<code>{cell(software.get('nil'))}</code>"),
        ("Logiciel et version", f"{cell(software.get('name'))} {cell(software.get('version'))}"),
        ("Composants", f"<ul>{components}</ul>" if components else "aucun"),
        ("Service", f"{cell(service.get('name'))} ({cell(service.get('id'))})"),
        ("Périmètre", perimeter),
        ("Référentiel", f"{cell(referentiel.get('name'))}, {cell(referentiel.get('version'))}"),
        ("Plan de tests", f"{cell(plan.get('name'))}, {cell(plan.get('version'))}, {cases} cas"),
        ("Examen de conformité", f"{cell(exam.get('date'))}, {cell(mode)}"),
        ("Tentatives d'examen", cell(exam.get("attempts"))),
        ("Numéro de production", f"<code>{cell(doc.get('productionNumber'))}</code>"),
        ("Numéro provisoire", f"<code>{cell(doc.get('provisionalNumber'))}</code>"),
        ("Émise le", cell(doc.get("issuedAt"))),
        ("Valide jusqu'au", cell(doc.get("validUntil"))),
        ("Dossier", f"<code>{cell(doc.get('dossier'))}</code>"),
        ("Émetteur", cell(doc.get("issuer"))),
    ]
    table = "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in rows)
    body = (
        "<h1>Attestation de conformité &mdash; SIMULATION</h1>"
        f"<p><strong>{esc(DISCLAIMER)}</strong></p>"
        f"<table>{table}</table>"
        "<h2>Preuves sur lesquelles repose l'attestation</h2>"
        "<table><tr><th>Preuve</th><th>Type</th><th>Tour</th><th>Résultat</th>"
        f"<th>sha256</th></tr>{proofs}</table>"
        f"{coverage_html}"
        "<p>Vérifier: <code>segur-sim cnda attestation verify DIR</code> ou "
        "<code>openssl cms -verify -binary -inform DER -in attestation.json.p7s "
        "-content attestation.json -CAfile ca/root.pem -purpose any -out /dev/null</code></p>"
    )
    return html_page(f"attestation {doc.get('productionNumber', '')}", body)
