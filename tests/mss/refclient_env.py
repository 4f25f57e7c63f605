"""Run the reference client the way the conformance runner does: a real subprocess
with the driver contract's environment (docs/mss-conformance.md), built from the
running simulator's endpoints."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from simulators.controller import SimulatorController
from simulators.core.pki import P12_PASSWORD
from simulators.core.recorder import WireSession
from simulators.core.store.mail import MailboxType
from simulators.mss.http_routes import TEST_LOGIN_GRANT

NIL = "DEV935997"
REPO_ROOT = Path(__file__).resolve().parents[2]


def driver_env(
    sim: SimulatorController,
    bal: str,
    action: str,
    *,
    correspondent: str = "",
    **extra: str,
) -> dict[str, str]:
    """The variables the runner gives ``--client-cmd``, plus ``extra`` overrides
    (``SMTP_PORT="1234"`` sets SEGUR_SIM_SMTP_PORT)."""
    assert sim.services is not None
    services = sim.services
    box = services.store.get_mailbox(bal)
    assert box is not None, f"create {bal} first"
    info = sim.endpoints
    eps = info["endpoints"]
    host = info["host"]
    https = eps["https"]["port"]
    values: dict[str, Any] = {
        "RUN_ID": "1",
        "TEST_ID": "REFCLIENT",
        "STEP_ID": "1",
        "ACTION": action,
        "STAGE": "none",
        "BAL": bal,
        "BAL_TYPE": box.type.value,
        "NIL": NIL,
        "CORRESPONDENT": correspondent,
        "DOMAIN": info["domain"],
        "HOST": host,
        "SMTP_PORT": eps["smtp_starttls"]["port"],
        "SMTPS_PORT": eps["smtps"]["port"],
        "IMAP_PORT": eps["imap_starttls"]["port"],
        "IMAPS_PORT": eps["imaps"]["port"],
        "HTTP_PORT": eps["http"]["port"],
        "HTTPS_PORT": https,
        "CA_FILE": info["ca_bundle"],
        "CRL_URL": info["crl_url"],
        "AUTOCONFIG_URL": f"https://autoconfig.{info['domain']}:{https}/mail/config-v1.1.xml",
        "RESOLVE": f"autoconfig.{info['domain']}:{https}:{host}",
        "PSC_TOKEN_ENDPOINT": info["psc"]["token_endpoint"],
        "PSC_TEST_LOGIN_GRANT": TEST_LOGIN_GRANT,
        "ENDPOINTS": str(services.data.endpoints_file),
        "REFCLIENT_BACKOFF": "0.2",  # quick tests; the default is 1 s
    }
    if box.type is MailboxType.APP:
        creds = services.pki.client_credentials(box.address, box.entity, "valid")
        values.update(
            CLIENT_CERT=creds.cert_path,
            CLIENT_KEY=creds.key_path,
            CLIENT_P12=creds.p12_path,
            CLIENT_P12_PASSWORD=P12_PASSWORD.decode(),
        )
    values.update(extra)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGUR_SIM_")}
    env.update({f"SEGUR_SIM_{k}": str(v) for k, v in values.items()})
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def command(fault: str | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "simulators.mss.refclient"]
    return [*cmd, "--fault", fault] if fault else cmd


def run_refclient(
    env: dict[str, str], fault: str | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(fault), env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def start_refclient(env: dict[str, str], fault: str | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        command(fault), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def sessions(sim: SimulatorController, **filters: Any) -> list[WireSession]:
    assert sim.services is not None
    sim.services.recorder.flush()
    return sim.services.recorder.sessions(**filters)


def wait_until(condition: Callable[[], Any], timeout: float = 10, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
