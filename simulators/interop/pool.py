"""Validation and rule compilation in worker processes.

Used by ``segur-sim interop validate --jobs N``, ``segur-sim interop rules compile
--jobs N`` and the HTTP endpoints (EVS and upload), so that a validation never runs
on the event loop: saxonche keeps the GIL for the whole of a Saxon call (a StrucMin
compilation holds it for seconds), so a worker *thread* would still stop the loop.

Workers are *spawned*, never forked: a child forked from a process where Saxon (a
GraalVM native image) has started inherits it without its threads and runs several
times slower. Each worker keeps its own compiled stylesheets (Saxon-HE cannot save
them); the generated XSLT is shared through the disk cache.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simulators.interop.engine import ValidationOptions, uses_custom_validators, validate_bytes
from simulators.interop.report import ValidationReport, input_error_report

SPAWN = multiprocessing.get_context("spawn")
WORKERS_ENV = "SEGUR_SIM_INTEROP_WORKERS"


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def resolve_jobs(jobs: int) -> int:
    """``0`` means one worker per CPU; anything else is taken as it is (at least 1)."""
    return cpu_count() if jobs <= 0 else jobs


@dataclass(frozen=True)
class Validated:
    """One validated object: its report and the seconds its validation took."""

    index: int
    report: ValidationReport
    seconds: float


@dataclass(frozen=True)
class CompileResult:
    """One schematron compiled (Python steps and Saxon) in some process."""

    path: Path
    asserts: int
    patterns: int
    seconds: float
    from_cache: bool
    issues: tuple[tuple[str, str, str], ...]  # (code, source, message)
    pid: int
    error: str = ""


# -- what runs in a worker -----------------------------------------------------------

_PROGRESS: Any = None
_STARTED, _DONE = "started", "done"


def _init_worker(progress: Any = None) -> None:
    global _PROGRESS
    _PROGRESS = progress


def _validate_timed(content: bytes, name: str, kind: str, options: ValidationOptions) -> Validated:
    start = time.perf_counter()
    report = validate_bytes(content, name=name, kind=kind, options=options)
    return Validated(-1, report, time.perf_counter() - start)


def _validate_chunk(
    call: int, items: list[tuple[int, str, bytes]], kind: str, options: ValidationOptions
) -> list[Validated]:
    """Validate a run of documents; the progress queue hears ``(call, index, STARTED,
    pid)`` before each one and ``(call, index, DONE, result)`` after it (which document
    a worker that dies was validating)."""
    out: list[Validated] = []
    pid = os.getpid()
    for index, name, content in items:
        if _PROGRESS is not None:
            _PROGRESS.put((call, index, _STARTED, pid))
        done = _validate_timed(content, name, kind, options)
        out.append(Validated(index, done.report, done.seconds))
        if _PROGRESS is not None:
            _PROGRESS.put((call, index, _DONE, done.report.result.value))
    return out


def compile_one(rules_dir: Path, cache_dir: Path, path: Path) -> CompileResult:
    """Compile one schematron of the pack in this process (kept for its validations)."""
    from simulators.interop.cda.rulepack import RulePack

    start = time.perf_counter()
    pack = RulePack.open(rules_dir, cache_dir=cache_dir)
    try:
        sch = pack.schematron(path)
    except Exception as exc:  # a broken schematron must not stop the others
        return CompileResult(
            path, 0, 0, time.perf_counter() - start, False, (), os.getpid(),
            error=f"{type(exc).__name__}: {exc}",
        )  # fmt: skip
    return CompileResult(
        path,
        sch.compiled.asserts,
        sch.compiled.patterns,
        time.perf_counter() - start,
        sch.from_cache,
        tuple((i.code, i.source, i.message) for i in sch.compiled.issues),
        os.getpid(),
    )


def pack_targets(rules_dir: Path, cache_dir: Path, *, all_volets: bool) -> list[Path]:
    """StrucMin, then (with ``all_volets``) every ``CI-SIS_*.sch`` of the pack."""
    from simulators.interop.cda.rulepack import STRUCMIN, RulePack

    pack = RulePack.open(rules_dir, cache_dir=cache_dir)
    targets = [pack.schematrons / STRUCMIN]
    if all_volets:
        targets += [v.path for v in pack.volets]
    return targets


def _cost(path: Path) -> int:
    """A rough cost for scheduling, largest first: the file and what sits next to it
    is unknown before compiling, so the main file's size (StrucMin is forced first)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


