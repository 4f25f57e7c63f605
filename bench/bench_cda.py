"""Benchmark: the CDA corpus (94 ANS examples) through XSD + header rules + document-type
rules, with the built-in rules and with the official rule pack (Saxon-HE).

Run from the repository root:

    python bench/bench_cda.py [--jobs 2] [--repeat 3] [--skip-official]

Figures, for each repetition (a new empty rule cache each time):

- built-in rules: 94 documents on 1 process (includes loading the XSD), then on --jobs;
- official pack, cold compile: StrucMin, then every volet schematron, in this process
  with an empty cache (what ``segur-sim interop rules compile --all-volets`` does);
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


def _compile_all(cache: str) -> tuple[float, float, int]:
    """Compile StrucMin then every volet; (StrucMin s, volets s, assertions)."""
    from simulators.interop.cda.rulepack import STRUCMIN, RulePack

    pack = RulePack.open(ANS_CDA, cache_dir=Path(cache))
    start = time.perf_counter()
    sch = pack.schematron(pack.schematrons / STRUCMIN)
    strucmin = time.perf_counter() - start
    start = time.perf_counter()
    for volet in pack.volets:
        pack.schematron(volet.path)
    return strucmin, time.perf_counter() - start, sch.compiled.asserts


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
        cpu = time.process_time()
        strucmin, volets, asserts = _compile_all(cache)
        figures["official cold compile CPU s"].append(time.process_time() - cpu)
        figures["official cold compile StrucMin s"].append(strucmin)
        figures["official cold compile volets s"].append(volets)
        print(
            f"  cold compile: StrucMin {strucmin:.2f} s ({asserts} assertions), "
            f"volets {volets:.2f} s"
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
