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
import threading
import time
from collections.abc import Callable, Sequence
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
    out: list[Validated] = []
    for index, name, content in items:
        done = _validate_timed(content, name, kind, options)
        out.append(Validated(index, done.report, done.seconds))
        if _PROGRESS is not None:
            _PROGRESS.put((call, index, done.report.result.value))
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


class ValidationPool:
    """Spawned worker processes that validate and compile; started on first use.

    ``jobs`` is the number of processes (``0``: one per CPU). With ``jobs == 1``
    :meth:`validate_many` and :meth:`compile_pack` run in the calling process, as
    before; :meth:`validate` (for the event loop) always uses a worker process.
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

    def _pool(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._progress = SPAWN.Queue()
                self._executor = ProcessPoolExecutor(
                    self.jobs,
                    mp_context=SPAWN,
                    initializer=_init_worker,
                    initargs=(self._progress,),
                )
            return self._executor

    def _discard(self, executor: ProcessPoolExecutor) -> None:
        """Forget a broken executor (a worker died): the next call starts a new one."""
        with self._lock:
            if self._executor is executor:
                self._executor = None
        executor.shutdown(wait=False, cancel_futures=True)

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
        executor = self._pool()
        try:
            future = executor.submit(_validate_timed, content, name, kind, options)
            done: Validated = await asyncio.wrap_future(future)
        except BrokenProcessPool as exc:
            self._discard(executor)
            return _worker_died(content, name, kind, exc)
        return done.report

    def validate_many(
        self,
        items: Sequence[tuple[str, bytes]],
        *,
        kind: str,
        options: ValidationOptions,
        on_done: Callable[[int, str], None] | None = None,
    ) -> list[Validated]:
        """Validate (name, content) pairs; the results come back in the same order.

        ``on_done(index, result)`` is called as each one finishes (from this thread).
        Work is dealt in contiguous runs, a few per worker: neighbouring files often
        share a volet schematron, which a worker then compiles once.
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
        executor = self._pool()
        # progress messages carry the call: a late one from an earlier call is ignored
        call = next(self._calls)
        indexed = [(i, name, content) for i, (name, content) in enumerate(items)]
        runs = min(len(indexed), self.jobs * 3)
        size = -(-len(indexed) // runs)
        chunks = [indexed[i : i + size] for i in range(0, len(indexed), size)]
        futures: list[Future[list[Validated]]] = [
            executor.submit(_validate_chunk, call, chunk, kind, options) for chunk in chunks
        ]
        reported: set[int] = set()
        while len(reported) < len(indexed):
            try:
                origin, index, result = self._progress.get(timeout=0.2)
            except queue.Empty:
                if all(f.done() for f in futures):
                    break
                continue
            if origin != call:
                continue
            reported.add(index)
            if on_done is not None:
                on_done(index, result)
        results: dict[int, Validated] = {}
        broken = False
        for chunk, future in zip(chunks, futures, strict=True):
            try:
                for done in future.result():
                    results[done.index] = done
            except BrokenProcessPool as exc:
                broken = True
                for index, name, content in chunk:
                    if index not in results:
                        report = _worker_died(content, name, kind, exc)
                        results[index] = Validated(index, report, 0.0)
        if broken:
            self._discard(executor)
        for index in sorted(set(results) - reported):
            if on_done is not None:
                on_done(index, results[index].report.result.value)
        return [results[i] for i in range(len(indexed))]

    # -- compilation --

    def compile_pack(
        self, rules_dir: Path, cache_dir: Path, *, all_volets: bool = True
    ) -> list[CompileResult]:
        """Compile StrucMin (and every volet) across the workers, largest first; each
        worker keeps what it compiled for its next validations. Results in the pack's
        order (StrucMin first)."""
        targets = pack_targets(rules_dir, cache_dir, all_volets=all_volets)
        if self.jobs <= 1:
            return [compile_one(rules_dir, cache_dir, path) for path in targets]
        executor = self._pool()
        order = [targets[0], *sorted(targets[1:], key=_cost, reverse=True)]
        futures = {path: executor.submit(compile_one, rules_dir, cache_dir, path) for path in order}
        return [futures[path].result() for path in targets]


def _worker_died(content: bytes, name: str, kind: str, exc: BaseException) -> ValidationReport:
    return input_error_report(
        content,
        name=name,
        kind=kind if kind != "auto" else "unknown",
        validator_id=kind,
        message=f"the validation worker process stopped: {type(exc).__name__}: {exc}",
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
