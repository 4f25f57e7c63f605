"""A validation worker process killed (SIGKILL) in the middle of a validation.

The validation is held inside Saxon, on the real code path, by a rule pack whose header
schematron reads a named pipe for the documents titled ``GATE-n`` only: the worker
blocks there until the test writes to the pipe. The test finds the worker holding the
pipe among the pool's own processes (``/proc/PID/fd``) and kills it. Nothing in
``simulators.interop.pool`` knows about tests.

What is proven, for ``await ValidationPool.validate`` and ``validate_many``:

- the document being validated gets a FAILED report saying the worker died (no
  traceback, no hang);
- in a batch, every other document gets its real verdict, even those that were in
  flight in the *other* worker (which the executor stops once one worker dies);
- the next validation on the same pool works, in a new executor.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from interop_helpers import FIXTURES, mutate

from simulators.interop.engine import ValidationOptions, validate_bytes
from simulators.interop.pool import Validated, ValidationPool
from simulators.interop.report import ValidationReport

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="named pipes and /proc/PID/fd"
)

SCH = "http://purl.oclc.org/dsdl/schematron"
GOOD = FIXTURES / "cda" / "segur-sim_VAC-NOTE_2023.01.xml"
TITLE = b"<title>Note de vaccination</title>"
# a guard against a hang, never a measure of speed
PATIENCE = 60.0


def _gated_pack(root: Path, gates: int) -> tuple[Path, dict[int, Path]]:
    """StrucMin holds one rule, for the documents titled ``GATE-n``: it reads
    ``GATE-n.xml``, a named pipe, through a computed URI (read when the rule runs)."""
    folder = root / "schematrons" / "profils" / "structurationMinimale"
    folder.mkdir(parents=True)
    (folder / "ASIP-STRUCT-MIN-StrucMin.sch").write_text(
        f"""<schema xmlns="{SCH}" queryBinding="xslt2">
<ns prefix="cda" uri="urn:hl7-org:v3"/>
<pattern id="gate"><rule context="/cda:ClinicalDocument[starts-with(cda:title, 'GATE-')]">
  <assert test="doc(concat(normalize-space(cda:title), '.xml'))/gate/@open = 'yes'"
    >the gate was not opened</assert>
