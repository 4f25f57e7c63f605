"""``segur-sim cnda``: the CNDA mock from the command line, for both roles.

Errors (unknown ID, illegal transition, bad input, refused proof) print one clear
message on stderr and exit with code 2, never a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from simulators.cnda.attestation import verify_attestation
from simulators.cnda.catalogue import CatalogueError
from simulators.cnda.errors import CndaError, ProofRefusedError
from simulators.cnda.pages import status_page
from simulators.cnda.repository import Event
from simulators.cnda.service import CndaService
from simulators.cnda.states import TRANSITIONS, Action, Role
from simulators.core.config import DEFAULT_DATA_DIR, DataDir
from simulators.core.proof import utc_now_iso
from simulators.core.store.database import Database


class CliError(click.ClickException):
    exit_code = 2


class _CndaGroup(click.Group):
    """Turns the mock's errors into exit code 2 with a message, for every subcommand."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ProofRefusedError as exc:
            details = "".join(f"\n  - {p}" for p in exc.problems)
            raise CliError(f"{exc.message}{details}") from exc
        except (CndaError, CatalogueError) as exc:
            raise CliError(str(exc)) from exc


class _Context:
    def __init__(self, data_dir: Path | None) -> None:
        self.data_dir = data_dir
        self._service: CndaService | None = None
        self._db: Database | None = None

    @property
    def service(self) -> CndaService:
        if self._service is None:
            data = DataDir.open(self.data_dir)
            self._db = Database(data.db_path)
            self._service = CndaService(self._db, data)
        return self._service

    def close(self) -> None:
        if self._db is not None:
            self._db.close()


def _svc() -> CndaService:
    return click.get_current_context().find_object(_Context).service  # type: ignore[union-attr]


def _emit(as_json: bool, payload: Any, text: str) -> None:
    if as_json:
        click.echo(json.dumps(payload, indent=2, ensure_ascii=False, default=str))
    else:
        click.echo(text)


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@click.group(cls=_CndaGroup)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=f"Data directory (default: $SEGUR_SIM_DATA_DIR or {DEFAULT_DATA_DIR}).",
)
@click.pass_context
def cnda(ctx: click.Context, data_dir: Path | None) -> None:
    """CNDA homologation portal mock (SIMULATION: issues no real number or attestation)."""
    state = _Context(data_dir)
    ctx.obj = state
    ctx.call_on_close(state.close)


# ---- catalogue --------------------------------------------------------------------------
@cnda.command("services")
@json_option
def services(as_json: bool) -> None:
    """List the services and their perimeter axes (from testcases/cnda)."""
    catalogue = _svc().catalogue
    payload = []
    lines = []
    for service in catalogue.services.values():
        axes = {d.id: list(d.values) for d in service.dimensions}
        payload.append({"id": service.id, "name": service.name, "perimeter": axes})
        lines.append(f"{service.id}: {service.name}")
        lines += [f"  --perimeter {axis}=" + ",".join(values) for axis, values in axes.items()]
    _emit(as_json, payload, "\n".join(lines))


@cnda.command("test-plan")
@click.argument("service_id", metavar="SERVICE")
@click.option("--perimeter", "-p", multiple=True, help="axis=value[,value...] (repeatable)")
@json_option
def test_plan(service_id: str, perimeter: tuple[str, ...], as_json: bool) -> None:
    """Preview the test plan a perimeter selects."""
    service = _svc().catalogue.service(service_id)
    chosen = service.check_perimeter(_parse_perimeter(perimeter))
    cases = service.test_plan_for(chosen)
    text = "\n".join(
        [f"{service.test_plan} {service.test_plan_version}: {len(cases)} case(s)"]
        + [f"  {c.id:<16} {c.title}  [{', '.join(c.requirements)}]" for c in cases]
    )
    _emit(as_json, [c.as_dict() for c in cases], text)


# ---- editor and software ----------------------------------------------------------------
@cnda.group()
def editor() -> None:
    """Editors (NIE)."""


@editor.command("register")
@click.option("--name", required=True)
@click.option("--email", default="", help="Contact address.")
@json_option
def editor_register(name: str, email: str, as_json: bool) -> None:
    """Register an editor; prints its NIE."""
    created = _svc().register_editor(name, email)
    _emit(as_json, created.__dict__, created.nie)


