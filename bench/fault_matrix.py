"""Every faulty variant of the reference client over its whole suite: the fault x test
matrix. Each fault must fail its own test and nothing else; this prints any other
failure with its message, so a check bug (or a fault that genuinely breaks several
rules) shows. Run by hand: python bench/fault_matrix.py [--driver MODE] [--fault NAME...]
[--both] (--both also runs the faults that apply to every mailbox type on the APP suite).

Cells: F = the expected failure, c = a declared consequence (``Fault.also_fails``: a
client that cannot log in submits nothing), x = an unexpected failure, ! = the target
test passed (the fault went unnoticed), . = pass, - = not in the suite.
tests/mss/test_fault_matrix.py checks the same in CI.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from simulators.controller import SimulatorController
from simulators.core.store.mail import MailboxType
from simulators.core.verdict import Status
from simulators.mss.conformance.api import reference_client_command
from simulators.mss.conformance.catalogue import default_catalogue
from simulators.mss.conformance.runner import Runner, RunRequest
from simulators.mss.refclient.faults import FAULTS, Fault

DOMAIN = "mssante.localhost"
PER = f"dr.matrix@{DOMAIN}"
APP = f"labo.matrix@{DOMAIN}"
Row = tuple[str, str, Fault, dict[str, tuple[Status, str]]]  # fault, suite, cells
CI_ENV = {
    "SEGUR_SIM_REFCLIENT_BACKOFF": "0.2",
    "SEGUR_SIM_REFCLIENT_KEEPALIVE": "0.2",
    "SEGUR_SIM_REFCLIENT_REFRESH_EVERY": "0.5",
}


def suites_for(fault: Fault, both: bool) -> list[tuple[str, str]]:
    if fault.suite == "app":
        return [("app", APP)]
    if both and fault.suite == "per-org" and "APP" in fault.bal_types:
        return [("per-org", PER), ("app", APP)]
    return [(fault.suite, PER)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--driver", choices=("persistent", "per-step"), default="persistent")
    parser.add_argument("--fault", action="append", help="only these faults (repeatable)")
    parser.add_argument("--both", action="store_true", help="common faults on both suites")
    parser.add_argument("--step-timeout", type=float, default=12)
    args = parser.parse_args()
    for name, value in CI_ENV.items():
        os.environ.setdefault(name, value)
    names = args.fault or list(FAULTS)
    unknown = [n for n in names if n not in FAULTS]
    if unknown:
        parser.error(f"unknown fault(s): {', '.join(unknown)}")
    rows: list[Row] = []
    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory() as tmp,
        SimulatorController(
            Path(tmp) / "data", auth_failure_delay=0.05, access_token_lifetime=2
        ) as sim,
    ):
        assert sim.services is not None and sim.simulator is not None
        sim.services.store.create_mailbox(PER, MailboxType.PER, "Dr_Alice_MATRIX", "CABINET")
        sim.services.store.create_mailbox(APP, MailboxType.APP, None, "LABO MATRIX")
        for name in names:
            fault = FAULTS[name]
            for suite, box in suites_for(fault, args.both):
                command = reference_client_command(name)
                if args.driver == "persistent":
                    command += " --serve"
                runner = Runner(sim.simulator)
                request = RunRequest(
                    suite,
                    box,
                    "DEV935997",
                    client_cmd=command,
                    step_timeout=args.step_timeout,
                    settle=0.5,
                    driver=args.driver,
                )
                run = runner.plan(request)
                # Forget the authentication failures of earlier runs: the simulator's
                # brute-force throttle (per client address) would slow this run down.
                sim.services.auth.throttle.succeeded(sim.simulator.endpoints["host"])
                t0 = time.perf_counter()
                sim.call(runner.execute(run, request), timeout=1800)
                cells = {
                    t.test_id: (t.status, t.verdict.message if t.verdict else "") for t in run.tests
                }
                rows.append((name, suite, fault, cells))
                bad = [
                    t
                    for t, (st, _m) in cells.items()
                    if (st is Status.PASS) == (t == fault.test_id) and t not in fault.also_fails
                ]
                print(
                    f"{name:28} {suite:8} {time.perf_counter() - t0:5.1f} s  "
                    + ("ok" if not bad else "UNEXPECTED: " + ", ".join(bad)),
                    flush=True,
                )
    return report(rows, time.perf_counter() - started)


def report(rows: list[Row], seconds: float) -> int:
    tests = list(default_catalogue().tests)  # catalogue order
    used = [t for t in tests if any(t in cells for *_x, cells in rows)]
    print()
    print(f"{'fault':28} {'suite':8} " + " ".join(t.removeprefix("MSS-") for t in used))
    extra: list[str] = []
    for name, suite, fault, cells in rows:
        marks = []
        for t in used:
            if t not in cells:
                marks.append(" -")
                continue
            status, message = cells[t]
            failed = status is not Status.PASS
            if t == fault.test_id:
                marks.append(" F" if failed else " !")
                if not failed:
                    extra.append(f"{name} ({suite}): {t} PASSED although the fault targets it")
            elif t in fault.also_fails:
                marks.append(" c" if failed else " !")
                if not failed:
                    extra.append(f"{name} ({suite}): {t} passed, declared as broken by the fault")
            elif failed:
                marks.append(" x")
                extra.append(f"{name} ({suite}): {t} {status.value}: {message}")
            else:
                marks.append(" .")
        print(f"{name:28} {suite:8}" + "".join(m.rjust(3) for m in marks))
    print()
    if extra:
        print(f"{len(extra)} unexpected result(s):")
        for line in extra:
            print("  " + line)
    else:
        print("every fault fails its target test and only what it declares it breaks")
    print(f"{len(rows)} runs in {seconds:.0f} s")
    return 1 if extra else 0


if __name__ == "__main__":
    sys.exit(main())