</rule></pattern></schema>""",
        encoding="utf-8",
    )
    fifos = {}
    for n in range(1, gates + 1):
        fifos[n] = folder / f"GATE-{n}.xml"
        os.mkfifo(fifos[n])
    return root, fifos


def _gated(n: int) -> bytes:
    return mutate(GOOD.read_bytes(), TITLE, f"<title>GATE-{n}</title>".encode())


def _options(tmp_path: Path, pack: Path) -> ValidationOptions:
    # "both": the built-in rules give the other documents real, differing verdicts
    return ValidationOptions(rules_dir=pack, cache_dir=tmp_path / "cache", rule_source="both")


def _executor(pool: ValidationPool) -> ProcessPoolExecutor:
    executor = pool._executor
    assert executor is not None, "the pool has no executor"
    return executor


def _worker_pids(pool: ValidationPool) -> set[int]:
    executor = pool._executor
    return set(getattr(executor, "_processes", None) or {}) if executor is not None else set()


def _holds(pid: int, path: Path) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:  # gone (or a zombie)
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                return True
        except OSError:
            continue
    return False


def _open_writer(gate: Path, alive: Callable[[], bool]) -> int | None:
    """The write end of the pipe, once a reader (Saxon, in a worker) has opened it;
    None if the validation ended first. Opening a FIFO for writing without blocking
    fails (ENXIO) while nobody reads."""
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline and alive():
        try:
            return os.open(gate, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            time.sleep(0.02)
    return None


def _holder(
    pool: ValidationPool,
    gate: Path,
    *,
    besides: frozenset[int] = frozenset(),
    alive: Callable[[], bool] = lambda: True,
) -> int | None:
    """The pool worker that has the pipe open (polled: its open() returns just after
    ours); None if the validation ended first."""
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline and alive():
        for pid in _worker_pids(pool) - besides:
            if _holds(pid, gate):
                return pid
        time.sleep(0.02)
    return None


def _release(gates: dict[int, Path], alive: Callable[[], bool]) -> None:
    """After a failed assertion: open every gate still waited on, so that no
    validation stays blocked (the test has failed already)."""
    deadline = time.monotonic() + PATIENCE
    while alive() and time.monotonic() < deadline:
        for gate in gates.values():
            try:
                fd = os.open(gate, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                continue
            with contextlib.suppress(OSError):
                os.write(fd, b'<gate open="late"/>')
            os.close(fd)
        time.sleep(0.05)


def _died(report: ValidationReport, name: str) -> None:
    """A clean FAILED report that says the worker died, and nothing else."""
    assert report.object_name == name
    assert not report.passed and report.result.value == "FAILED"
    failed = [c for c in report.walk() if not c.passed]
    assert [c.constraint_id for c in failed] == ["INPUT-INTERNAL-01"], report.to_text()
    message = failed[0].description
    assert "worker process" in message and "died" in message, message
    assert "SIGKILL" in message, message
    text = report.to_text(verbose=True)
    assert "Traceback" not in text and "the gate was not opened" not in text


def _verdict(report: ValidationReport) -> tuple[str, str, list[str]]:
    return report.object_name, report.result.value, sorted(report.failed_ids())


def _batch() -> list[tuple[str, bytes]]:
    """Twelve objects, dealt by the pool in six runs of two: GATE-1 opens the first
    run, GATE-2 the last one, so that one worker waits at GATE-1 while the other
    validates runs 2 to 5 and then waits at GATE-2."""
    bad = mutate(
        GOOD.read_bytes(), b'confidentialityCode code="N"', b'confidentialityCode code="X"'
    )
    items = [
        ("gate-1.xml", _gated(1)),
        ("after-gate-1.xml", (FIXTURES / "cda" / "segur-sim_CR-BIO_2024.01.xml").read_bytes()),
        ("good.xml", GOOD.read_bytes()),
        ("bad.xml", bad),
        *((p.name, p.read_bytes()) for p in sorted((FIXTURES / "hl7v2").glob("*.hl7"))),
        ("unknown.bin", b"neither XML nor HL7"),
        ("pdf.xml", (FIXTURES / "cda" / "segur-sim_CR-BIO_niveau1_pdf.xml").read_bytes()),
        ("gate-2.xml", _gated(2)),
        ("after-gate-2.xml", bad),
    ]
    assert len(items) == 12 and items[10][0] == "gate-2.xml"
    return items


# -- await ValidationPool.validate (the HTTP endpoints) --------------------------------


async def _kill_during_validate(
    pool: ValidationPool, gate: Path, content: bytes, name: str, options: ValidationOptions
) -> tuple[ValidationReport, int, ProcessPoolExecutor]:
    """Validate, kill the worker once it waits at the gate; the report, the pid killed
    and the executor it belonged to."""
    task = asyncio.create_task(pool.validate(content, name=name, kind="cda", options=options))
    fd = await asyncio.to_thread(_open_writer, gate, lambda: not task.done())
    assert fd is not None, "the validation never reached the gate"
    try:
        pid = await asyncio.to_thread(_holder, pool, gate)
        assert pid is not None, "no worker of the pool holds the gate"
        assert not task.done()
        executor = _executor(pool)
        os.kill(pid, signal.SIGKILL)
        report = await asyncio.wait_for(task, PATIENCE)
    finally:
        os.close(fd)
    return report, pid, executor


async def test_async_validate_gets_a_failed_report_when_its_worker_dies(tmp_path: Path) -> None:
    pack, gates = _gated_pack(tmp_path / "pack", 1)
    options = _options(tmp_path, pack)
    pool = ValidationPool(2)
    try:
        report, pid, broken = await _kill_during_validate(
            pool, gates[1], _gated(1), "gate-1.xml", options
        )
        _died(report, "gate-1.xml")
        # the next validation, on the same pool: a real verdict, from a new executor
        good = await pool.validate(GOOD.read_bytes(), name="good.xml", kind="cda", options=options)
        assert good.passed, good.to_text()
        assert _verdict(good) == _verdict(
            validate_bytes(GOOD.read_bytes(), name="good.xml", kind="cda", options=options)
        )
        assert _executor(pool) is not broken
        assert pid not in _worker_pids(pool) and _worker_pids(pool)
        # and once more, failing for a real reason
        bad = mutate(
            GOOD.read_bytes(), b'confidentialityCode code="N"', b'confidentialityCode code="X"'
        )
        failed = await pool.validate(bad, name="bad.xml", kind="cda", options=options)
        assert failed.failed_ids() == {"FR-HDR-CONF-01"}
    finally:
        await asyncio.to_thread(pool.close)


# -- ValidationPool.validate_many (interop validate --jobs N) ---------------------------


def test_validate_many_survives_a_worker_killed_mid_validation(tmp_path: Path) -> None:
    pack, gates = _gated_pack(tmp_path / "pack", 2)
    options = _options(tmp_path, pack)
    items = _batch()
    expected = {
        name: _verdict(validate_bytes(content, name=name, kind="auto", options=options))
        for name, content in items
        if not name.startswith("gate-")
    }
    seen: list[tuple[int, str]] = []
    out: dict[str, list[Validated] | BaseException] = {}
    pool = ValidationPool(2)

    def run() -> None:
        try:
            out["done"] = pool.validate_many(
                items, kind="auto", options=options, on_done=lambda i, r: seen.append((i, r))
            )
        except BaseException as exc:  # reported by the assertions below
            out["done"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    fds: list[int] = []
    try:
        # one worker waits at GATE-1, the other one (runs 2-5 done) at GATE-2
        for n in (1, 2):
            fd = _open_writer(gates[n], thread.is_alive)
            assert fd is not None, f"the batch never reached GATE-{n}: {out}"
            fds.append(fd)
        first = _holder(pool, gates[1], alive=thread.is_alive)
        second = _holder(pool, gates[2], alive=thread.is_alive)
        assert first is not None and second is not None and first != second
        broken = _executor(pool)
        os.kill(first, signal.SIGKILL)
        # GATE-2's worker is stopped with the broken executor; GATE-2 is validated
        # again, in a worker of the new executor. The write end opened above is kept
        # until then: the new reader gets the answer, whenever it opens the pipe.
        retried = _holder(pool, gates[2], besides=frozenset({first, second}), alive=thread.is_alive)
        assert retried is not None, "GATE-2 was not validated again"
        assert _executor(pool) is not broken
        os.write(fds[1], b'<gate open="yes"/>')
        for fd in fds:
            os.close(fd)
        fds.clear()
        # GATE-1's document must not be validated again (it is the one whose worker
        # died): a reader of its pipe would make this open succeed
        again = _open_writer(gates[1], thread.is_alive)
        if again is not None:
            os.close(again)
        assert again is None, "GATE-1 was validated again"
        thread.join(PATIENCE)
        assert not thread.is_alive(), "validate_many did not return"
    finally:
        for fd in fds:
            os.close(fd)
        _release(gates, thread.is_alive)
        thread.join(PATIENCE)
    done = out["done"]
    assert isinstance(done, list), done
    try:
        assert [d.index for d in done] == list(range(len(items)))
        reports = {d.report.object_name: d.report for d in done}
        assert list(reports) == [name for name, _ in items]
        # (a) the document whose worker died
        _died(reports["gate-1.xml"], "gate-1.xml")
        # (b) every other one has its real verdict: the serial one, or (GATE-2, in
        # flight in the other worker when the executor stopped it) passed
        assert {n: _verdict(r) for n, r in reports.items() if n in expected} == expected
        assert reports["gate-2.xml"].passed, reports["gate-2.xml"].to_text()
        assert {v[1] for v in expected.values()} == {"PASSED", "FAILED"}
        # progress: each document reported once, with its final result
        assert sorted(i for i, _ in seen) == list(range(len(items)))
        assert dict(seen) == {d.index: d.report.result.value for d in done}
        # (c) the same pool validates the next batch
        again = pool.validate_many(items[1:4], kind="auto", options=options)
        assert [_verdict(d.report) for d in again] == [expected[n] for n, _ in items[1:4]]
        assert not _worker_pids(pool) & {first, second}
    finally:
        pool.close()


# -- a worker that died while idle: nothing was lost -----------------------------------


def _kill_idle_workers(pool: ValidationPool) -> ProcessPoolExecutor:
    """SIGKILL every worker of the pool between two calls; returns the executor once
    it knows it is broken (its manager thread noticed the death)."""
    executor = _executor(pool)
    pids = _worker_pids(pool)
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + PATIENCE
    while not getattr(executor, "_broken", False):
        assert time.monotonic() < deadline, "the executor never noticed"
        time.sleep(0.02)
    return executor


async def test_async_validate_after_an_idle_worker_died_gets_its_verdict() -> None:
    """The broken executor refuses the work before anything runs: the document goes
    to a new executor, it does not get a worker-died report."""
    options = ValidationOptions()
    pool = ValidationPool(1)
    try:
        first = await pool.validate(GOOD.read_bytes(), name="one.xml", kind="cda", options=options)
        assert first.passed
        broken = await asyncio.to_thread(_kill_idle_workers, pool)
        again = await pool.validate(GOOD.read_bytes(), name="two.xml", kind="cda", options=options)
        assert again.passed and "INPUT-INTERNAL-01" not in again.failed_ids(), again.to_text()
        assert _executor(pool) is not broken
    finally:
        await asyncio.to_thread(pool.close)


def test_batch_and_compilation_after_idle_workers_died(tmp_path: Path) -> None:
    pack, _ = _gated_pack(tmp_path / "pack", 0)
    options = _options(tmp_path, pack)
    items = _batch()[1:10]  # no gated document
    expected = [_verdict(validate_bytes(c, name=n, kind="auto", options=options)) for n, c in items]
    with ValidationPool(2) as pool:
        first = pool.validate_many(items, kind="auto", options=options)
        assert [_verdict(d.report) for d in first] == expected
        broken = _kill_idle_workers(pool)
        seen: list[int] = []
        again = pool.validate_many(
            items, kind="auto", options=options, on_done=lambda i, _r: seen.append(i)
        )
        assert [_verdict(d.report) for d in again] == expected
        assert sorted(seen) == list(range(len(items)))
        assert _executor(pool) is not broken
        # rules compile --jobs: the same
        compiled = pool.compile_pack(pack, tmp_path / "cache", all_volets=False)
        assert [c.error for c in compiled] == [""] and compiled[0].asserts == 1
        broken = _kill_idle_workers(pool)
        compiled = pool.compile_pack(pack, tmp_path / "cache", all_volets=False)
        assert [c.error for c in compiled] == [""] and compiled[0].asserts == 1
        assert _executor(pool) is not broken
