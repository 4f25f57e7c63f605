"""Scripted runs: the editor's own driver command, started at every step.

The command gets the endpoints, the mailbox and the step in its environment (the
contract is in docs/mss-conformance.md) and runs in its own process group, so that a
command that hangs is stopped with everything it started.

The optional persistent mode (:class:`PersistentDriver`) starts the command once per
run and hands it the steps on its standard input, one JSON line each; the command
answers each with a :data:`STEP_DONE` line. It saves a process start per step.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulators.core.store.mail import Mailbox, MailboxType
from simulators.mss.http_routes import TEST_LOGIN_GRANT

OUTPUT_LIMIT = 256 * 1024  # bytes of client output kept as evidence
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
# Persistent mode: the line a driver prints when it has done a step, then its exit code.
STEP_DONE = "@@SEGUR-SIM-STEP-DONE@@"


def driver_environment(
    endpoints: Mapping[str, Any],
    *,
    run_id: str,
    test_id: str,
    step_id: str,
    action: str,
    stage: str,
    instruction: str,
    mailbox: Mailbox,
    nil: str,
    correspondent: str,
    client_cert: Mapping[str, Path] | None,
    data_dir: Path,
    ca_file: Path,
) -> dict[str, str]:
    eps = endpoints["endpoints"]
    host = endpoints["host"]
    domain = endpoints["domain"]
    https_port = eps["https"]["port"]
    env = {
        "SEGUR_SIM_RUN_ID": run_id,
        "SEGUR_SIM_TEST_ID": test_id,
        "SEGUR_SIM_STEP_ID": step_id,
        "SEGUR_SIM_ACTION": action,
        "SEGUR_SIM_STAGE": stage,
        "SEGUR_SIM_INSTRUCTION": instruction,
        "SEGUR_SIM_BAL": mailbox.address,
        "SEGUR_SIM_BAL_TYPE": mailbox.type.value,
        "SEGUR_SIM_NIL": nil,
        "SEGUR_SIM_CORRESPONDENT": correspondent,
        "SEGUR_SIM_DOMAIN": domain,
        "SEGUR_SIM_HOST": host,
        "SEGUR_SIM_SMTP_PORT": str(eps["smtp_starttls"]["port"]),
        "SEGUR_SIM_SMTPS_PORT": str(eps["smtps"]["port"]),
        "SEGUR_SIM_IMAP_PORT": str(eps.get("imap_starttls", {}).get("port", "")),
        "SEGUR_SIM_IMAPS_PORT": str(eps.get("imaps", {}).get("port", "")),
        "SEGUR_SIM_HTTP_PORT": str(eps["http"]["port"]),
        "SEGUR_SIM_HTTPS_PORT": str(https_port),
        "SEGUR_SIM_CA_FILE": str(ca_file),
        "SEGUR_SIM_CRL_URL": endpoints["crl_url"],
        "SEGUR_SIM_AUTOCONFIG_URL": (
            f"https://autoconfig.{domain}:{https_port}/mail/config-v1.1.xml"
        ),
        "SEGUR_SIM_RESOLVE": f"autoconfig.{domain}:{https_port}:{host}",
        "SEGUR_SIM_PSC_TOKEN_ENDPOINT": endpoints["psc"]["token_endpoint"],
        "SEGUR_SIM_PSC_TEST_LOGIN_GRANT": TEST_LOGIN_GRANT,
        "SEGUR_SIM_ENDPOINTS": str(data_dir / "endpoints.json"),
    }
    if mailbox.type is MailboxType.APP and client_cert:
        env.update(
            {
                "SEGUR_SIM_CLIENT_CERT": str(client_cert["chain"]),
                "SEGUR_SIM_CLIENT_KEY": str(client_cert["key"]),
                "SEGUR_SIM_CLIENT_P12": str(client_cert["p12"]),
                "SEGUR_SIM_CLIENT_P12_PASSWORD": "segur-sim",
            }
        )
    return env


@dataclass
class ClientProcess:
    command: str
    process: asyncio.subprocess.Process
    started_at: float
    output: bytearray = field(default_factory=bytearray)
    truncated: bool = False
    exit_code: int | None = None
    stopped_by_runner: bool = False
    _reader: asyncio.Task[None] | None = None
    _waiter: asyncio.Task[int] | None = None  # the process's end, for wait_done()

    @classmethod
    async def start(cls, command: str, env: Mapping[str, str]) -> ClientProcess:
        process = await asyncio.create_subprocess_shell(
            command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **env},
            start_new_session=True,  # its own process group: we can stop its children too
        )
        client = cls(command, process, time.time())
        client._reader = asyncio.create_task(client._read())
        client._waiter = asyncio.create_task(process.wait())
        return client

    async def wait_done(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for the process to end; True if it has."""
        assert self._waiter is not None
        if not self._waiter.done():
            await asyncio.wait({self._waiter}, timeout=max(0.0, timeout))
        return self.exited

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while chunk := await self.process.stdout.read(65536):
            room = OUTPUT_LIMIT - len(self.output)
            if room > 0:
                self.output += chunk[:room]
            if len(chunk) > room:
                self.truncated = True

    @property
    def exited(self) -> bool:
        return self.process.returncode is not None

    async def stop(self) -> None:
        """SIGTERM the process group, SIGKILL after the grace period; idempotent."""
        if not self.exited:
            self.stopped_by_runner = True
            self._signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), STOP_GRACE)
            except TimeoutError:
                self._signal(signal.SIGKILL)
                await self.process.wait()
            except asyncio.CancelledError:
                # The run is cancelled during the grace period: a driver that ignores
                # SIGTERM must not outlive it.
                self._signal(signal.SIGKILL)
                raise
        else:
            self._signal(signal.SIGKILL)  # leftovers of an exited shell
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 2)
        self.exit_code = self.process.returncode

    def _signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)

    def summary(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "exitCode": self.exit_code,
            "stoppedByRunner": self.stopped_by_runner,
            "seconds": round(time.time() - self.started_at, 3),
            "outputTruncated": self.truncated,
        }


