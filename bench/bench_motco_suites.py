"""Wall time of both referencing cases (PER-ORG and APP) with the reference client.

Target (issue 3): both cases in under 15 s on a 2-core machine. Runs in one process with
the simulator on free ports, 2-second PSC tokens, a 0.2 s client back-off and a
0.5 s settle time (the CI settings), and prints the time
per suite and per step kind. Usage: python bench/bench_motco_suites.py [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from simulators.controller import SimulatorController
from simulators.core.store.mail import MailboxType
from simulators.mss.conformance.api import reference_client_command
from simulators.mss.conformance.runner import Runner, RunRequest

DOMAIN = "mssante.localhost"


def one_round(root: Path) -> dict[str, float]:
    times: dict[str, float] = {}
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
                client_cmd=reference_client_command(),
                step_timeout=30,
                settle=0.5,
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
    times["both"] = times["per-org"] + times["app"]
    return times


def main() -> None:
    # CI settings of the reference client: a short back-off after a refused token.
    os.environ.setdefault("SEGUR_SIM_REFCLIENT_BACKOFF", "0.2")
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rounds = []
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            print(f"round {i + 1}")
            rounds.append(one_round(Path(tmp) / "data"))
    for key in ("per-org", "app", "both"):
        values = [r[key] for r in rounds]
        print(
            f"{key:8} median {statistics.median(values):.2f} s  (runs: "
            + ", ".join(f"{v:.2f}" for v in values)
            + ")"
        )


if __name__ == "__main__":
    main()
