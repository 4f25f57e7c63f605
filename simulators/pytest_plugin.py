"""pytest plugin of segur-sim, for editors who write their CI tests in Python.

Registered through the ``pytest11`` entry point, so installing segur-sim is enough.
Fixtures (all named ``segur_*``):

- ``segur_sim``: a :class:`~simulators.controller.SimulatorController` running every
  simulator in a background thread, on free loopback ports, with a temporary data
  directory. Function-scoped by default (each test gets fresh servers, about 1 s);
  ``--segur-sim-scope=session`` (or ``segur_sim_scope = session`` in the ini file)
  shares one simulator across the whole run.
- ``segur_per_mailbox``, ``segur_org_mailbox``: a new PER/ORG test mailbox with a PSC
  access token and refresh token.
- ``segur_app_mailbox``: a new APP mailbox with its ORG AUTH_CLI certificate, key and
  PKCS#12 (password ``segur-sim``).

- ``segur_run_suite``: :func:`run_suite` bound to ``segur_sim``: runs an MSS
  conformance suite (or a few of its unit tests) against a client command, by default
  the built-in reference client; :func:`assert_suite_passed` fails the test with each
  failed unit test's message, expected and observed values and requirements.

Each mailbox is a :class:`SegurMailbox`: address, credentials, ports, TLS contexts,
and ``smtp()`` / ``imap()`` helpers that return clients already past STARTTLS and
authentication. Mailbox addresses are unique per test, so they also work with a
session-scoped simulator. See docs/web.md for a complete example.

This module is imported by every pytest run once segur-sim is installed: it imports
nothing heavy until a fixture is used.
"""

from __future__ import annotations

import base64
import imaplib
import itertools
import smtplib
import ssl
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from simulators.controller import SimulatorController
    from simulators.mss.conformance.runs import RunRecord

DOMAIN_DEFAULT = "mssante.localhost"
P12_PASSWORD = "segur-sim"
_counter = itertools.count(1)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("segur-sim", "segur-sim simulator fixtures")
    group.addoption(
        "--segur-sim-scope",
        choices=("function", "module", "session"),
        default=None,
        help="Scope of the segur_sim fixture (default: function, or the ini value).",
    )
    parser.addini(
        "segur_sim_scope",
        "Scope of the segur_sim fixture: function (default), module or session.",
        default="function",
    )


def _sim_scope(fixture_name: str, config: pytest.Config) -> Any:
    scope = config.getoption("--segur-sim-scope", None) or config.getini("segur_sim_scope")
    return scope if scope in ("function", "module", "session") else "function"


@pytest.fixture(scope=_sim_scope)
def segur_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorController]:
    """Every simulator (SMTP, IMAP, HTTPS with the console and API, PSC) on free ports."""
    from simulators.controller import SimulatorController

    data_dir = tmp_path_factory.mktemp("segur-sim") / "data"
    with SimulatorController(data_dir, auth_failure_delay=0.05) as controller:
        yield controller


