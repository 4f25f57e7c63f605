"""Wall time of both referencing cases (PER-ORG and APP) with the reference client.

Target (issue 3): both cases in under 15 s on a 2-core machine. Runs in one process with
the simulator on free ports, 2-second PSC tokens and the CI settings: a 0.2 s client
back-off, a 0.2 s keep-alive period, a token refresh at least every 0.5 s and a 0.5 s
settle time. ``--driver persistent`` (the default here) starts the reference client once
per run (``--serve``); ``--driver per-step`` starts it at every step, as the driver
contract does for editors' scripts. ``--breakdown`` prints where each step's time went.

Usage: python bench/bench_motco_suites.py [--repeat N] [--driver MODE] [--breakdown]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from simulators.controller import SimulatorController
from simulators.core.store.mail import MailboxType
from simulators.mss.conformance.api import reference_client_command
from simulators.mss.conformance.runner import Runner, RunRequest
from simulators.mss.conformance.runs import RunRecord

DOMAIN = "mssante.localhost"
CI_ENV = {
    "SEGUR_SIM_REFCLIENT_BACKOFF": "0.2",
    "SEGUR_SIM_REFCLIENT_KEEPALIVE": "0.2",
    "SEGUR_SIM_REFCLIENT_REFRESH_EVERY": "0.5",
}
_STAMP = re.compile(r"refclient (\d+\.\d+):")


def breakdown(runner: Runner, run: RunRecord) -> dict[str, float]:
    """Per step: runner set-up (flush, stage, start), client start (to its first log
    line), client work (to its last log line), end (client exit or done line seen),
    stop, sessions closed, judge. Prints a table and returns the sums."""
    outputs = {
        f"{t.test_id}/{s.step_id}": str(s.client.get("output", ""))
        for t in run.tests
        for s in t.steps
    }
    cols = ("total", "setup", "start", "work", "end", "stop", "close", "judge")
    print("    " + f"{'step':18}" + "".join(f"{c:>7}" for c in cols))
    sums = dict.fromkeys(cols, 0.0)
    for t in runner.timings:
        stamps = [float(m) for m in _STAMP.findall(outputs.get(t["step"], ""))]
        spawned_wall = t["wall0"] + (t["spawned"] - t["t0"])
        first = (stamps[0] - spawned_wall) if stamps else 0.0
        work = (stamps[-1] - stamps[0]) if stamps else 0.0
        waited = t["waited"] - t["spawned"]
        row: dict[str, Any] = {
            "total": t["judged"] - t["t0"],
            "setup": t["spawned"] - t["t0"],
            "start": max(0.0, first),
            "work": work,
            "end": max(0.0, waited - max(0.0, first) - work),
            "stop": t["stopped"] - t["waited"],
            "close": t["flushed"] - t["stopped"],
            "judge": t["judged"] - t["flushed"],
        }
        for c in cols:
            sums[c] += row[c]
        print("    " + f"{t['step']:18}" + "".join(f"{row[c]:7.2f}" for c in cols))
    print("    " + f"{'sum':18}" + "".join(f"{sums[c]:7.2f}" for c in cols))
    return sums


def one_round(root: Path, driver: str, show: bool) -> dict[str, float]:
    times: dict[str, float] = {}
    command = reference_client_command() + (" --serve" if driver == "persistent" else "")
    with SimulatorController(root, auth_failure_delay=0.05, access_token_lifetime=2) as sim:
        assert sim.services is not None and sim.simulator is not None
        sim.services.store.create_mailbox(
            f"dr.bench@{DOMAIN}", MailboxType.PER, "Dr_Alice_MARTIN_CABINET", "CABINET"
        )
        sim.services.store.create_mailbox(f"labo.bench@{DOMAIN}", MailboxType.APP, None, "LABO")
        for suite, box in (("per-org", f"dr.bench@{DOMAIN}"), ("app", f"labo.bench@{DOMAIN}")):
            runner = Runner(sim.simulator)
            request = RunRequest(
                suite,
                box,
                "DEV935997",
                client_cmd=command,
                step_timeout=30,
                settle=0.5,
                driver=driver,
            )
            run = runner.plan(request)
            started = time.perf_counter()
            sim.call(runner.execute(run, request), timeout=900)
            times[suite] = time.perf_counter() - started
            for t in run.tests:
                if t.status.value != "pass":
                    message = t.verdict.message if t.verdict else ""
                    print(f"  ! {t.test_id} {t.status.value}: {message}")
            slow = sorted(
                ((s.ended_at or 0) - (s.started_at or 0), f"{t.test_id}/{s.step_id}")
                for t in run.tests
                for s in t.steps
            )[-3:]
            print(
                f"  {suite}: {times[suite]:.2f} s, status {run.status.value}, "
                f"slowest steps: " + ", ".join(f"{n} {d:.2f} s" for d, n in reversed(slow))
            )
            if show:
                breakdown(runner, run)
    times["both"] = times["per-org"] + times["app"]
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--driver", choices=("persistent", "per-step"), default="persistent")
    parser.add_argument("--breakdown", action="store_true", help="print per-step timings")
    args = parser.parse_args()
    for name, value in CI_ENV.items():
        os.environ.setdefault(name, value)
    if args.breakdown:
        os.environ["SEGUR_SIM_REFCLIENT_LOG_TIMES"] = "1"
    rounds = []
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            print(f"round {i + 1} ({args.driver} driver), load average {_load()}")
            rounds.append(one_round(Path(tmp) / "data", args.driver, args.breakdown))
    for key in ("per-org", "app", "both"):
        values = [r[key] for r in rounds]
        print(
            f"{key:8} median {statistics.median(values):.2f} s  (runs: "
            + ", ".join(f"{v:.2f}" for v in values)
            + ")"
        )
    print(f"load average at the end: {_load()} on {os.cpu_count()} CPUs")


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()