@editor.command("show")
@click.argument("nie")
@json_option
def editor_show(nie: str, as_json: bool) -> None:
    service = _svc()
    found = service.editor(nie)
    software = [s.__dict__ for s in service.repo.software_of(nie)]
    text = f"{found.nie} {found.name}\n" + "\n".join(
        f"  {s['nil']} {s['name']} {s['version']}"
        + (f" (component of {s['parent_nil']})" if s["parent_nil"] else "")
        for s in software
    )
    _emit(as_json, {**found.__dict__, "software": software}, text.rstrip())


@cnda.group()
def software() -> None:
    """Software and components (NIL)."""


@software.command("create")
@click.option("--nie", required=True, help="The editor's NIE.")
@click.option("--name", required=True)
@click.option("--version", "version", required=True)
@click.option("--component-of", default=None, metavar="NIL", help="Create a component.")
@json_option
def software_create(
    nie: str, name: str, version: str, component_of: str | None, as_json: bool
) -> None:
    """Create software (or a component); prints its NIL."""
    created = _svc().create_software(nie, name, version, component_of=component_of)
    _emit(as_json, created.__dict__, created.nil)


@software.command("show")
@click.argument("nil")
@json_option
def software_show(nil: str, as_json: bool) -> None:
    service = _svc()
    found = service.software(nil)
    components = [c.__dict__ for c in service.repo.components_of(nil)]
    text = f"{found.nil} {found.name} {found.version} (editor {found.nie})" + "".join(
        f"\n  component {c['nil']} {c['name']} {c['version']}" for c in components
    )
    _emit(as_json, {**found.__dict__, "components": components}, text)


# ---- requests (editor side) -------------------------------------------------------------
@cnda.group()
def request() -> None:
    """Homologation requests: open, list, and the editor's actions."""


@request.command("open")
@click.option("--nie", required=True)
@click.option("--nil", required=True)
@click.option("--service", "service_id", required=True, help="DMP, INSi, e-prescription, ApCV...")
@click.option("--perimeter", "-p", multiple=True, help="axis=value[,value...] (repeatable)")
@click.option("--component", multiple=True, metavar="NIL", help="Default: all components.")
@json_option
def request_open(
    nie: str,
    nil: str,
    service_id: str,
    perimeter: tuple[str, ...],
    component: tuple[str, ...],
    as_json: bool,
) -> None:
    """Open a homologation request; prints its ID."""
    service = _svc()
    dossier = service.open_request(
        nie, nil, service_id, _parse_perimeter(perimeter), components=list(component) or None
    )
    _emit(as_json, service.status(dossier.id), dossier.id)


@request.command("list")
@click.option("--nie", default=None)
@json_option
def request_list(nie: str | None, as_json: bool) -> None:
    service = _svc()
    statuses = [service.status(d.id) for d in service.repo.dossiers(nie)]
    text = "\n".join(
        f"{s['id']}  {s['service']:<14} {s['software']['name']} {s['software']['version']}  "
        f"{s['portalStatus']}"
        for s in statuses
    )
    _emit(as_json, statuses, text)


def _transition_command(group: click.Group, action: Action, role: Role) -> None:
    spec = TRANSITIONS[action]
    needs_date = action in (Action.SCHEDULE_EXAM, Action.FAIL_EXAM)

    @click.argument("request_id", metavar="REQUEST")
    @click.option("--reason", required=spec.needs_reason)
    @json_option
    def command(request_id: str, reason: str | None, as_json: bool, **kwargs: Any) -> None:
        service = _svc()
        dossier = service.transition(
            request_id,
            action.value,
            role=role.value,
            actor=f"{role.value}:cli",
            reason=reason,
            exam_date=kwargs.get("date"),
            exam_mode=kwargs.get("mode"),
        )
        status = service.status(dossier.id)
        _emit(as_json, status, f"{dossier.id}: {status['portalStatus']} ({dossier.state})")

    if needs_date:
        label = "New exam date" if action is Action.FAIL_EXAM else "Exam date"
        command = click.option("--date", required=True, help=f"{label}, YYYY-MM-DD.")(command)
        command = click.option("--mode", type=click.Choice(["remote", "in_person"]), default=None)(
            command
        )
    group.command(action.value, help=spec.summary[0].upper() + spec.summary[1:] + ".")(command)


for _action in (Action.RESUBMIT, Action.COMPLETE, Action.ABANDON):
    _transition_command(request, _action, Role.EDITOR)


# ---- deposits ---------------------------------------------------------------------------
@cnda.group()
def document() -> None:
    """Contractual documents (contract request, signed conditions, PSC receipts...)."""


