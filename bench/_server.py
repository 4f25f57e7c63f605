"""Start and stop ``segur-sim serve`` as a real subprocess, for benchmarks and tests.

    from _server import ServerProcess, prepare_data_dir
    prepare_data_dir(data_dir, auth_failure_delay=0.01)      # optional config.toml
    with ServerProcess(data_dir) as server:                  # free ports (--port-base 0)
        port = server.port("smtps"); ca = server.ca_bundle
        server.rss_kb(); server.cpu_seconds(); server.kill9(); server.restart()

The server is ready when ``DATA_DIR/endpoints.json`` exists, parses, and names this
process (``pid``): a file left by a killed predecessor is never taken for a fresh one.
stderr goes to a file (``stderr_path``), so a chatty server can never block on a pipe
and a test can look for tracebacks afterwards.

Mailboxes and tokens are created in this process with :func:`per_mailbox` and
:func:`app_mailbox` (SQLite in WAL mode lets the running server see them at once).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DOMAIN = "mssante.localhost"


def prepare_data_dir(data_dir: Path, **settings: Any) -> Path:
    """Create ``data_dir`` and write ``config.toml`` with ``settings`` (e.g. delays)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if settings:
        lines = []
        for key, value in settings.items():
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, int | float):
                text = repr(value)
            else:
                text = json.dumps(str(value))
            lines.append(f"{key} = {text}")
        (data_dir / "config.toml").write_text("\n".join(lines) + "\n")
    return data_dir


@dataclass
class PerCredentials:
    address: str
    token: str

    def xoauth2(self, token: str | None = None) -> str:
        raw = f"user={self.address}\x01auth=Bearer {token or self.token}\x01\x01"
        return base64.b64encode(raw.encode()).decode()


@dataclass
class AppCredentials:
    address: str
    cert: str  # chain PEM
    key: str


def per_mailbox(data_dir: Path, address: str, *, lifetime: int = 3600) -> PerCredentials:
    """Create (or reuse) a PER mailbox and issue a PSC access token for it."""
    from simulators.core.store.mail import MailboxType
    from simulators.mss.services import MssServices

    services = MssServices.open(data_dir)
    try:
        store = services.store
        box = store.get_mailbox(address) or store.create_mailbox(address, MailboxType.PER)
        token = services.psc.issue(box, access_lifetime=lifetime).access_token
    finally:
        services.close()
    return PerCredentials(address, token)


def app_mailbox(
    data_dir: Path, address: str, *, entity: str = "LABO SIMU", kind: str = "valid"
) -> AppCredentials:
    """Create (or reuse) an APP mailbox and its ORG AUTH_CLI client certificate."""
    from simulators.core.store.mail import MailboxType
    from simulators.mss.services import MssServices

    services = MssServices.open(data_dir)
    try:
        store = services.store
        box = store.get_mailbox(address) or store.create_mailbox(
            address, MailboxType.APP, entity=entity
        )
        creds = services.pki.client_credentials(box.address, box.entity, kind)
    finally:
        services.close()
    return AppCredentials(address, str(creds.chain_path), str(creds.key_path))


def read_proc_status(pid: int) -> dict[str, int]:
    """The kB figures of /proc/PID/status (VmRSS, VmHWM, ...)."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        parts = value.split()
        if len(parts) == 2 and parts[1] == "kB":
            out[key] = int(parts[0])
    return out


class ServerProcess:
    """One ``python -m simulators serve`` child on free loopback ports."""

    def __init__(
        self,
        data_dir: Path,
        *,
        stderr_path: Path | None = None,
        extra_args: tuple[str, ...] = (),
        ready_timeout: float = 60.0,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.stderr_path = stderr_path or self.data_dir.parent / f"{self.data_dir.name}-serve.log"
        self.extra_args = extra_args
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.endpoints: dict[str, Any] = {}
        self.ready_seconds = 0.0  # spawn to endpoints.json, last start
        self._spawned_at = 0.0
        self.starts = 0

    # ---- lifecycle ------------------------------------------------------------------
    def start(self) -> dict[str, Any]:
        """Spawn the server and wait until it is ready; returns endpoints.json."""
        self.spawn()
        return self.wait_ready()

    def spawn(self) -> None:
        """Spawn the server without waiting (to kill it during its start-up, say)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "endpoints.json").unlink(missing_ok=True)
        self.endpoints = {}
        self._spawned_at = time.perf_counter()
        with self.stderr_path.open("ab") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "simulators",
                    "serve",
                    "--data-dir",
                    str(self.data_dir),
                    "--port-base",
                    "0",
                    "--quiet",
                    *self.extra_args,
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )

    def wait_ready(self) -> dict[str, Any]:
        assert self.proc is not None
        endpoints_file = self.data_dir / "endpoints.json"
        deadline = time.monotonic() + self.ready_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"serve exited with {self.proc.returncode} before being ready:\n"
                    + self.stderr_tail()
                )
            if time.monotonic() > deadline:
                self.kill9()
                raise RuntimeError("serve did not become ready in time:\n" + self.stderr_tail())
            info = _read_json(endpoints_file)
            if info is not None and info.get("pid") == self.proc.pid:
                self.endpoints = info
                break
            time.sleep(0.01)
        self.ready_seconds = time.perf_counter() - self._spawned_at
        self.starts += 1
        return self.endpoints

    def kill9(self) -> None:
        """SIGKILL, as a crash would, and reap the process."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (clean shutdown); SIGKILL if it does not exit in ``timeout``."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
        return self.proc.returncode

    def restart(self) -> dict[str, Any]:
        self.kill9()
        return self.start()

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- what the server exposes -------------------------------------------------------
    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def is_ready(self) -> bool:
        """True once this process has written endpoints.json (without waiting)."""
        info = _read_json(self.data_dir / "endpoints.json")
        return self.proc is not None and info is not None and info.get("pid") == self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def port(self, name: str) -> int:
        return int(self.endpoints["endpoints"][name]["port"])

    @property
    def ca_bundle(self) -> str:
        return str(self.endpoints["ca_bundle"])

    def rss_kb(self) -> int:
        return read_proc_status(self.pid)["VmRSS"]

    def peak_rss_kb(self) -> int:
        return read_proc_status(self.pid)["VmHWM"]

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def stderr_tail(self, lines: int = 40) -> str:
        return "\n".join(self.stderr_text().splitlines()[-lines:])


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # absent, or being written
    return value if isinstance(value, dict) else None
