"""Run a suite against the software under test, step by step, inside a running simulator.

For every step: stage the server behaviour, tell the person (or start the driver
command), wait until the check has seen enough (or the client command ended, or the
timeout), fire the runner's mid-step action when its trigger is seen, restore the
server, and judge from what the recorder and the store kept.

During a run every connection to the simulator is attributed to the software under
test: run one suite at a time per simulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from simulators.core.store.mail import Mailbox, MailboxType
from simulators.core.verdict import Status, Verdict, combine, roll_up
from simulators.mss.conformance.catalogue import (
    Catalogue,
    CatalogueError,
    Step,
    UnitTest,
    default_catalogue,
)
from simulators.mss.conformance.driver import (
    ClientProcess,
    PersistentDriver,
    driver_environment,
)
from simulators.mss.conformance.observation import StepObservation
from simulators.mss.conformance.observed import JudgeContext
from simulators.mss.conformance.registry import check_for
from simulators.mss.conformance.runs import RunRecord, RunRepository, StepResult, TestResult
from simulators.mss.mime import analyse_message
from simulators.mss.tls_profiles import server_context

if TYPE_CHECKING:
    from simulators.serve import Simulator

POLL = 0.1  # at most this long between looks while a step waits (events wake it sooner)
COALESCE = 0.01  # seconds to let a burst of recorder events land before looking again
CLOSE_GRACE = 0.5  # at most this long, after the client ended, for its sessions to close
DRIVERS = ("per-step", "persistent")
CORRESPONDENT_LOCAL = "correspondant.simu"
REFUSED_TOKEN_REASON = "refused by the conformance run (MSS-16 stages a rejected token)"

Listener = Callable[[str, dict[str, Any]], None]


class RunError(ValueError):
    """A run that cannot start: unknown suite, test or mailbox, wrong mailbox type."""


@dataclass
class RunRequest:
    suite: str
    mailbox: str
    nil: str
    tests: tuple[str, ...] = ()  # a subset of the suite; empty = the whole suite
    client_cmd: str | None = None
    step_timeout: float | None = None  # overrides the catalogue's timeouts (CI)
    settle: float = 2.0  # quiet seconds before a person-driven step is judged
    # "per-step": the command is started at every step (the contract);
    # "persistent": started once, steps on its stdin (docs/mss-conformance.md)
    driver: str = "per-step"


class StepClient(Protocol):
    """What the runner needs of a driver step: a process, or a persistent driver's step."""

    output: bytearray

    @property
    def exited(self) -> bool: ...

    async def wait_done(self, timeout: float) -> bool: ...

    async def stop(self) -> None: ...

    def summary(self) -> dict[str, Any]: ...