@document.command("deposit")
@click.argument("request_id", metavar="REQUEST")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--type",
    "doc_type",
    required=True,
    type=click.Choice(
        [
            "contract_request",
            "signed_conditions",
            "psc_maturity_attestation",
            "psc_habilitation_receipt",
            "satisfaction_questionnaire",
        ]
    ),
)
@json_option
def document_deposit(request_id: str, file: Path, doc_type: str, as_json: bool) -> None:
    deposited = _svc().deposit_document(request_id, doc_type, file.name, file.read_bytes())
    _emit(as_json, deposited.__dict__, f"{deposited.doc_type} {deposited.sha256}")


@cnda.group()
def proof() -> None:
    """Test proofs."""


@proof.command("deposit")
@click.argument("request_id", metavar="REQUEST")
@click.argument("path", type=click.Path(exists=True, path_type=Path), metavar="BUNDLE_DIR|FILE")
@click.option(
    "--case",
    "cases",
    multiple=True,
    metavar="CASE_ID",
    help="A test-plan case this proof covers (repeatable). A file covers only the cases "
    "declared; a bundle's own test lists are read anyway.",
)
@json_option
def proof_deposit(request_id: str, path: Path, cases: tuple[str, ...], as_json: bool) -> None:
    """Deposit a proof bundle (verified) or any file (hashed)."""
    deposited = _svc().deposit_proof(request_id, path, cases=list(cases))
    verdict = f" {deposited.result}" if deposited.result else ""
    covered = deposited.details.get("cases", {})
    summary = ", ".join(f"{c} {o}" for c, o in covered.items()) or "no plan case"
    _emit(
        as_json,
        deposited.__dict__,
        f"{deposited.kind} {deposited.name}{verdict} sha256 {deposited.sha256} "
        f"(round {deposited.round}); covers {summary}",
    )


@cnda.command("coverage")
@click.argument("request_id", metavar="REQUEST")
@json_option
def coverage(request_id: str, as_json: bool) -> None:
    """Which test-plan cases the current round's proofs cover; exit 1 if not all passed."""
    found = _svc().coverage(request_id)
    lines = [
        f"round {found['round']}: {found['counts']['passed']}/{found['total']} plan case(s) "
        f"passed" + ("" if found["planSent"] else " (test plan not sent yet)")
    ]
    for case in found["cases"]:
        proofs = ", ".join(f"{p['name']} ({p['outcome']})" for p in case["proofs"]) or "-"
        lines.append(f"  {case['id']:<16} {case['status']:<9} {proofs}")
    _emit(as_json, found, "\n".join(lines))
    if not found["complete"]:
        sys.exit(1)


# ---- reading ----------------------------------------------------------------------------
@cnda.command("status")
@click.argument("request_id", metavar="REQUEST")
@click.option(
    "--html",
    "html_out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the status page (portal screenshot stand-in) to this file.",
)
@json_option
def status(request_id: str, html_out: Path | None, as_json: bool) -> None:
    """Show a request's status."""
    service = _svc()
    current = service.status(request_id)
    if html_out is not None:
        page = status_page(current, service.events(request_id), captured_at=utc_now_iso())
        html_out.write_text(page, encoding="utf-8")
    software_line = f"{current['software']['name']} {current['software']['version']}"
    chain = "ok" if current["eventChainOk"] else "BROKEN"
    lines = [
        f"{current['id']}  [SIMULATION]",
        f"  editor      {current['editor']['name']} ({current['editor']['nie']})",
        f"  software    {software_line} ({current['software']['nil']})",
        f"  service     {current['service']} {json.dumps(current['perimeter'])}",
        f"  status      {current['portalStatus']} - {current['phase']} ({current['state']})",
        f"  return date {current['expectedReturnDate'] or '-'}",
        f"  provisional {current['provisionalNumber'] or '-'}",
        f"  production  {current['productionNumber'] or '-'}",
        f"  proofs      {len(current['proofs'])} (round {current['round']})",
        f"  plan cases  {current['coverage']['counts']['passed']}/"
        f"{current['coverage']['total']} passed"
        + (
            f"; not yet: {', '.join(current['coverage']['notPassed'])}"
            if current["coverage"]["notPassed"]
            else ""
        ),
        f"  events      {current['events']} (chain {chain})",
    ]
    lines += [f"  next        {step}" for step in current["nextSteps"]]
    _emit(as_json, current, "\n".join(lines))