@dataclass
class DriverStep:
    """One step handed to a :class:`PersistentDriver`: the same face as ClientProcess."""

    driver: PersistentDriver
    command: str
    started_at: float
    output: bytearray = field(default_factory=bytearray)
    truncated: bool = False
    exit_code: int | None = None
    stopped_by_runner: bool = False
    ended_at: float | None = None
    _done: asyncio.Event = field(default_factory=asyncio.Event)

    def append(self, chunk: bytes) -> None:
        room = OUTPUT_LIMIT - len(self.output)
        if room > 0:
            self.output += chunk[:room]
        if len(chunk) > room:
            self.truncated = True

    def finish(self, code: int | None) -> None:
        if not self._done.is_set():
            self.exit_code = code
            self.ended_at = time.time()
            self._done.set()

    @property
    def exited(self) -> bool:
        return self._done.is_set()

    async def wait_done(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._done.wait(), max(0.0, timeout))
        return self.exited

    async def stop(self) -> None:
        """Ask the driver to end the step; kill it (it restarts at the next step) if it
        does not answer within the grace period. Idempotent."""
        if self.exited:
            return
        self.stopped_by_runner = True
        await self.driver.send({"type": "stop"})
        if not await self.wait_done(self.driver.stop_grace):
            await self.driver.kill()
            self.finish(-signal.SIGKILL)

    def summary(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "exitCode": self.exit_code,
            "stoppedByRunner": self.stopped_by_runner,
            "seconds": round((self.ended_at or time.time()) - self.started_at, 3),
            "outputTruncated": self.truncated,
            "persistent": True,
        }


class PersistentDriver:
    """The driver command started once per run (``driver="persistent"``).

    Protocol (docs/mss-conformance.md): for each step the runner writes one line
    ``{"type": "step", "env": {...}}`` (the variables of the per-step contract) to the
    command's standard input. The command does the step's action and prints
    ``@@SEGUR-SIM-STEP-DONE@@ <exit code>`` on a line of its own. ``{"type": "stop"}``
    asks it to end the current step (keep-session-open, timeout); end of input means
    the run is over. Whatever the command prints during a step is that step's output.
    A command that does not answer a stop in time is killed with its process group and
    started again for the next step.
    """

    def __init__(self, command: str, env: Mapping[str, str]) -> None:
        self.command = command
        self.env = dict(env)
        self.process: asyncio.subprocess.Process | None = None
        self.current: DriverStep | None = None
        self.starts = 0
        self.stop_grace = STOP_GRACE  # seconds a step has to answer a stop
        self._reader: asyncio.Task[None] | None = None

    async def ensure(self) -> asyncio.subprocess.Process:
        """Start the command unless it is running."""
        if self.process is not None and self.process.returncode is None:
            return self.process
        self.process = await asyncio.create_subprocess_shell(
            self.command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **self.env},
            start_new_session=True,
        )
        self.starts += 1
        self._reader = asyncio.create_task(self._read(self.process))
        return self.process

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        pending = b""
        marker = STEP_DONE.encode()
        while chunk := await process.stdout.read(65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                self._line(line + b"\n", marker)
            if len(pending) > OUTPUT_LIMIT:  # a very long line: keep it as output
                self._line(pending, marker)
                pending = b""
        if pending:
            self._line(pending, marker)
        await process.wait()
        if self.current is not None:  # died in the middle of a step
            self.current.finish(process.returncode)

    def _line(self, line: bytes, marker: bytes) -> None:
        step = self.current
        if line.startswith(marker):
            word = line[len(marker) :].strip().split(b" ")[0]
            code = int(word) if word.lstrip(b"-").isdigit() else None
            if step is not None:
                step.finish(code)
            return
        if step is not None and not step.exited:
            step.append(line)

    async def start_step(self, env: Mapping[str, str]) -> DriverStep:
        await self.ensure()
        step = DriverStep(self, self.command, time.time())
        self.current = step
        await self.send({"type": "step", "env": dict(env)})
        return step

    async def send(self, message: dict[str, Any]) -> None:
        process = self.process
        if process is None or process.stdin is None or process.returncode is not None:
            if self.current is not None:
                self.current.finish(process.returncode if process else None)
            return
        try:
            process.stdin.write(json.dumps(message).encode() + b"\n")
            await process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            if self.current is not None:
                self.current.finish(process.returncode)

    async def kill(self) -> None:
        process = self.process
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 2)
        self.process = None

    async def close(self) -> None:
        """End of the run: close its input, give it the grace period, then kill."""
        process = self.process
        if process is None:
            return
        if process.stdin is not None:
            with contextlib.suppress(Exception):
                process.stdin.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), self.stop_grace)
        await self.kill()