# -- the pool ------------------------------------------------------------------------

# a batch whose executors keep breaking: after this many, what is left gets the
# worker-died report
_ROUNDS = 3


class ValidationPool:
    """Spawned worker processes that validate and compile; started on first use.

    ``jobs`` is the number of processes (``0``: one per CPU). With ``jobs == 1``
    :meth:`validate_many` and :meth:`compile_pack` run in the calling process, as
    before; :meth:`validate` (for the event loop) always uses a worker process.

    A worker process that dies (a crash, the memory limit, a kill) breaks its
    executor: the executor stops the other workers and fails everything pending. The
    pool then forgets that executor and the next call starts a new one. The document
    the dead worker was validating gets a FAILED report saying so
    (``INPUT-INTERNAL-01``); in :meth:`validate_many` the other documents of the batch
    are validated again in the new executor and get their own verdicts.
    """

    def __init__(self, jobs: int = 1) -> None:
        self.jobs = resolve_jobs(jobs)
        self._lock = threading.Lock()
        self._executor: ProcessPoolExecutor | None = None
        self._progress: Any = None
        self._calls = itertools.count()

    def __enter__(self) -> ValidationPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _pool(self) -> tuple[ProcessPoolExecutor, Any]:
        """The executor and its progress queue. A new executor gets a new queue: a
        worker killed while writing to a queue may leave it locked."""
        with self._lock:
            if self._executor is None:
                self._progress = SPAWN.Queue()
                self._executor = ProcessPoolExecutor(
                    self.jobs,
                    mp_context=SPAWN,
                    initializer=_init_worker,
                    initargs=(self._progress,),
                )
            return self._executor, self._progress

    def _discard(self, executor: ProcessPoolExecutor) -> dict[int, Any]:
        """Forget a broken executor (a worker died): the next call starts a new one.
        Returns its worker processes (pid -> process), to tell which one died."""
        with self._lock:
            if self._executor is executor:
                self._executor = None
                self._progress = None
        processes = dict(getattr(executor, "_processes", None) or {})
        executor.shutdown(wait=False, cancel_futures=True)
        return processes

    def close(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
            progress, self._progress = self._progress, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        if progress is not None:
            progress.close()

    # -- validation --

    async def validate(
        self, content: bytes, *, name: str, kind: str, options: ValidationOptions
    ) -> ValidationReport:
        """Validate off the event loop, in a worker process. A validator registered
        at run time in this process (``engine.register``) is not known to the
        workers: then the validation runs in a thread of this process instead."""
        if uses_custom_validators():
            return await asyncio.to_thread(
                validate_bytes, content, name=name, kind=kind, options=options
            )
        for attempt in range(2):
            executor, _ = self._pool()
            try:
                future = executor.submit(_validate_timed, content, name, kind, options)
            except RuntimeError as exc:
                # broken by an earlier death, or closed, before this call: nothing of
                # it ran; once more in a new executor
                self._discard(executor)
                if attempt:
                    return _pool_unusable(content, name, kind, exc)
                continue
            try:
                done: Validated = await asyncio.wrap_future(future)
            except BrokenProcessPool:
                processes = self._discard(executor)
                dead = await asyncio.to_thread(_died_on_their_own, processes)
                return _worker_died(content, name, kind, dead.values())
            return done.report
        raise AssertionError("unreachable")  # pragma: no cover

    def validate_many(
        self,
        items: Sequence[tuple[str, bytes]],
        *,
        kind: str,
        options: ValidationOptions,
        on_done: Callable[[int, str], None] | None = None,
    ) -> list[Validated]:
        """Validate (name, content) pairs; the results come back in the same order.

        ``on_done(index, result)`` is called once for each, as it finishes (from this
        thread). Work is dealt in contiguous runs, a few per worker: neighbouring
        files often share a volet schematron, which a worker then compiles once.

        When a worker process dies, the document it was validating gets a FAILED
        report (``INPUT-INTERNAL-01``) and every other one not yet returned is
        validated again in a new executor (at most ``_ROUNDS`` executors per call).
        """
        if self.jobs <= 1 or len(items) <= 1 or uses_custom_validators():
            # (a validator registered at run time exists in this process only)
            out = []
            for index, (name, content) in enumerate(items):
                done = _validate_timed(content, name, kind, options)
                out.append(Validated(index, done.report, done.seconds))
                if on_done is not None:
                    on_done(index, done.report.result.value)
            return out
        results: dict[int, Validated] = {}
        reported: set[int] = set()

        def report(index: int, result: str) -> None:
            if index not in reported:
                reported.add(index)
                if on_done is not None:
                    on_done(index, result)

        todo = list(range(len(items)))
        codes: list[int] = []
        for _ in range(_ROUNDS):
            todo, died, codes = self._round(items, todo, kind, options, results, report)
            for index, code in died.items():
                name, content = items[index]
                results[index] = Validated(index, _worker_died(content, name, kind, [code]), 0.0)
            if not todo:
                break
        for index in todo:  # the executors kept breaking: no verdict for these
            name, content = items[index]
            results[index] = Validated(index, _worker_died(content, name, kind, codes), 0.0)
        for index in sorted(results):
            report(index, results[index].report.result.value)
        return [results[i] for i in range(len(items))]

    def _round(
        self,
        items: Sequence[tuple[str, bytes]],
        todo: list[int],
        kind: str,
        options: ValidationOptions,
        results: dict[int, Validated],
        report: Callable[[int, str], None],
    ) -> tuple[list[int], dict[int, int], list[int]]:
        """Validate ``todo`` in the current executor, into ``results``. Returns what is
        left to do, the documents in flight in workers that died (index -> exit code)
        and the exit codes of those workers."""
        executor, progress = self._pool()
        # progress messages carry the call: a late one from an earlier call is ignored
        call = next(self._calls)
        indexed = [(i, *items[i]) for i in todo]
        runs = min(len(indexed), self.jobs * 3)
        size = -(-len(indexed) // runs)
        chunks = [indexed[i : i + size] for i in range(0, len(indexed), size)]
        futures: list[Future[list[Validated]]] = []
        for chunk in chunks:
            try:
                futures.append(executor.submit(_validate_chunk, call, chunk, kind, options))
            except RuntimeError:  # broken before, or while, this call submitted
                break
        started: dict[int, int] = {}  # index -> pid of the worker that began it
        finished: set[int] = set()

        def take(message: tuple[int, int, str, Any]) -> None:
            origin, index, event, value = message
            if origin != call:
                return
            if event == _STARTED:
                started[index] = value
            else:
                finished.add(index)
                report(index, value)

        while len(finished) < len(indexed) and not all(f.done() for f in futures):
            try:
                take(progress.get(timeout=0.2))
            except queue.Empty:
                continue
        broken = len(futures) < len(chunks)
        for future in futures:
            try:
                for done in future.result():
                    results[done.index] = done
            except BrokenProcessPool:
                broken = True
        if not broken:
            return [], {}, []
        dead = _died_on_their_own(self._discard(executor))
        while True:  # what the workers said before they ended
            try:
                take(progress.get(block=False))
            except queue.Empty:
                break
        # a worker validates its run in order: what it began and did not finish is
        # what it was validating when it died
        died = {
            index: dead[pid]
            for index, pid in started.items()
            if pid in dead and index not in finished and index not in results
        }
        left = [i for i in todo if i not in results and i not in died]
        return left, died, list(dead.values())

    # -- compilation --

    def compile_pack(
        self, rules_dir: Path, cache_dir: Path, *, all_volets: bool = True
    ) -> list[CompileResult]:
        """Compile StrucMin (and every volet) across the workers, largest first; each
        worker keeps what it compiled for its next validations. Results in the pack's
        order (StrucMin first). A schematron whose worker died gets a result with an
        ``error`` saying so."""
        targets = pack_targets(rules_dir, cache_dir, all_volets=all_volets)
        if self.jobs <= 1:
            return [compile_one(rules_dir, cache_dir, path) for path in targets]
        order = [targets[0], *sorted(targets[1:], key=_cost, reverse=True)]
        for attempt in range(2):
            executor, _ = self._pool()
            try:
                futures = {
                    path: executor.submit(compile_one, rules_dir, cache_dir, path) for path in order
                }
            except RuntimeError:
                # broken before this call (a worker died): once more in a new executor
                self._discard(executor)
                if attempt:
                    raise
                continue
            results = []
            dead: dict[int, int] | None = None
            for path in targets:
                try:
                    results.append(futures[path].result())
                except BrokenProcessPool:
                    if dead is None:
                        dead = _died_on_their_own(self._discard(executor))
                    why = f"the worker process compiling it died ({_how(dead.values())})"
                    results.append(CompileResult(path, 0, 0, 0.0, False, (), 0, error=why))
            return results
        raise AssertionError("unreachable")  # pragma: no cover


def _died_on_their_own(processes: dict[int, Any], timeout: float = 5.0) -> dict[int, int]:
    """The exit codes of the workers that died on their own (pid -> code). Once one
    dies, the executor stops the others with SIGTERM: those are not counted. Waits a
    little for the stopped ones to end."""
    deadline = time.monotonic() + timeout
    dead: dict[int, int] = {}
    for pid, process in processes.items():
        while True:
            try:
                code = process.exitcode
            except ValueError:  # a closed Process object
                code = None
                break
            if code is not None or time.monotonic() >= deadline:
                break
            time.sleep(0.01)
        if code is not None and code != -signal.SIGTERM:
            dead[pid] = code
    return dead


def _how(codes: Iterable[int]) -> str:
    """``killed by SIGKILL``, ``exit code 1``; ``cause unknown`` without a code."""
    out = []
    for code in sorted(set(codes)):
        if code < 0:
            try:
                out.append(f"killed by {signal.Signals(-code).name}")
            except ValueError:
                out.append(f"killed by signal {-code}")
        else:
            out.append(f"exit code {code}")
    return ", ".join(out) or "cause unknown"


def _worker_died(content: bytes, name: str, kind: str, codes: Iterable[int]) -> ValidationReport:
    return input_error_report(
        content,
        name=name,
        kind=kind if kind != "auto" else "unknown",
        validator_id=kind,
        message=(
            f"the worker process validating this object died ({_how(codes)}) before "
            "giving a verdict: a crash, the memory limit or a kill. No verdict; the pool "
            "has replaced the process for the next validations"
        ),
        constraint_id="INPUT-INTERNAL-01",
    )


def _pool_unusable(content: bytes, name: str, kind: str, exc: BaseException) -> ValidationReport:
    return input_error_report(
        content,
        name=name,
        kind=kind if kind != "auto" else "unknown",
        validator_id=kind,
        message=f"no validation worker process could take this object: {exc}",
        constraint_id="INPUT-INTERNAL-01",
    )


# -- the process-wide pool of the HTTP endpoints -----------------------------------------

_SHARED_LOCK = threading.Lock()
_SHARED: ValidationPool | None = None


def shared_workers() -> int:
    """Worker processes of the HTTP pool: ``$SEGUR_SIM_INTEROP_WORKERS``, else
    ``min(2, CPUs)``."""
    value = os.environ.get(WORKERS_ENV, "").strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    return min(2, cpu_count())


def shared_pool() -> ValidationPool:
    """The process-wide pool used by the HTTP endpoints (started on first use)."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None:
            _SHARED = ValidationPool(shared_workers())
        return _SHARED


def close_shared_pool() -> None:
    global _SHARED
    with _SHARED_LOCK:
        pool, _SHARED = _SHARED, None
    if pool is not None:
        pool.close()


async def validate_off_loop(
    content: bytes, *, name: str, kind: str, options: ValidationOptions
) -> ValidationReport:
    """What an HTTP handler awaits: the validation runs in a worker process of
    :func:`shared_pool`; the event loop keeps serving other requests meanwhile."""
    return await shared_pool().validate(content, name=name, kind=kind, options=options)