def _event_line(event: Event) -> str:
    move = event.to_state if event.from_state is None else f"{event.from_state}->{event.to_state}"
    reason = f"  ({event.reason})" if event.reason else ""
    return f"#{event.seq:<3} {event.at} {event.role}/{event.actor} {event.action} {move}{reason}"


@cnda.command("events")
@click.argument("request_id", metavar="REQUEST")
@click.option("--verify", is_flag=True, help="Check the hash chain; exit 1 when broken.")
@json_option
def events(request_id: str, verify: bool, as_json: bool) -> None:
    """Show a request's event log."""
    service = _svc()
    log = service.events(request_id)
    problems = service.verify_events(request_id) if verify else []
    payload: dict[str, Any] = {"events": [e.__dict__ for e in log]}
    if verify:
        payload["chainOk"] = not problems
        payload["problems"] = problems
    text = "\n".join(_event_line(e) for e in log)
    if verify:
        text += "\nchain: " + ("ok" if not problems else "BROKEN\n  - " + "\n  - ".join(problems))
    _emit(as_json, payload, text)
    if problems:
        sys.exit(1)


# ---- the CNDA agent ---------------------------------------------------------------------
@cnda.group()
def agent() -> None:
    """The CNDA agent's actions (the simulator has no login: you are the agent)."""


for _action in Action:
    if Role.AGENT in TRANSITIONS[_action].roles and _action is not Action.COMPLETE:
        _transition_command(agent, _action, Role.AGENT)


@agent.command("run")
@click.argument("request_id", metavar="REQUEST")
@json_option
def agent_run(request_id: str, as_json: bool) -> None:
    """Let the automated rules act until the dossier waits on the editor (for CI)."""
    service = _svc()
    report = service.run_agent(request_id)
    payload = {
        "done": [e.__dict__ for e in report.done],
        "waitingFor": report.waiting_for,
        "state": service.dossier(request_id).state,
    }
    text = "\n".join(_event_line(e) for e in report.done) or "nothing to do"
    text += "".join(f"\nwaiting for: {w}" for w in report.waiting_for)
    _emit(as_json, payload, text)


# ---- attestation ------------------------------------------------------------------------
@cnda.group()
def attestation() -> None:
    """The attestation de conformité (signed, SIMULATION)."""


@attestation.command("show")
@click.argument("request_id", metavar="REQUEST")
@json_option
def attestation_show(request_id: str, as_json: bool) -> None:
    """Print where a request's attestation is, and what it says."""
    directory = _svc().attestation_dir(request_id)
    document = json.loads((directory / "attestation.json").read_text(encoding="utf-8"))
    text = (
        f"{directory}\n  production number {document['productionNumber']}\n"
        f"  issued {document['issuedAt']}, valid until {document['validUntil']}\n"
        f"  proofs relied on: {len(document['proofs'])}"
    )
    _emit(as_json, {"directory": str(directory), "attestation": document}, text)


@attestation.command("verify")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--ca",
    "ca_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Trusted root (PEM). Default: DATA_DIR/pki/root.pem if present, else the copy "
    "shipped with the attestation (integrity only).",
)
@json_option
@click.pass_context
def attestation_verify(
    ctx: click.Context, directory: Path, ca_file: Path | None, as_json: bool
) -> None:
    """Verify an attestation directory; exit 0 valid, 1 invalid."""
    if ca_file is None:
        state = ctx.find_object(_Context)
        root = (state.data_dir if state and state.data_dir else DEFAULT_DATA_DIR) / "pki"
        ca_file = root / "root.pem" if (root / "root.pem").is_file() else None
    check = verify_attestation(directory, ca_file=ca_file)
    payload = {"ok": check.ok, "problems": check.problems, "notes": check.notes}
    text = (
        ("VALID" if check.ok else "INVALID")
        + f": {directory}"
        + "".join(f"\n  - {p}" for p in check.problems)
    )
    for note in check.notes:
        click.echo(f"note: {note}", err=True)
    _emit(as_json, payload, text)
    sys.exit(0 if check.ok else 1)


def _parse_perimeter(items: tuple[str, ...]) -> dict[str, list[str]]:
    perimeter: dict[str, list[str]] = {}
    for item in items:
        axis, sep, values = item.partition("=")
        if not sep or not axis.strip() or not values.strip():
            raise CliError(f"--perimeter {item!r}: expected axis=value[,value...]")
        perimeter.setdefault(axis.strip(), []).extend(
            v.strip() for v in values.split(",") if v.strip()
        )
    return perimeter