class Runner:
    def __init__(self, sim: Simulator, catalogue: Catalogue | None = None) -> None:
        self.sim = sim
        self.services = sim.services
        self.catalogue = catalogue or default_catalogue()
        self.repo = RunRepository(self.services.db)
        # Where each step's time went (perf_counter marks); bench/ prints them.
        self.timings: list[dict[str, Any]] = []
        self._driver: PersistentDriver | None = None

    # ---- planning -------------------------------------------------------------------------
    def plan(self, request: RunRequest) -> RunRecord:
        """Check the request and lay out the run; raises RunError with a clear message."""
        try:
            case = self.catalogue.suite(request.suite)
            tests = [self.catalogue.test(t) for t in request.tests] or [
                self.catalogue.test(t) for t in case.tests
            ]
        except CatalogueError as exc:
            raise RunError(str(exc)) from None
        outside = [t.id for t in tests if t.id not in case.tests]
        if outside:
            raise RunError(f"{', '.join(outside)} not in suite {case.suite} ({case.id})")
        box = self.services.store.get_mailbox(request.mailbox)
        if box is None:
            raise RunError(
                f"unknown mailbox {request.mailbox!r}: create it first "
                f"(segur-sim bal create --type PER|ORG|APP {request.mailbox})"
            )
        if box.type not in case.mailbox_types:
            raise RunError(
                f"{box.address} is a {box.type.value} mailbox; suite {case.suite} is for "
                f"{'/'.join(t.value for t in case.mailbox_types)} mailboxes"
            )
        if not request.nil.strip():
            raise RunError("the product reference (--nil) must not be empty")
        if request.driver not in DRIVERS:
            raise RunError(f"unknown driver mode {request.driver!r} (one of {', '.join(DRIVERS)})")
        if request.driver == "persistent" and not request.client_cmd:
            raise RunError("the persistent driver mode needs a client command")
        return RunRecord(
            run_id=self.repo.new_run_id(),
            suite=case.suite,
            case_id=case.id,
            mailbox=box.address,
            mailbox_type=box.type.value,
            nil=request.nil.strip(),
            mode="scripted" if request.client_cmd else "interactive",
            tests=[
                TestResult(
                    t.id,
                    t.name,
                    t.title,
                    t.requirements,
                    [StepResult(s.id, s.stage, s.action, s.instruction) for s in t.steps],
                )
                for t in tests
            ],
        )

    # ---- execution ------------------------------------------------------------------------
    async def execute(
        self, run: RunRecord, request: RunRequest, listener: Listener | None = None
    ) -> RunRecord:
        emit = listener or (lambda kind, data: None)
        box = self.services.store.get_mailbox(run.mailbox)
        assert box is not None
        correspondent = self._correspondent()
        await self.repo.save(run)
        emit("run-start", run.as_dict())
        self.timings = []
        self._driver = None
        if request.client_cmd and request.driver == "persistent":
            self._driver = PersistentDriver(request.client_cmd, {})
        try:
            if self._driver is not None:
                await self._driver.ensure()  # it loads while the staged profiles get ready
            stages = {
                self.catalogue.test(t.test_id).step(s.step_id).stage
                for t in run.tests
                for s in t.steps
            }
            await asyncio.to_thread(self._prepare_stages, stages)
            for result in run.tests:
                test = self.catalogue.test(result.test_id)
                result.status = Status.RUNNING
                emit("test-start", result.as_dict())
                for step_result in result.steps:
                    step = test.step(step_result.step_id)
                    await self._run_step(
                        run, request, test, step, step_result, box, correspondent, emit
                    )
                    await self.repo.save(run)
                verdicts = [s.verdict for s in result.steps if s.verdict is not None]
                result.verdict = combine(verdicts)
                result.verdict.requirements = test.requirements
                result.status = roll_up(s.status for s in result.steps)
                emit("test-end", result.as_dict())
        except asyncio.CancelledError:
            for result in run.tests:
                if result.status in (Status.WAIT, Status.RUNNING):
                    result.status = Status.CANCEL
            raise
        finally:
            if self._driver is not None:
                await self._driver.close()
            self._restore(box)
            run.ended_at = time.time()
            run.roll_up()
            await self.repo.save(run)
        emit("run-end", run.as_dict())
        return run

    async def _run_step(
        self,
        run: RunRecord,
        request: RunRequest,
        test: UnitTest,
        step: Step,
        result: StepResult,
        box: Mailbox,
        correspondent: Mailbox,
        emit: Listener,
    ) -> None:
        check = check_for(test.id, step.id)
        t: dict[str, Any] = {"step": f"{test.id}/{step.id}", "t0": time.perf_counter()}
        self.timings.append(t)
        await self._flush()
        started = time.time()
        obs = StepObservation(
            self.services,
            JudgeContext(box, run.nil, self.services.domain, since=started),
            test,
            step,
            submission_floor=self._last_submission_id(),
            settle=request.settle,
        )
        result.started_at = started
        result.status = Status.WAIT
        timeout = request.step_timeout or test.timeout
        self._stage(step.stage, box)
        emit(
            "step-start",
            {"test": test.id, "step": step.id, "instruction": step.instruction, "timeout": timeout},
        )
        client: StepClient | None = None
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()

        def on_record(*_args: Any) -> None:  # any thread: the HTTP routes run in a pool
            loop.call_soon_threadsafe(wake.set)

        unsubscribe = self.services.recorder.subscribe(on_record)
        watcher: asyncio.Task[bool] | None = None
        try:
            try:
                fired = step.runner_action is None
                if not fired and step.runner_action == "deliver-mail":
                    await self._act(step.runner_action, obs, box, correspondent)
                    fired = True
                if request.client_cmd:
                    env = self._environment(run, test, step, box, correspondent)
                    if self._driver is not None:
                        client = await self._driver.start_step(env)
                    else:
                        client = await ClientProcess.start(request.client_cmd, env)
                    watcher = asyncio.create_task(client.wait_done(timeout + 60))
                    watcher.add_done_callback(lambda _t: wake.set())
                t["spawned"] = time.perf_counter()
                t["wall0"] = started
                deadline = started + timeout
                while True:
                    wake.clear()
                    await self._flush()
                    if not fired and check.trigger(obs):
                        assert step.runner_action is not None
                        await self._act(step.runner_action, obs, box, correspondent)
                        fired = True
                        continue
                    if client is not None:
                        if client.exited:
                            break
                        if step.action == "keep-session-open" and fired and check.ready(obs):
                            break
                    elif check.ready(obs):
                        break
                    now = time.time()
                    if now >= deadline:
                        obs.marks["timedOut"] = timeout
                        break
                    # Sleep until something is recorded, the client ends, or the next look
                    # is due (quiet periods are measured by the clock, not announced).
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), min(POLL, deadline - now))
                    await asyncio.sleep(COALESCE)
            finally:
                t["waited"] = time.perf_counter()
                if client is not None:
                    if not client.exited:
                        # What the client does once told to stop is not what the step
                        # observes.
                        obs.marks["clientStoppedAt"] = time.time()
                    await client.stop()
                self._unstage(step.stage, box)
                t["stopped"] = time.perf_counter()
            # The server side of the closing connections lands in the loop: wait until the
            # step's sessions are closed (or the grace period is over).
            await self._sessions_closed(obs, wake)
        finally:
            if watcher is not None:
                watcher.cancel()
            unsubscribe()
        obs.freeze()
        t["flushed"] = time.perf_counter()
        try:
            verdict = check.judge(obs)
        except Exception as exc:  # a bug in a check must not stop the run, and must show
            verdict = Verdict.error(f"the check crashed: {type(exc).__name__}: {exc}")
        if "timedOut" in obs.marks and not verdict.ok:
            verdict.message += f" (waited {timeout:.0f} s)"
        verdict.requirements = verdict.requirements or test.requirements
        t["judged"] = time.perf_counter()
        result.verdict = verdict
        result.status = verdict.status
        result.ended_at = time.time()
        result.marks = dict(obs.marks)
        if client is not None:
            result.client = client.summary()
            result.client["output"] = client.output.decode("utf-8", "replace")
        emit("step-end", {"test": test.id, "step": step.id, **verdict.as_dict()})

    async def _sessions_closed(self, obs: StepObservation, wake: asyncio.Event) -> None:
        await asyncio.sleep(COALESCE)  # connections the client made are accepted by now
        give_up = time.time() + CLOSE_GRACE
        while True:
            wake.clear()
            await self._flush()
            if not any(s.ended_at is None for s in obs.sessions()):
                return
            left = give_up - time.time()
            if left <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), min(POLL, left))

    # ---- staging and runner actions --------------------------------------------------------
    def _prepare_stages(self, stages: set[str]) -> None:
        """Make the staged certificates and DH group now (in a thread, before the first
        step), so that switching a profile during the run only loads files."""
        for stage in sorted(stages - {"none", "reject-tokens"}):
            server_context(self.services.pki, stage, self.sim.crl_url)

    def _stage(self, stage: str, box: Mailbox) -> None:
        if stage == "reject-tokens":
            self.services.auth.refused_tokens[box.address.lower()] = REFUSED_TOKEN_REASON
        elif stage != "none":
            self.sim.set_tls_profile(stage)

    def _unstage(self, stage: str, box: Mailbox) -> None:
        if stage == "reject-tokens":
            self.services.auth.refused_tokens.pop(box.address.lower(), None)
        elif stage != "none":
            self.sim.set_tls_profile("normal")

    def _restore(self, box: Mailbox) -> None:
        self.services.auth.refused_tokens.pop(box.address.lower(), None)
        if self.sim.tls_profile != "normal":
            self.sim.set_tls_profile("normal")

    async def _act(
        self, action: str, obs: StepObservation, box: Mailbox, correspondent: Mailbox
    ) -> None:
        now = time.time()
        open_sessions = [s.id for s in obs.sessions() if s.ended_at is None and s.get("auth_ok")]
        if action == "drop-sessions":
            await self.sim.drop_mail_sessions(box.address)
            obs.marks.update(dropped_at=now, dropped=open_sessions)
        elif action == "revoke-refresh":
            revoked = self.services.psc.revoke_mailbox_sessions(box)
            obs.marks.update(revoked_at=now, open_sessions=open_sessions, revoked_tokens=revoked)
        elif action == "deliver-mail":
            message_id = await self._deliver(box, correspondent)
            obs.marks.update(delivered_at=now, delivered_message_id=message_id)
        else:
            raise RunError(f"unknown runner action {action!r}")

    async def _deliver(self, box: Mailbox, correspondent: Mailbox) -> str:
        """Put a mail from the correspondent into the INBOX, asking for a read notice."""
        msg = EmailMessage()
        message_id = make_msgid(domain=self.services.domain)
        msg["From"] = f"{correspondent.display_name} <{correspondent.address}>"
        msg["To"] = box.address
        msg["Subject"] = "Demande d'avis (SIMULATION segur-sim)"
        msg["Date"] = formatdate(localtime=False)
        msg["Message-ID"] = message_id
        msg["Disposition-Notification-To"] = correspondent.address
        msg["X-MSS-NIL"] = "SEGUR-SIM"
        msg.set_content(
            "Bonjour,\nmerci de confirmer la lecture de ce message de test.\n"
            "(Simulateur segur-sim : ceci n'est pas un message réel.)\n",
            charset="utf-8",
        )
        raw = msg.as_bytes()
        folder = self.services.store.get_folder(box.id, "INBOX")
        assert folder is not None
        await self.services.store.append(folder.id, raw, meta=analyse_message(raw))
        return message_id

    # ---- helpers --------------------------------------------------------------------------
    def _correspondent(self) -> Mailbox:
        store = self.services.store
        address = f"{CORRESPONDENT_LOCAL}@{self.services.domain}"
        return store.get_mailbox(address) or store.create_mailbox(
            address,
            MailboxType.PER,
            display_name="Dr_Camille_CORRESPONDANT_SIMULATION",
            entity="CABINET SIMULATION",
        )

    def _environment(
        self, run: RunRecord, test: UnitTest, step: Step, box: Mailbox, correspondent: Mailbox
    ) -> dict[str, str]:
        client_cert: dict[str, Path] | None = None
        if box.type is MailboxType.APP:
            creds = self.services.pki.client_credentials(box.address, box.entity, "valid")
            client_cert = {
                "chain": creds.chain_path,
                "key": creds.key_path,
                "p12": creds.p12_path,
            }
        return driver_environment(
            self.sim.endpoints,
            run_id=run.run_id,
            test_id=test.id,
            step_id=step.id,
            action=step.action,
            stage=step.stage,
            instruction=step.instruction,
            mailbox=box,
            nil=run.nil,
            correspondent=correspondent.address,
            client_cert=client_cert,
            data_dir=self.services.data.root,
            ca_file=self.services.pki.root_cert_path,
        )

    async def _flush(self) -> None:
        # The recorder queues its rows as writer jobs; a no-op job behind them means
        # everything recorded so far is committed and readable.
        await self.services.db.write(lambda conn: None)

    def _last_submission_id(self) -> int:
        row = self.services.db.read_one("SELECT COALESCE(MAX(id), 0) FROM submissions")
        return int(row[0]) if row else 0
