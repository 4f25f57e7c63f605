"""Benchmark: the CDA corpus (94 ANS examples) through XSD + header rules + document-type
rules, with the built-in rules and with the official rule pack (Saxon-HE).

Run from the repository root:

    python bench/bench_cda.py [--jobs 2] [--repeat 3] [--skip-official]

Figures, for each repetition (a new empty rule cache each time):

- built-in rules: 94 documents on 1 process (includes loading the XSD), then on --jobs;
- official pack, cold compile (empty disk cache): StrucMin, then every volet
  schematron, in one fresh process (``segur-sim interop rules compile --all-volets``),
  then the whole pack across --jobs fresh worker processes, largest first, worker
  start-up included (``... --all-volets --jobs N``);
- official pack, warm compile (disk cache filled: the Python steps are skipped, Saxon
  compiles again): in this process, then across --jobs fresh workers;
- official, 1 process, once everything is compiled (first uses of each stylesheet by
  Saxon included);
- official, --jobs fresh processes: the disk cache is warm, and each process compiles
  its own Saxon copy of what it needs (what ``segur-sim interop validate`` in a new
  process gets); each takes a contiguous share of the corpus (sorted by name, so by
  volet): the figure the < 20 s target is about;
- official, --jobs long-running workers (each has seen the corpus once): a server.

Each line gives the wall time, the CPU time spent in the validations (all threads of
the validating processes: less sensitive than wall time to other work on the machine),
and the per-document median and maximum (wall). With --repeat N the
last lines give the median of the N repetitions: the machine has 2 cores and other work
runs beside, so single runs vary.
Optionally measures pyschematron (``pip install pyschematron``) against Saxon-HE.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
ANS_CDA = (REPO / ".." / "shared" / "corpus" / "ans-cda").resolve()
XSD = ANS_CDA / "infrastructure" / "cda" / "CDA_extended.xsd"

# one doc's figure: name, wall seconds, CPU seconds of its process, result
Timing = tuple[str, float, float, str]


def corpus() -> list[Path]:
    files: list[Path] = []
    for folder in ("ExemplesCDA", '"ExemplesCDA'):
        if (ANS_CDA / folder).is_dir():
            files.extend(p for p in (ANS_CDA / folder).iterdir() if p.is_file())
    return sorted(files)


def _options(source: str, cache: str) -> Any:
    from simulators.interop.engine import ValidationOptions

    if source == "builtin":
        return ValidationOptions(xsd_path=XSD)
    return ValidationOptions(rules_dir=ANS_CDA, cache_dir=Path(cache), rule_source="official")


def _validate_one(args: tuple[str, str, str]) -> Timing:
    from simulators.interop.engine import validate_bytes

    path, source, cache = args
    content = Path(path).read_bytes()
    start, cpu = time.perf_counter(), time.process_time()
    report = validate_bytes(
        content, name=Path(path).name, kind="cda", options=_options(source, cache)
    )
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return Path(path).name, wall, cpu, report.result.value


def _validate_chunk(args: tuple[list[str], str, str]) -> list[Timing]:
    paths, source, cache = args
    return [_validate_one((path, source, cache)) for path in paths]


def _compile_all(cache: str) -> tuple[float, float, int, float]:
    """Compile StrucMin then every volet in this process;
    (StrucMin s, volets s, assertions, CPU s)."""
    from simulators.interop.cda.rulepack import STRUCMIN, RulePack

    cpu = time.process_time()
    pack = RulePack.open(ANS_CDA, cache_dir=Path(cache))
    start = time.perf_counter()
    sch = pack.schematron(pack.schematrons / STRUCMIN)
    strucmin = time.perf_counter() - start
    start = time.perf_counter()
    for volet in pack.volets:
        pack.schematron(volet.path)
    volets = time.perf_counter() - start
    return strucmin, volets, sch.compiled.asserts, time.process_time() - cpu


def _compile_fresh_process(cache: str) -> tuple[float, float, int, float]:
    """:func:`_compile_all` in a new spawned process (nothing kept in memory)."""
    import multiprocessing

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_compile_all, cache).result()


def _compile_pool(jobs: int, cache: str) -> tuple[float, float, int]:
    """The whole pack across ``jobs`` fresh workers (start-up included), as
    ``segur-sim interop rules compile --all-volets --jobs N`` does;
    (wall s, CPU s of the compilations, processes that took part)."""
    from simulators.interop.pool import ValidationPool

    start = time.perf_counter()
    with ValidationPool(jobs) as pool:
        results = pool.compile_pack(ANS_CDA, Path(cache), all_volets=True)
        wall = time.perf_counter() - start
    failed = [r.path.name for r in results if r.error]
    if failed:
        raise SystemExit(f"compilation failed: {failed}")
    return wall, sum(r.seconds for r in results), len({r.pid for r in results})


_BARRIER: Any = None


def _init_worker(barrier: Any) -> None:
    global _BARRIER
    _BARRIER = barrier


def _warm_worker(args: tuple[list[str], str, str]) -> None:
    paths, source, cache = args
    for path in paths:  # compiles what the corpus needs and pays Saxon's first uses
        _validate_one((path, source, cache))
    _BARRIER.wait()  # one warm-up per worker: nobody takes two


def _line(label: str, wall: float, results: list[Timing]) -> str:
    times = sorted(r[1] for r in results)
    cpu = sum(r[2] for r in results)
    failed = [r[0] for r in results if r[3] != "PASSED"]
    slowest = max(results, key=lambda r: r[1])
    return (
        f"  {label}: {len(results)} docs in {wall:.2f} s wall ({cpu:.2f} s CPU); per doc "
        f"median {statistics.median(times) * 1000:.0f} ms, max {times[-1] * 1000:.0f} ms "
        f"({slowest[0]}); FAILED: {len(failed)}"
    )


def run_serial(source: str, files: list[Path], cache: str) -> tuple[float, list[Timing]]:
    start = time.perf_counter()
    results = [_validate_one((str(p), source, cache)) for p in files]
    return time.perf_counter() - start, results


def run_pool(
    source: str, files: list[Path], jobs: int, cache: str, *, warm: bool
) -> tuple[float, list[Timing]]:
    import multiprocessing

    # spawn, not fork: a child forked after Saxon (a GraalVM native image) started in
    # the parent inherits it without its threads, and runs several times slower
    context = multiprocessing.get_context("spawn")
    barrier = context.Manager().Barrier(jobs) if warm else None
    with ProcessPoolExecutor(
        jobs, mp_context=context, initializer=_init_worker, initargs=(barrier,)
    ) as pool:
        if warm:
            # documents dealt one at a time: the workers have everything compiled
            paths = [str(p) for p in files]
            list(pool.map(_warm_worker, [(paths, source, cache)] * jobs))
            start = time.perf_counter()
            results = list(pool.map(_validate_one, [(str(p), source, cache) for p in files]))
            return time.perf_counter() - start, results
        # fresh workers: contiguous shares of the corpus (sorted by name, so by volet),
        # so that each compiles about half of the volet schematrons, not all of them
        size = -(-len(files) // jobs)
        shares = [[str(p) for p in files[i : i + size]] for i in range(0, len(files), size)]
        start = time.perf_counter()
        parts = list(pool.map(_validate_chunk, [(share, source, cache) for share in shares]))
        return time.perf_counter() - start, [r for part in parts for r in part]


def one_round(
    files: list[Path], jobs: int, official: bool, figures: dict[str, list[float]]
) -> None:
    def record(key: str, label: str, wall: float, results: list[Timing]) -> None:
        times = sorted(r[1] for r in results)
        figures[f"{key} wall s"].append(wall)
        figures[f"{key} CPU s"].append(sum(r[2] for r in results))
        figures[f"{key} median ms"].append(statistics.median(times) * 1000)
        figures[f"{key} max ms"].append(times[-1] * 1000)
        print(_line(label, wall, results))

    from simulators.interop.cda import rulepack

    # the stylesheets compiled by the previous repetition are dropped: a process that
    # keeps hundreds of Saxon executables compiles the next ones more slowly (its heap)
    rulepack._COMPILED.clear()
    with tempfile.TemporaryDirectory() as cache:
        print("built-in rules (XSD CDA_extended + header + document type):")
        wall, results = run_serial("builtin", files, cache)  # includes loading the XSD
        record("builtin 1 process", "builtin  1 process (XSD load included)", wall, results)
        if jobs > 1:
            wall, results = run_pool("builtin", files, jobs, cache, warm=False)
            record(f"builtin {jobs} processes", f"builtin  {jobs} processes", wall, results)
        if not official:
            return
        print("official rule pack (XSD + StrucMin + volet, Saxon-HE):")
        cold = tempfile.mkdtemp(dir=cache)
        strucmin, volets, asserts, cpu = _compile_fresh_process(cold)
        figures["official cold compile 1 process CPU s"].append(cpu)
        figures["official cold compile 1 process StrucMin s"].append(strucmin)
        figures["official cold compile 1 process volets s"].append(volets)
        figures["official cold compile 1 process whole pack s"].append(strucmin + volets)
        print(
            f"  cold compile, 1 fresh process: StrucMin {strucmin:.2f} s ({asserts} "
            f"assertions), volets {volets:.2f} s, whole pack {strucmin + volets:.2f} s "
            f"({cpu:.2f} s CPU)"
        )
        if jobs > 1:
            wall, busy, used = _compile_pool(jobs, cache)
            figures[f"official cold compile {jobs} processes whole pack s"].append(wall)
            print(
                f"  cold compile, whole pack across {jobs} fresh processes: {wall:.2f} s "
                f"(start-up included; {busy:.2f} s of compilation in {used} processes)"
            )
        else:
            _compile_all(cache)  # fills the disk cache for the warm figures
        strucmin, volets, asserts, cpu = _compile_all(cache)
        figures["official warm compile 1 process whole pack s"].append(strucmin + volets)
        print(
            f"  warm compile (disk cache), this process: StrucMin {strucmin:.2f} s, "
            f"volets {volets:.2f} s, whole pack {strucmin + volets:.2f} s ({cpu:.2f} s CPU)"
        )
        if jobs > 1:
            wall, busy, used = _compile_pool(jobs, cache)
            figures[f"official warm compile {jobs} processes whole pack s"].append(wall)
            print(
                f"  warm compile, whole pack across {jobs} fresh processes: {wall:.2f} s "
                f"(start-up included; {busy:.2f} s of compilation in {used} processes)"
            )
        wall, results = run_serial("official", files, cache)
        record(
            "official 1 process after compile",
            "official, 1 process, after compilation (first uses included)",
            wall,
            results,
        )
        if jobs > 1:
            # the disk cache is warm now; each fresh process compiles its own Saxon copy
            wall, results = run_pool("official", files, jobs, cache, warm=False)
            record(
                f"official {jobs} fresh processes",
                f"official, {jobs} fresh processes (Saxon compilation included)",
                wall,
                results,
            )
            wall, results = run_pool("official", files, jobs, cache, warm=True)
            record(
                f"official {jobs} warm workers",
                f"official, {jobs} long-running workers (corpus seen once before)",
                wall,
                results,
            )


def measure_pyschematron() -> None:
    try:
        import pyschematron  # type: ignore[import-not-found]
    except ImportError:
        print("  pyschematron not installed (pip install pyschematron): skipped")
        return
    try:
        from pyschematron import validate_document  # type: ignore[import-not-found]
    except ImportError:
        version = getattr(pyschematron, "__version__", "?")
        print(f"  pyschematron {version} is installed but has no validate_document API: skipped")
        return
    from lxml import etree

    doc = ANS_CDA / "ExemplesCDA" / "VAC-NOTE_2023.01.xml"
    for rel in (
        "CI-SIS_VAC-NOTE_2023.01.sch",
        "profils/structurationMinimale/ASIP-STRUCT-MIN-StrucMin.sch",
    ):
        sch = ANS_CDA / "schematrons" / rel
        start = time.perf_counter()
        try:
            result = validate_document(etree.parse(str(doc)), etree.parse(str(sch)))
            ok = getattr(result, "is_valid", lambda: "?")()
            print(f"  pyschematron {sch.name}: {time.perf_counter() - start:.2f} s, valid={ok}")
        except Exception as exc:
            print(
                f"  pyschematron {sch.name}: FAILED after {time.perf_counter() - start:.2f} s: "
                f"{type(exc).__name__}: {str(exc)[:160]}"
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1, help="repetitions; medians at the end")
    parser.add_argument("--skip-official", action="store_true")
    args = parser.parse_args()
    files = corpus()
    print(f"corpus: {len(files)} CDA documents ({ANS_CDA})")
    figures: dict[str, list[float]] = defaultdict(list)
    for i in range(args.repeat):
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"== repetition {i + 1}/{args.repeat} (load average before: {load})")
        one_round(files, args.jobs, not args.skip_official, figures)
    if args.repeat > 1:
        print(f"== median of {args.repeat} repetitions")
        for key, values in figures.items():
            runs = ", ".join(f"{v:.2f}" for v in values)
            print(f"  {key}: {statistics.median(values):.2f}  ({runs})")
    print("pyschematron vs saxonche:")
    measure_pyschematron()


if __name__ == "__main__":
    main()
