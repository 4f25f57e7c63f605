"""Every move the state machine table does not allow is refused, on every surface.

The pairs come from the tables in ``simulators/cnda/states.py`` (TRANSITIONS,
DOCUMENT_STATES, PROOF_STATES), not from a hand-picked list: for each state, a real
dossier is walked there, then every action whose ``sources`` do not include the
state is tried by every role the table allows for it, through the service, the REST
API and the command line. Each refusal must name the action and the state, and leave
the dossier and its event log exactly as they were. The deposits are checked the same
way, and the allowed pairs are checked to succeed, so the table cannot drift from the
code in either direction.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from cnda_support import DMP_PSC, BundleMaker, walk_to
from fastapi.testclient import TestClient

from simulators.cli import cli
from simulators.cnda.api import ROLE_HEADER, create_app
from simulators.cnda.errors import IllegalTransitionError
from simulators.cnda.service import CndaService
from simulators.cnda.states import (
    DOCUMENT_STATES,
    PROOF_STATES,
    TERMINAL,
    TRANSITIONS,
    Action,
    DocumentType,
    Role,
    State,
)
from simulators.core.config import DataDir

ILLEGAL: dict[State, list[Action]] = {
    state: [a for a in Action if state not in TRANSITIONS[a].sources] for state in State
}
ALL_ILLEGAL_PAIRS = [(s, a) for s, actions in ILLEGAL.items() for a in actions]
PARAMS = {"reason": "r", "exam_date": "2030-01-01", "exam_mode": "remote"}


def test_the_table_is_what_the_docs_say() -> None:
    # 9 states x 10 actions; 16 allowed pairs (abandon from each of the 7 open states).
    assert len(State) * len(Action) - len(ALL_ILLEGAL_PAIRS) == 16
    assert ILLEGAL[State.CONFORME] == list(Action) and ILLEGAL[State.ABANDONNE] == list(Action)
    assert all(Action.ABANDON not in ILLEGAL[s] for s in State if s not in TERMINAL)


def snapshot(service: CndaService, request_id: str) -> tuple[Any, ...]:
    return (
        service.dossier(request_id),
        service.repo.events(request_id),
        service.repo.proofs(request_id),
        service.repo.documents(request_id),
    )


@pytest.mark.parametrize(("state", "action"), ALL_ILLEGAL_PAIRS, ids=str)
def test_service_refuses_every_illegal_transition_for_every_role(
    service: CndaService, make_bundle: BundleMaker, state: State, action: Action
) -> None:
    dossier = walk_to(service, make_bundle, state)
    before = snapshot(service, dossier.id)
    for role in sorted(TRANSITIONS[action].roles):
        with pytest.raises(IllegalTransitionError) as caught:
            service.transition(dossier.id, action.value, role=role.value, **PARAMS)
        assert f"cannot {action.value} while the dossier is {state.value}" in str(caught.value)
        assert snapshot(service, dossier.id) == before, (role, action)


@pytest.fixture
def client(service: CndaService) -> Iterator[TestClient]:
    with TestClient(create_app(service=service)) as test_client:
        yield test_client


@pytest.mark.parametrize("state", list(State), ids=str)
def test_api_answers_409_to_every_illegal_transition(
    service: CndaService, client: TestClient, make_bundle: BundleMaker, state: State
) -> None:
    dossier = walk_to(service, make_bundle, state)
    before = snapshot(service, dossier.id)
    for action in ILLEGAL[state]:
        for role in sorted(TRANSITIONS[action].roles):
            response = client.post(
                f"/api/cnda/requests/{dossier.id}/actions/{action.value}",
                json=PARAMS,
                headers={ROLE_HEADER: role.value},
            )
            assert response.status_code == 409, (action, role, response.text)
            detail = response.json()["detail"]
            assert f"cannot {action.value} while the dossier is {state.value}" in detail
            assert snapshot(service, dossier.id) == before, (action, role)


def cli_commands(action: Action) -> list[list[str]]:
    """Every ``segur-sim cnda`` command that applies ``action`` (one per role offering it)."""
    spec = TRANSITIONS[action]
    commands = []
    if Role.AGENT in spec.roles and action is not Action.COMPLETE:
        commands.append(["agent", action.value])
    if Role.EDITOR in spec.roles:
        commands.append(["request", action.value])
    dated = action in (Action.SCHEDULE_EXAM, Action.FAIL_EXAM)
    options = ["--reason", "r", *(["--date", "2030-01-01"] if dated else [])]
    return [[*command, "{rid}", *options] for command in commands]


def test_every_action_has_a_cli_command() -> None:
    assert all(cli_commands(action) for action in Action)


@pytest.mark.parametrize("state", list(State), ids=str)
def test_cli_exits_2_on_every_illegal_transition(
    service: CndaService, data_dir: DataDir, make_bundle: BundleMaker, state: State
) -> None:
    dossier = walk_to(service, make_bundle, state)
    before = snapshot(service, dossier.id)
    runner = CliRunner()
    for action in ILLEGAL[state]:
        for command in cli_commands(action):
            args = [a.replace("{rid}", dossier.id) for a in command]
            result = runner.invoke(cli, ["cnda", "--data-dir", str(data_dir.root), *args])
            assert result.exit_code == 2, (args, result.output, result.exception)
            assert f"cannot {action.value} while the dossier is {state.value}" in result.output
            assert "Traceback" not in result.output
            assert snapshot(service, dossier.id) == before, args


@pytest.mark.parametrize("state", list(State), ids=str)
def test_deposits_follow_the_table(
    service: CndaService, client: TestClient, make_bundle: BundleMaker, state: State
) -> None:
    """Documents and proofs: refused (409, unchanged) outside their states, taken inside."""
    dossier = walk_to(service, make_bundle, state, DMP_PSC)
    rid = dossier.id
    before = snapshot(service, rid)
    allowed_docs = [d for d in DocumentType if state in DOCUMENT_STATES[d]]
    for doc in (d for d in DocumentType if d not in allowed_docs):
        with pytest.raises(IllegalTransitionError, match=f"cannot deposit {doc.value} while"):
            service.deposit_document(rid, doc.value, "d.pdf", b"%PDF refused")
        response = client.post(
            f"/api/cnda/requests/{rid}/documents",
            data={"doc_type": doc.value},
            files={"file": ("d.pdf", b"%PDF refused", "application/pdf")},
            headers={ROLE_HEADER: "editor"},
        )
        assert response.status_code == 409, (doc, response.text)
        assert snapshot(service, rid) == before, doc
    if state not in PROOF_STATES:
        with pytest.raises(IllegalTransitionError, match="cannot deposit proofs while"):
            service.deposit_proof(rid, make_bundle())
        response = client.post(
            f"/api/cnda/requests/{rid}/proofs",
            files={"file": ("capture.png", b"\x89PNG refused", "image/png")},
            headers={ROLE_HEADER: "editor"},
        )
        assert response.status_code == 409, response.text
        assert "closed" in response.json()["detail"] or state not in TERMINAL
        assert snapshot(service, rid) == before
    # The allowed side of the table: each deposit is taken and leaves the state alone.
    for doc in allowed_docs:
        service.deposit_document(rid, doc.value, "ok.pdf", f"%PDF {doc.value}".encode())
    if state in PROOF_STATES:
        service.deposit_proof(rid, make_bundle())
    taken = len(allowed_docs) + (state in PROOF_STATES)
    assert len(service.repo.events(rid)) == len(before[1]) + taken
    assert service.dossier(rid).state == state
    assert service.verify_events(rid) == []


# ---- unknown identifiers, on every route and command that takes one ------------------------
UNKNOWN = {
    "request_id": "SIMU-DOS-ZZZZZZ",
    "nie": "SIMU-NIE-ZZZZZZ",
    "nil": "SIMU-NIL-ZZZZZZ",
}


def test_every_api_route_reports_unknown_ids(client: TestClient) -> None:
    checked = 0
    # The routes as the OpenAPI document publishes them: every one taking an ID.
    for template, operations in client.get("/openapi.json").json()["paths"].items():
        names = [n for n in UNKNOWN if "{" + n + "}" in template]
        if not names:
            continue
        path = template.replace("{action}", "validate")
        for name in names:
            path = path.replace("{" + name + "}", UNKNOWN[name])
        for method in (m.upper() for m in operations):
            role = "agent" if path.endswith(("/agent/run", "/actions/validate")) else "editor"
            kwargs: dict[str, Any] = {"headers": {ROLE_HEADER: role}}
            if path.endswith(("/documents", "/proofs")):
                kwargs["data"] = {"doc_type": "contract_request"}
                kwargs["files"] = {"file": ("f.pdf", b"%PDF", "application/pdf")}
            elif method == "POST":
                kwargs["json"] = {"name": "N", "version": "1"}
            response = client.request(method, path, **kwargs)
            assert response.status_code == 404, (method, path, response.text)
            assert any(UNKNOWN[n] in response.json()["detail"] for n in names), path
            checked += 1
    # Opening a request names an unknown editor or software too.
    for body in ({"nie": UNKNOWN["nie"], "nil": UNKNOWN["nil"]},):
        response = client.post(
            "/api/cnda/requests",
            json={**body, "service": "DMP", "perimeter": {}},
            headers={ROLE_HEADER: "editor"},
        )
        assert response.status_code == 404 and UNKNOWN["nie"] in response.json()["detail"]
    assert checked >= 15


def _commands(group: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    import click

    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))
        else:
            yield (*prefix, name), command


def test_every_cli_command_reports_unknown_ids(data_dir: DataDir, tmp_path: Any) -> None:
    import click

    from simulators.cnda.cli import cnda

    sample = tmp_path / "sample.pdf"
    sample.write_bytes(b"%PDF sample")
    fillers = {"path": str(sample), "file": str(sample), "service_id": "DMP"}
    required_options = {
        "reason": ["--reason", "r"],
        "date": ["--date", "2030-01-01"],
        "doc_type": ["--type", "contract_request"],
        "nie": ["--nie", UNKNOWN["nie"]],
        "nil": ["--nil", UNKNOWN["nil"]],
        "service_id": ["--service", "DMP"],
        "name": ["--name", "N"],
        "version": ["--version", "1"],
    }
    checked = 0
    for words, command in _commands(cnda):
        ids = [
            p.name
            for p in command.params
            if p.name in UNKNOWN and (isinstance(p, click.Argument) or p.required)
        ]
        if not ids:
            continue
        args: list[str] = list(words)
        for param in command.params:
            if isinstance(param, click.Argument):
                args.append(UNKNOWN.get(param.name or "", fillers.get(param.name or "", "")))
            elif param.required and param.name in required_options:
                args += required_options[param.name or ""]
        result = CliRunner().invoke(cli, ["cnda", "--data-dir", str(data_dir.root), *args])
        assert result.exit_code == 2, (args, result.output, result.exception)
        assert "unknown" in result.output and "Traceback" not in result.output, args
        assert any(value in result.output for value in UNKNOWN.values()), args
        checked += 1
    assert checked >= 15
