"""Ctrl-C (SIGINT) or SIGTERM during ``segur-sim mss run``: a cancelled, signed proof.

The command runs in a subprocess, as a person or a CI job starts it: its own simulator
on free loopback ports, a one-test suite with a step timeout far longer than the test.
Once it says it waits for the software under test, the signal is sent. It must stop,
write the proof bundle of the cancelled run (``segur-sim proof verify`` says VALID),
write the ``--json`` and ``--junit`` reports marked cancelled, say where the bundle is
and exit 1. With a driver command, the command's whole process group must be gone.
"""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import IO, Any

import pytest

CLI = [sys.executable, "-m", "simulators"]
NIL = "DEV935997"
LONG = "900"  # seconds per step: the signal, not the timeout, ends the run


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=180, check=False)


def lines_of(stream: IO[str]) -> queue.Queue[str | None]:
    """Every line the stream prints, read by a thread (None at the end)."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def wait_for_line(lines: queue.Queue[str | None], needle: str, seen: list[str]) -> None:
    """Read until a line holds ``needle`` (a bound of 120 s, not a measurement)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        if line is None:
            break
        seen.append(line)
        if needle in line:
            return
    raise AssertionError(f"never printed {needle!r}; printed:\n{''.join(seen)}")


def drain(lines: queue.Queue[str | None], seen: list[str]) -> str:
    while (line := lines.get(timeout=30)) is not None:
        seen.append(line)
    return "".join(seen)


def start_run(data: Path, out: Path, box: str, *extra: str) -> subprocess.Popen[str]:
    created = cli("bal", "create", "--type", "PER", box, "--data-dir", str(data))
    assert created.returncode == 0, created.stderr
    return subprocess.Popen(
        [
            *CLI,
            "mss",
            "run",
            "--suite",
            "per-org",
            "--case",
            "MSS-08",
            "--bal",
            box,
            "--nil",
            NIL,
            "--step-timeout",
            LONG,
            "--port-base",
            "0",
            "--proof-dir",
            str(out / "proofs"),
            "--json",
            str(out / "run.json"),
            "--junit",
            str(out / "run.xml"),
            "--data-dir",
            str(data),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str], sig: signal.Signals) -> tuple[int, str]:
    """Send ``sig``; the exit code and everything printed on stdout."""
    assert process.stdout is not None
    out_lines: list[str] = []
    pending = lines_of(process.stdout)
    process.send_signal(sig)
    try:
        code = process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return code, drain(pending, out_lines)


def check_cancelled_outputs(stdout: str, out: Path, data: Path, reason: str) -> dict[str, Any]:
    """The printed bundle verifies, is marked cancelled, and so are the reports."""
    match = re.search(r"proof bundle of the cancelled run: (\S+)", stdout)
    assert match, stdout
    bundle = Path(match.group(1))
    assert bundle.parent.parent == out / "proofs"  # --proof-dir / mss / <run id>
    assert "CANCELLED" in stdout and f"segur-sim proof verify {bundle}" in stdout
    verified = cli("proof", "verify", str(bundle), "--data-dir", str(data))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith(f"VALID: {bundle}")

    predicate = json.loads((bundle / "report.json").read_text())["predicate"]
    assert predicate["result"] == "FAILED" and predicate["run"]["status"] == "cancel"
    cancellation = predicate["cancellation"]
    assert reason in cancellation["reason"]
    assert cancellation["stoppedIn"] == {"test": "MSS-08", "step": "main", "waiting": True}
    assert "This run was CANCELLED" in cancellation["text"]
    assert [v["status"] for v in predicate["verdicts"]] == ["cancel"]
    assert "This run was CANCELLED" in (bundle / "report.html").read_text()
    artefact = json.loads((bundle / "artefacts" / "run.json").read_text())
    assert artefact["cancellation"]["reason"] == cancellation["reason"]

    document = json.loads((out / "run.json").read_text())
    assert document["status"] == "cancel" and document["proofDir"] == str(bundle)
    assert document["cancellation"]["reason"] == cancellation["reason"]
    assert document["cancellation"]["text"] == cancellation["text"]
    suite = ET.parse(out / "run.xml").getroot().find("testsuite")
    assert suite is not None
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["cancelled"] == "true" and props["cancellation"] == cancellation["text"]
    case = suite.find("testcase")
    assert case is not None
    error = case.find("error")
    assert error is not None and "run cancelled" in str(error.get("message"))
    return cancellation


def test_ctrl_c_during_a_person_driven_run_writes_a_cancelled_proof(tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    out.mkdir()
    process = start_run(data, out, "dr.ctrlc@mssante.localhost")
    assert process.stderr is not None
    err_lines, seen = lines_of(process.stderr), []
    wait_for_line(err_lines, "waiting for the software under test", seen)

    code, stdout = finish(process, signal.SIGINT)
    stderr = drain(err_lines, seen)
    assert code == 1, stdout + stderr
    assert "SIGINT: cancelling the run" in stderr
    assert "Traceback" not in stderr
    check_cancelled_outputs(stdout, out, data, "Ctrl-C, SIGINT")


def alive(pid: int) -> bool:
    """Still running (a zombie waiting for a reaper is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_sigterm_during_a_scripted_run_stops_the_driver_process_group(tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    out.mkdir()
    pids = tmp_path / "driver.pids"
    # The driver starts a child of its own, then waits: both must be stopped.
    driver = f"sleep 600 & echo $$ $! > {pids}.tmp && mv {pids}.tmp {pids}; wait"
    process = start_run(data, out, "dr.sigterm@mssante.localhost", "--client-cmd", driver)
    assert process.stderr is not None
    err_lines, seen = lines_of(process.stderr), []
    wait_for_line(err_lines, "== MSS-08 / main", seen)
    deadline = time.monotonic() + 120
    while not pids.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    assert pids.exists(), drain(err_lines, seen)
    shell, child = (int(p) for p in pids.read_text().split())
    assert alive(shell) and alive(child)

    code, stdout = finish(process, signal.SIGTERM)
    stderr = drain(err_lines, seen)
    assert code == 1, stdout + stderr
    assert "SIGTERM: cancelling the run" in stderr
    assert not alive(shell) and not alive(child)
    check_cancelled_outputs(stdout, out, data, "SIGTERM")
