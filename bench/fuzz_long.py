"""The long fuzz run: each Hypothesis fuzz target of tests/robustness, one after the other.

    python bench/fuzz_long.py [--examples 100000] [--budget 2400] [--targets mime cda ...]
                              [--json out.json]

Each target is the real pytest test (``tests/robustness/test_fuzz_*.py``), run in its own
``pytest`` process with ``SEGUR_SIM_FUZZ_EXAMPLES=N`` and ``--hypothesis-show-statistics``;
the protocol targets start their own ``segur-sim serve`` (the suite's fixture). The
counts printed are the ones Hypothesis reports having executed (passing, failing and
invalid examples over all its phases), not the ones asked for.

``--examples`` is the count wanted per target (100,000 by default). ``--budget`` is the
wall time, in seconds, shared by the selected targets (0: no budget; each target gets an
equal share of what is left when it starts). A target runs as a series of pytest runs
("chunks"): the first asks ``--probe`` examples, to measure the rate; each next one asks
what fits in ``--chunk-seconds`` (or in what is left of the target's share), until the
wanted count ran, the share is spent, or a chunk fails. So a target that cannot do
100,000 in its share runs what fits, and the report says how many ran; a run stopped
from outside loses only the chunk in progress (Hypothesis prints its counts at the end
of a run). A chunk still running after max(900 s, 5 x --chunk-seconds) is a hang: it is
killed and reported ``TIMEOUT``. Hypothesis draws new random examples in
every chunk (its database replays only failures).

Exit code 0 if no target failed; 1 otherwise. A failing target prints Hypothesis's
falsifying example (the pytest failure text, shortened).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARSERS = "tests/robustness/test_fuzz_parsers.py"
PROTOCOLS = "tests/robustness/test_fuzz_protocols.py"

TARGETS: dict[str, list[str]] = {
    "mime": [f"{PARSERS}::test_mime_analysis_never_raises_and_is_usable"],
    "cda": [f"{PARSERS}::test_cda_validation_of_mutated_documents_never_fails_internally"],
    "xds": [f"{PARSERS}::test_xds_metadata_validation_of_mutated_metadata_never_fails_internally"],
    "xdm": [f"{PARSERS}::test_xdm_validation_of_mutated_archives_never_fails_internally"],
    "hl7v2": [f"{PARSERS}::test_hl7v2_validation_of_mutated_messages_never_fails_internally"],
    "proof": [f"{PARSERS}::test_mutated_proof_bundles_fail_verification_without_raising"],
    # The protocol targets end with the module's "no traceback on the server" check.
    "smtp": [
        f"{PROTOCOLS}::test_smtp_commands_always_get_an_answer",
        f"{PROTOCOLS}::test_imap_protocol_fuzz_left_no_traceback",
    ],
    "imap": [
        f"{PROTOCOLS}::test_imap_commands_and_literals_always_get_an_answer",
        f"{PROTOCOLS}::test_imap_protocol_fuzz_left_no_traceback",
    ],
}
_PHASE = re.compile(r"during \w+ phase \(([\d.]+) seconds\)")
_COUNTS = re.compile(r"(\d+) passing examples?, (\d+) failing examples?, (\d+) invalid examples?")


@dataclass
class Outcome:
    target: str
    asked: int
    passing: int = 0
    failing: int = 0
    invalid: int = 0
    seconds: float = 0.0
    hypothesis_seconds: float = 0.0  # inside Hypothesis's phases (no start-up)
    status: str = "not run"  # passed / FAILED / TIMEOUT / ERROR
    failure: str = ""
    chunks: int = 0

    def chunk_overhead(self) -> float:
        """Mean wall seconds per pytest run outside Hypothesis (start-up, fixtures)."""
        return max(0.0, self.seconds - self.hypothesis_seconds) / max(1, self.chunks)

    @property
    def executed(self) -> int:
        return self.passing + self.failing + self.invalid

    def add(self, other: Outcome) -> None:
        self.passing += other.passing
        self.failing += other.failing
        self.invalid += other.invalid
        self.seconds += other.seconds
        self.hypothesis_seconds += other.hypothesis_seconds


def run_pytest(target: str, examples: int, timeout: float | None) -> Outcome:
    """One pytest process for ``target`` with ``examples`` examples."""
    env = dict(os.environ, SEGUR_SIM_FUZZ_EXAMPLES=str(examples), PYTHONUNBUFFERED="1")
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-x",
        "-p",
        "no:cacheprovider",
        "--timeout=0",  # pytest-timeout's 300 s default would cut a long run
        "--hypothesis-show-statistics",
        *TARGETS[target],
    ]
    outcome = Outcome(target, examples)
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: a timeout kills the server too
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        outcome.status = "TIMEOUT"
    outcome.seconds = time.perf_counter() - started
    for match in _COUNTS.finditer(output):
        outcome.passing += int(match.group(1))
        outcome.failing += int(match.group(2))
        outcome.invalid += int(match.group(3))
    outcome.hypothesis_seconds = sum(float(m.group(1)) for m in _PHASE.finditer(output))
    if outcome.status != "TIMEOUT":
        if proc.returncode == 0:
            outcome.status = "passed"
        else:
            outcome.status = "FAILED" if " failed" in output else "ERROR"
            outcome.failure = _failure_text(output)
    if outcome.status != "passed":  # the whole pytest output, for the post-mortem
        log = (
            Path(tempfile.gettempdir()) / f"fuzz_long-{target}-{os.getpid()}-{int(time.time())}.log"
        )
        log.write_text(output)
        outcome.failure = f"(full pytest output: {log})\n{outcome.failure}"
    return outcome


def _failure_text(output: str, limit: int = 6000) -> str:
    """The failure section of pytest's output (errors and failures), shortened."""
    starts = [i for i in (output.find("= ERRORS ="), output.find("= FAILURES =")) if i >= 0]
    start = min(starts) if starts else max(0, len(output) - limit)
    return output[start : start + limit]


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def run_target(
    target: str, examples: int, seconds: float, probe: int, chunk_seconds: float
) -> Outcome:
    """Chunks of one target until ``examples`` ran, ``seconds`` passed, or one failed."""
    total = Outcome(target, 0)
    deadline = time.monotonic() + seconds
    rate = 0.0  # examples per second inside Hypothesis, from the chunks so far
    while total.executed < examples:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        if rate == 0.0:
            asked = min(probe, examples)
        else:
            startup = total.chunk_overhead()
            fits = int(rate * max(0.0, min(chunk_seconds, left) - startup) * 0.9)
            if fits < 1:
                break
            asked = min(examples - total.executed, fits)
        # Generous: a chunk aims at chunk_seconds; only a hang should reach this.
        chunk = run_pytest(target, asked, timeout=max(900.0, 5 * chunk_seconds))
        total.add(chunk)
        total.asked += asked
        total.chunks += 1
        if chunk.status != "passed":
            total.status, total.failure = chunk.status, chunk.failure
            return total
        if total.hypothesis_seconds > 0:
            rate = total.executed / total.hypothesis_seconds
        if chunk.executed == 0:
            break
    total.status = "passed"
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=100_000, help="asked per target")
    parser.add_argument(
        "--budget", type=float, default=0.0, help="total wall seconds shared by the targets"
    )
    parser.add_argument("--probe", type=int, default=200, help="examples of the first chunk")
    parser.add_argument(
        "--chunk-seconds", type=float, default=180.0, help="wall time aimed at per pytest run"
    )
    parser.add_argument("--targets", nargs="+", choices=sorted(TARGETS), default=list(TARGETS))
    parser.add_argument("--json", type=Path, help="also write the outcomes as JSON")
    args = parser.parse_args()

    print(
        f"long fuzz run: {len(args.targets)} target(s), {args.examples} examples asked each, "
        f"budget {args.budget or 'none'} s, {os.cpu_count()} CPU(s), load {load_average()}",
        flush=True,
    )
    deadline = time.monotonic() + args.budget if args.budget else math.inf
    outcomes: list[Outcome] = []
    for index, target in enumerate(args.targets):
        share = (deadline - time.monotonic()) / (len(args.targets) - index)
        if share <= 0:
            outcomes.append(Outcome(target, 0, status="skipped (budget spent)"))
            print(f"{target:6} skipped: budget spent", flush=True)
            continue
        outcome = run_target(target, args.examples, share, args.probe, args.chunk_seconds)
        outcomes.append(outcome)
        _print(outcome)
        if args.json:
            _write_json(args.json, outcomes)

    print(f"\n{'target':6} {'asked':>8} {'executed':>9} {'invalid':>8} {'seconds':>8}  status")
    for o in outcomes:
        print(
            f"{o.target:6} {o.asked:8d} {o.executed:9d} {o.invalid:8d} {o.seconds:8.1f}  {o.status}"
        )
    print(f"load average at the end: {load_average()}")
    for o in outcomes:
        if o.failure:
            print(f"\n---- {o.target}: {o.status} ----\n{o.failure}")
    if args.json:
        _write_json(args.json, outcomes)
    return 0 if all(o.status in ("passed", "skipped (budget spent)") for o in outcomes) else 1


def _write_json(path: Path, outcomes: list[Outcome]) -> None:
    path.write_text(json.dumps([asdict(o) | {"executed": o.executed} for o in outcomes], indent=2))


def _print(o: Outcome) -> None:
    print(
        f"{o.target:6} {o.status:8} asked {o.asked}, executed {o.executed} "
        f"(passing {o.passing}, failing {o.failing}, invalid {o.invalid}) "
        f"in {o.seconds:.1f} s, {o.chunks} pytest run(s); load {load_average()}",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
