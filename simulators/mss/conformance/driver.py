"""Scripted runs: the editor's own driver command, started at every step.

The command gets the endpoints, the mailbox and the step in its environment (the
contract is in docs/mss-conformance.md) and runs in its own process group, so that a
command that hangs is stopped with everything it started.
"""

from __future__ import annotations

import asyncio
import contextlib
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
        return client

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
