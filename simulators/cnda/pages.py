"""HTML pages of the CNDA mock: the status page of a homologation request.

The status page stands in for the portal screenshot editors attach to their Ségur
referencing file: software, current status, expected return date. Like every page
of the simulator it carries the SIMULATION banner. Values are escaped here; the
page is self-contained (inline CSS, no script, no external resource).
"""

from __future__ import annotations

import html
from typing import Any

from simulators.cnda.repository import Event
from simulators.core.proof import html_page

_COVERAGE_LABELS = {
    "passed": "couvert, réussi",
    "failed": "ÉCHEC",
    "warned": "avertissement",
    "declared": "déclaré (à juger)",
    "uncovered": "NON COUVERT",
}
_COVERAGE_CSS = {
    "passed": "color:#1d6b2f",
    "failed": "color:#a40000;font-weight:bold",
    "warned": "color:#8a5a00",
    "declared": "color:#8a5a00",
    "uncovered": "color:#a40000;font-weight:bold",
}
_STATUS_CSS = (
    "border:3px solid #1b4f9c;padding:12px 18px;margin:12px 0;background:#eef3fb;font-size:1.1rem"
)


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _table(rows: list[tuple[str, str]]) -> str:
    return (
        "<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"
    )


def status_page(status: dict[str, Any], events: list[Event], *, captured_at: str) -> str:
    editor, software, exam = status["editor"], status["software"], status["exam"]
    components = ", ".join(
        f"{_e(c['name'])} {_e(c['version'])} (<code>{_e(c['nil'])}</code>)"
        for c in status["components"]
    )
    perimeter = "; ".join(
        f"{_e(axis)}: {_e(', '.join(values))}" for axis, values in status["perimeter"].items()
    )
    summary = (
        f'<div style="{_STATUS_CSS}">'
        f"<div>Statut : <strong>{_e(status['portalStatus'])}</strong></div>"
        f"<div>Étape : {_e(status['phase'])}</div>"
        f"<div>Date de retour prévue : <strong>{_e(status['expectedReturnDate'] or '-')}"
        "</strong></div></div>"
    )
    software_rows = [
        ("Éditeur", f"{_e(editor['name'])} (NIE <code>{_e(editor['nie'])}</code>)"),
        ("Logiciel", f"{_e(software['name'])} version {_e(software['version'])}"),
        ("NIL", f"<code>{_e(software['nil'])}</code>"),
        ("Composants", components or "aucun"),
        ("Service", _e(status["service"])),
        ("Périmètre", perimeter),
        ("Demande", f"<code>{_e(status['id'])}</code>"),
        ("Numéro provisoire", f"<code>{_e(status['provisionalNumber'] or '-')}</code>"),
        ("Numéro de production", f"<code>{_e(status['productionNumber'] or '-')}</code>"),
        ("Examen", f"{_e(exam['date'] or '-')} {_e(exam['mode'] or '')}"),
    ]
    plan = status.get("testPlan") or {}
    coverage = status["coverage"]
    covered = {c["id"]: c for c in coverage["cases"]}

    def case_row(case: dict[str, Any]) -> str:
        cover = covered.get(case["id"], {"status": "uncovered", "proofs": []})
        state = cover["status"]
        by = ", ".join(f"{_e(p['name'])} ({_e(p['outcome'])})" for p in cover["proofs"])
        return (
            f"<tr><td style='white-space:nowrap'><code>{_e(case['id'])}</code></td>"
            f"<td>{_e(case['title'])}</td>"
            f"<td>{_e(', '.join(case['requirements']))}</td><td>{_e(case['source'])}</td>"
            f"<td style='{_COVERAGE_CSS[state]}'>{_e(_COVERAGE_LABELS[state])}</td>"
            f"<td>{by or '-'}</td></tr>"
        )

    counts = coverage["counts"]
    plan_html = (
        f"<h2>Plan de tests {_e(plan.get('name'))} {_e(plan.get('version'))}</h2>"
        f"<p>Couverture par les preuves du tour {_e(coverage['round'])} : "
        f"<strong>{_e(counts['passed'])}/{_e(coverage['total'])}</strong> cas couverts par "
        "une preuve réussie"
        + (
            f" ; restent : {_e(', '.join(coverage['notPassed']))}"
            if coverage["notPassed"]
            else " (plan entièrement couvert)"
        )
        + ".</p>"
        "<table><tr><th>Cas</th><th>Intitulé</th><th>Exigences</th><th>Source</th>"
        f"<th>Couverture</th><th>Preuves</th></tr>"
        f"{''.join(case_row(c) for c in plan.get('cases', []))}</table>"
        if plan
        else "<h2>Plan de tests</h2><p>Pas encore envoyé.</p>"
    )
    proofs = "".join(
        f"<tr><td>{_e(p['round'])}</td><td>{_e(p['name'])}</td><td>{_e(p['kind'])}</td>"
        f"<td>{_e(p['result'] or '-')}</td>"
        f"<td>{_e(', '.join(f'{c} {o}' for c, o in p['cases'].items()) or '-')}</td>"
        f"<td class='hash'>{_e(p['sha256'])}</td></tr>"
        for p in status["proofs"]
    )
    documents = "".join(
        f"<tr><td>{_e(d['type'])}</td><td>{_e(d['filename'])}</td>"
        f"<td class='hash'>{_e(d['sha256'])}</td></tr>"
        for d in status["documents"]
    )
    steps = "".join(f"<li>{_e(s)}</li>" for s in status["nextSteps"]) or "<li>aucune</li>"
    log = "".join(
        f"<tr><td>{e.seq}</td><td>{_e(e.at)}</td><td>{_e(e.role)} / {_e(e.actor)}</td>"
        f"<td>{_e(e.action)}</td><td>{_e(e.from_state or '-')} &rarr; {_e(e.to_state)}</td>"
        f"<td>{_e(e.reason or '')}</td><td class='hash'>{_e(e.evidence_sha256 or '')}</td>"
        f"<td class='hash'>{_e(e.hash[:16])}</td></tr>"
        for e in events
    )
    chain = "intègre" if status["eventChainOk"] else "<strong>ALTÉRÉ</strong>"
    body = (
        f"<h1>Demande d'homologation {_e(status['id'])} &mdash; portail CNDA simulé</h1>"
        f"{summary}{_table(software_rows)}"
        f"<h2>Prochaines étapes</h2><ul>{steps}</ul>"
        f"{plan_html}"
        "<h2>Documents contractuels</h2><table><tr><th>Type</th><th>Fichier</th>"
        f"<th>sha256</th></tr>{documents}</table>"
        "<h2>Preuves de tests</h2><table><tr><th>Tour</th><th>Preuve</th><th>Type</th>"
        f"<th>Résultat</th><th>Cas couverts</th><th>sha256</th></tr>{proofs}</table>"
        f"<h2>Journal (chaîne de hachage {chain})</h2>"
        "<table><tr><th>#</th><th>Quand</th><th>Qui</th><th>Action</th><th>Transition</th>"
        f"<th>Motif</th><th>Preuve sha256</th><th>Hash</th></tr>{log}</table>"
        f"<p>Capture du {_e(captured_at)}.</p>"
    )
    return html_page(f"CNDA {status['id']} {status['portalStatus']}", body)
