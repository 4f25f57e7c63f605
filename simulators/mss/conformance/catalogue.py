"""The MSS unit tests, referencing cases and requirements, read from ``testcases/mss``.

Definitions are loaded once and validated against what the code knows (stages, client
actions, runner actions, registered checks), so that a typo in a reviewed TOML file is
an error at load time with the file name, not a surprise in the middle of a run.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from simulators.core.store.mail import MailboxType
from simulators.core.testcases import TESTCASES_ENV, testcases_dir

STAGES = (
    "none",
    "tls-legacy-only",
    "weak-dh",
    "cert-expired",
    "cert-revoked",
    "cert-foreign",
    "reject-tokens",
)
CLIENT_ACTIONS = (
    "send-mail",
    "send-mail-with-cda",
    "read-mail",
    "send-and-read",
    "autoconfig-then-connect",
    "keep-session-open",
    "reply-to-mail",
    "return-mdn",
    "send-to-patient",
)
RUNNER_ACTIONS = ("drop-sessions", "revoke-refresh", "deliver-mail")


class CatalogueError(ValueError):
    """A catalogue file that does not load, or a reference to something unknown."""


@dataclass(frozen=True)
class Step:
    id: str
    action: str
    stage: str
    instruction: str
    runner_action: str | None


@dataclass(frozen=True)
class UnitTest:
    id: str
    name: str
    title: str
    mailbox_types: tuple[MailboxType, ...]
    requirements: tuple[str, ...]
    timeout: float
    verdict_rule: str
    steps: tuple[Step, ...]
    source: Path

    @property
    def label(self) -> str:
        return f"{self.id} {self.name}"

    def step(self, step_id: str) -> Step:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)


@dataclass(frozen=True)
class ReferencingCase:
    id: str
    suite: str
    title: str
    ans_names: tuple[str, ...]
    mailbox_types: tuple[MailboxType, ...]
    tests: tuple[str, ...]
    rule: str


@dataclass(frozen=True)
class Requirement:
    id: str
    aliases: tuple[str, ...]
    text: str
    not_testable: str | None
    partial: str | None

    @property
    def ids(self) -> tuple[str, ...]:
        return (self.id, *self.aliases)


@dataclass(frozen=True)
class Catalogue:
    tests: dict[str, UnitTest]
    cases: dict[str, ReferencingCase]
    requirements: dict[str, Requirement]
    directory: Path

    def test(self, test_id: str) -> UnitTest:
        try:
            return self.tests[test_id.upper()]
        except KeyError:
            raise CatalogueError(
                f"unknown test {test_id!r}; known: {', '.join(sorted(self.tests))}"
            ) from None

    def suite(self, suite: str) -> ReferencingCase:
        for case in self.cases.values():
            if case.suite == suite.lower() or case.id.lower() == suite.lower():
                return case
        known = ", ".join(c.suite for c in self.cases.values())
        raise CatalogueError(f"unknown suite {suite!r}; known: {known}")

    def requirement_for(self, ref: str) -> Requirement | None:
        for req in self.requirements.values():
            if ref in req.ids:
                return req
        return None

    def tests_for_requirement(self, requirement: Requirement) -> list[UnitTest]:
        ids = set(requirement.ids)
        return [t for t in self.tests.values() if ids & set(t.requirements)]


def _need(data: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = data.get(key)
    if not isinstance(value, kind):
        raise CatalogueError(f"{where}: `{key}` must be a {kind.__name__}, got {value!r}")
    return value


def _types(values: list[Any], where: str) -> tuple[MailboxType, ...]:
    try:
        return tuple(MailboxType(v) for v in values)
    except ValueError as exc:
        raise CatalogueError(f"{where}: {exc}") from None


def _load_test(path: Path) -> UnitTest:
    where = path.name
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CatalogueError(f"{where}: {exc}") from None
    test_id = _need(data, "id", str, where)
    if path.stem != test_id:
        raise CatalogueError(f"{where}: the file name must be the test ID ({test_id})")
    default_action = data.get("runner_action")
    steps = []
    for i, raw in enumerate(_need(data, "steps", list, where), 1):
        swhere = f"{where} step {i}"
        action = _need(raw, "action", str, swhere)
        stage = raw.get("stage", "none")
        runner_action = raw.get("runner_action", default_action)
        if action not in CLIENT_ACTIONS:
            raise CatalogueError(f"{swhere}: unknown action {action!r}; known: {CLIENT_ACTIONS}")
        if stage not in STAGES:
            raise CatalogueError(f"{swhere}: unknown stage {stage!r}; known: {STAGES}")
        if runner_action is not None and runner_action not in RUNNER_ACTIONS:
            raise CatalogueError(f"{swhere}: unknown runner_action {runner_action!r}")
        steps.append(
            Step(
                _need(raw, "id", str, swhere),
                action,
                stage,
                _need(raw, "instruction", str, swhere).strip(),
                runner_action,
            )
        )
    if len({s.id for s in steps}) != len(steps):
        raise CatalogueError(f"{where}: step IDs must be unique")
    return UnitTest(
        id=test_id,
        name=_need(data, "name", str, where),
        title=_need(data, "title", str, where),
        mailbox_types=_types(_need(data, "mailbox_types", list, where), where),
        requirements=tuple(_need(data, "requirements", list, where)),
        timeout=float(_need(data, "timeout", int, where)),
        verdict_rule=_need(data, "verdict", str, where).strip(),
        steps=tuple(steps),
        source=path,
    )


def load_catalogue(directory: Path | None = None) -> Catalogue:
    directory = directory or testcases_dir("mss")
    files = sorted((directory / "tests").glob("*.toml"))
    if not files:
        raise CatalogueError(
            f"no MSS unit tests in {directory / 'tests'}; set {TESTCASES_ENV} to the "
            "testcases directory"
        )
    tests = {t.id: t for t in map(_load_test, files)}
    try:
        cases_data = tomllib.loads((directory / "cases.toml").read_text(encoding="utf-8"))
        req_data = tomllib.loads((directory / "requirements.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CatalogueError(f"{directory}: {exc}") from None
    requirements: dict[str, Requirement] = {}
    for raw in req_data.get("requirement", []):
        where = f"requirements.toml {raw.get('id')}"
        req = Requirement(
            _need(raw, "id", str, where),
            tuple(raw.get("aliases", [])),
            _need(raw, "text", str, where),
            raw.get("not_testable"),
            raw.get("partial"),
        )
        requirements[req.id] = req
    known_refs = {ref for r in requirements.values() for ref in r.ids}
    for test in tests.values():
        unknown = [r for r in test.requirements if r not in known_refs]
        if unknown:
            raise CatalogueError(f"{test.source.name}: unknown requirement(s) {unknown}")
    cases: dict[str, ReferencingCase] = {}
    for raw in cases_data.get("case", []):
        where = f"cases.toml {raw.get('id')}"
        case = ReferencingCase(
            _need(raw, "id", str, where),
            _need(raw, "suite", str, where),
            _need(raw, "title", str, where),
            tuple(raw.get("ans_names", [])),
            _types(_need(raw, "mailbox_types", list, where), where),
            tuple(_need(raw, "tests", list, where)),
            _need(raw, "rule", str, where),
        )
        missing = [t for t in case.tests if t not in tests]
        if missing:
            raise CatalogueError(f"{where}: unknown unit test(s) {missing}")
        for test_id in case.tests:
            wrong = set(case.mailbox_types) - set(tests[test_id].mailbox_types)
            if wrong:
                raise CatalogueError(
                    f"{where}: {test_id} does not apply to {sorted(t.value for t in wrong)}"
                )
        cases[case.id] = case
    return Catalogue(tests, cases, requirements, directory)


@lru_cache(maxsize=1)
def default_catalogue() -> Catalogue:
    return load_catalogue()