@dataclass
class SegurMailbox:
    """A test mailbox of a running simulator, with what a client needs to use it."""

    address: str
    type: str
    sim: SimulatorController = field(repr=False)
    access_token: str | None = field(default=None, repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    cert_path: Path | None = None
    key_path: Path | None = None
    chain_path: Path | None = None
    p12_path: Path | None = None
    p12_password: str = P12_PASSWORD

    # ---- where --------------------------------------------------------------------------
    @property
    def host(self) -> str:
        return str(self.sim.endpoints["host"])

    @property
    def smtp_port(self) -> int:
        """SMTP submission with STARTTLS."""
        return self.sim.port("smtp_starttls")

    @property
    def smtps_port(self) -> int:
        return self.sim.port("smtps")

    @property
    def imap_port(self) -> int:
        """IMAP with STARTTLS."""
        return self.sim.port("imap_starttls")

    @property
    def imaps_port(self) -> int:
        return self.sim.port("imaps")

    @property
    def https_url(self) -> str:
        return str(self.sim.endpoints["console_url"]).rstrip("/")

    @property
    def ca_bundle(self) -> Path:
        return Path(self.sim.endpoints["ca_bundle"])

    # ---- credentials -------------------------------------------------------------------
    def xoauth2(self, token: str | None = None) -> str:
        """The SASL XOAUTH2 initial response (not base64-encoded)."""
        return f"user={self.address}\x01auth=Bearer {token or self.access_token}\x01\x01"

    def xoauth2_b64(self, token: str | None = None) -> str:
        return base64.b64encode(self.xoauth2(token).encode()).decode()

    def ssl_context(self) -> ssl.SSLContext:
        """Trusts the simulated IGC Santé root; presents the client certificate (APP)."""
        ctx = ssl.create_default_context(cafile=str(self.ca_bundle))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.chain_path is not None and self.key_path is not None:
            ctx.load_cert_chain(str(self.chain_path), str(self.key_path))
        return ctx

    def new_token(self, lifetime: int | None = None) -> str:
        """A fresh PSC access token (PER/ORG)."""
        services = self.sim.services
        assert services is not None
        box = services.store.get_mailbox(self.address)
        assert box is not None
        pair = services.psc.issue(box, access_lifetime=lifetime)
        self.access_token, self.refresh_token = pair.access_token, pair.refresh_token
        return pair.access_token

    # ---- ready-made clients -----------------------------------------------------------
    def smtp(self, *, login: bool = True, timeout: float = 10) -> smtplib.SMTP:
        """SMTP submission after STARTTLS, authenticated as this mailbox."""
        client = smtplib.SMTP(self.host, self.smtp_port, timeout=timeout)
        client.ehlo("segur-sim-pytest")
        client.starttls(context=self.ssl_context())
        client.ehlo("segur-sim-pytest")
        if login:
            if self.type == "APP":
                client.login(self.address, "unused")
            else:
                client.auth(
                    "XOAUTH2", lambda challenge=None: self.xoauth2(), initial_response_ok=True
                )
        return client

    def imap(self, *, login: bool = True, timeout: float = 10) -> imaplib.IMAP4:
        """IMAP after STARTTLS, authenticated as this mailbox."""
        client = imaplib.IMAP4(self.host, self.imap_port, timeout=timeout)
        client.starttls(self.ssl_context())
        if login:
            if self.type == "APP":
                client.login(self.address, "unused")
            else:
                client.authenticate("XOAUTH2", lambda _challenge: self.xoauth2().encode())
        return client

    def inbox(self) -> list[bytes]:
        """The raw messages of the INBOX, read from the store (oldest first)."""
        services = self.sim.services
        assert services is not None
        store = services.store
        box = store.get_mailbox(self.address)
        assert box is not None
        folder = store.get_folder(box.id, "INBOX")
        assert folder is not None
        rows = store.fetch_rows(folder.id, [uid for uid, _f in store.list_uids(folder.id)])
        return [store.blob(r.blob_id) for r in rows]


def segur_make_mailbox(
    sim: SimulatorController,
    type_: str = "PER",
    local_part: str | None = None,
    *,
    entity: str | None = None,
) -> SegurMailbox:
    """Create a test mailbox on ``sim`` (a unique address unless ``local_part`` is given)."""
    from simulators.core.store.mail import MailboxType

    services = sim.services
    assert services is not None, "start the simulator first"
    type_ = type_.upper()
    local = local_part or f"{type_.lower()}-{next(_counter)}"
    box = services.store.create_mailbox(
        f"{local}@{services.domain}",
        MailboxType(type_),
        entity=entity or ("LABO SIMU" if type_ == "APP" else None),
    )
    mailbox = SegurMailbox(box.address, type_, sim)
    if box.type is MailboxType.APP:
        creds = services.pki.client_credentials(box.address, box.entity)
        mailbox.cert_path, mailbox.key_path = creds.cert_path, creds.key_path
        mailbox.chain_path, mailbox.p12_path = creds.chain_path, creds.p12_path
    else:
        mailbox.new_token()
    return mailbox


@pytest.fixture
def segur_per_mailbox(segur_sim: SimulatorController) -> SegurMailbox:
    """A new PER mailbox with a PSC access token and refresh token."""
    return segur_make_mailbox(segur_sim, "PER")


@pytest.fixture
def segur_org_mailbox(segur_sim: SimulatorController) -> SegurMailbox:
    """A new ORG mailbox with a PSC access token and refresh token."""
    return segur_make_mailbox(segur_sim, "ORG")


@pytest.fixture
def segur_app_mailbox(segur_sim: SimulatorController) -> SegurMailbox:
    """A new APP mailbox with its ORG AUTH_CLI certificate, key and PKCS#12."""
    return segur_make_mailbox(segur_sim, "APP")


# ---- MSS conformance runs ----------------------------------------------------------------------
def run_suite(
    sim: SimulatorController,
    suite: str,
    mailbox: SegurMailbox | str,
    nil: str,
    *,
    client_cmd: str | None = None,
    tests: Sequence[str] = (),
    step_timeout: float = 30,
    settle: float = 0.5,
    fault: str | None = None,
) -> RunRecord:
    """Run an MSS conformance suite in ``sim`` and return the finished run.

    ``suite`` is ``per-org``, ``app`` or ``extra``; ``tests`` a subset of it (empty: the
    whole suite). ``client_cmd`` is the driver started at every step (through the shell,
    with the ``SEGUR_SIM_*`` variables of docs/mss-conformance.md); ``None`` means the
    built-in reference client (``fault``: one of its faulty variants). ``step_timeout``
    bounds each step. The run and its signed proof bundle are kept in the simulator's
    data directory (``run.proof_dir``). Blocks until the run ends.
    """
    from simulators.mss.conformance import report
    from simulators.mss.conformance.api import reference_client_command
    from simulators.mss.conformance.runner import Runner, RunRequest

    if sim.simulator is None or sim.services is None:
        raise RuntimeError("start the simulator first")
    address = mailbox.address if isinstance(mailbox, SegurMailbox) else mailbox
    request = RunRequest(
        suite=suite,
        mailbox=address,
        nil=nil,
        tests=tuple(t.upper() for t in tests),
        client_cmd=client_cmd or reference_client_command(fault, serve=True),
        # the built-in reference client runs long-lived; your command, once per step
        driver="per-step" if client_cmd else "persistent",
        step_timeout=step_timeout,
        settle=settle,
    )
    runner = Runner(sim.simulator)
    run = runner.plan(request)  # RunError: unknown suite, test or mailbox, wrong type
    steps = sum(len(t.steps) for t in run.tests)
    services = sim.services

    async def go() -> RunRecord:
        await runner.execute(run, request)
        report.write_proof(run, services)
        await runner.repo.save(run)
        return run

    return sim.call(go(), timeout=steps * (step_timeout + 10) + 60)


def suite_failures(run: RunRecord) -> list[str]:
    """One paragraph per unit test that did not pass (``omit`` counts as passed)."""
    from simulators.core.verdict import Status

    lines = []
    for test in run.tests:
        if test.status in (Status.PASS, Status.OMIT):
            continue
        v = test.verdict
        text = f"{test.test_id} {test.name} [{test.status.value}]: {v.message if v else ''}"
        if v is not None:
            if v.expected:
                text += f"\n    expected: {v.expected}"
            if v.observed:
                text += f"\n    observed: {v.observed}"
        requirements = (v.requirements if v is not None else ()) or test.requirements
        if requirements:
            text += f"\n    requirements: {', '.join(requirements)}"
        lines.append(text)
    return lines


def assert_suite_passed(run: RunRecord) -> None:
    """Raise AssertionError listing every unit test of ``run`` that did not pass."""
    failed = suite_failures(run)
    if failed or not run.passed:
        detail = "\n".join(failed) or "no unit test passed"
        raise AssertionError(
            f"MSS run {run.run_id} ({run.suite}, {run.mailbox}): {run.status.value}\n{detail}"
            + (f"\nproof bundle: {run.proof_dir}" if run.proof_dir else "")
        )


@pytest.fixture
def segur_run_suite(segur_sim: SimulatorController) -> Callable[..., RunRecord]:
    """``segur_run_suite(suite, mailbox, nil, *, client_cmd=None, tests=(), step_timeout=30)``:
    :func:`run_suite` on the ``segur_sim`` simulator."""

    def run(suite: str, mailbox: SegurMailbox | str, nil: str, **kwargs: Any) -> RunRecord:
        return run_suite(segur_sim, suite, mailbox, nil, **kwargs)

    return run
