"""Benchmark: the CDA corpus (94 ANS examples) through XSD + header rules + document-type
rules, with the built-in rules and with the official rule pack (Saxon-HE).

Run from the repository root:  python bench/bench_cda.py [--jobs 2] [--skip-official]
Prints cold (compilation) and warm figures, per-document median and maximum.
Optionally measures pyschematron (``pip install pyschematron``) against Saxon-HE.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
ANS_CDA = (REPO / ".." / "shared" / "corpus" / "ans-cda").resolve()
XSD = ANS_CDA / "infrastructure" / "cda" / "CDA_extended.xsd"


def corpus() -> list[Path]:
    files: list[Path] = []
    for folder in ("ExemplesCDA", '"ExemplesCDA'):
        if (ANS_CDA / folder).is_dir():
            files.extend(p for p in (ANS_CDA / folder).iterdir() if p.is_file())
    return sorted(files)


def _options(source: str, cache: str) -> object:
    from simulators.interop.engine import ValidationOptions

    if source == "builtin":
        return ValidationOptions(xsd_path=XSD)
    return ValidationOptions(rules_dir=ANS_CDA, cache_dir=Path(cache), rule_source="official")


def _validate_chunk(args: tuple[list[str], str, str]) -> list[tuple[str, float, str]]:
    from simulators.interop.engine import validate_bytes

    paths, source, cache = args
    options = _options(source, cache)
    out = []
    for p in paths:
        content = Path(p).read_bytes()
        start = time.perf_counter()
        report = validate_bytes(content, name=Path(p).name, kind="cda", options=options)  # type: ignore[arg-type]
        out.append((Path(p).name, time.perf_counter() - start, report.result.value))
    return out


def run(source: str, files: list[Path], jobs: int, cache: str) -> None:
    start = time.perf_counter()
    if jobs <= 1:
        results = _validate_chunk(([str(p) for p in files], source, cache))
    else:
        chunks = [[str(p) for p in files[i::jobs]] for i in range(jobs)]
        with ProcessPoolExecutor(jobs) as pool:
            results = [
                r
                for part in pool.map(_validate_chunk, [(c, source, cache) for c in chunks])
                for r in part
            ]
    total = time.perf_counter() - start
    times = sorted(t for _, t, _ in results)
    failed = [n for n, _, r in results if r != "PASSED"]
    slowest = max(results, key=lambda r: r[1])
    print(
        f"  {source:8} jobs={jobs}: {len(results)} docs in {total:.2f} s wall; per doc "
        f"median {statistics.median(times) * 1000:.0f} ms, max {times[-1] * 1000:.0f} ms "
        f"({slowest[0]}); FAILED: {len(failed)} {failed[:5]}"
    )


def compile_official(cache: str) -> None:
    from simulators.interop.cda.rulepack import STRUCMIN, RulePack

    pack = RulePack.open(ANS_CDA, cache_dir=Path(cache))
    start = time.perf_counter()
    sch = pack.schematron(pack.schematrons / STRUCMIN)
    print(
        f"  StrucMin cold compile: {time.perf_counter() - start:.2f} s "
        f"({sch.compiled.asserts} assertions generated)"
    )
    start = time.perf_counter()
    for volet in pack.volets:
        pack.schematron(volet.path)
    print(f"  {len(pack.volets)} volet schematrons compiled in {time.perf_counter() - start:.2f} s")


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
    parser.add_argument("--skip-official", action="store_true")
    args = parser.parse_args()
    files = corpus()
    print(f"corpus: {len(files)} CDA documents ({ANS_CDA})")
    with tempfile.TemporaryDirectory() as cache:
        print("built-in rules (XSD CDA_extended + header + document type):")
        run("builtin", files, 1, cache)  # first pass: includes XSD loading
        run("builtin", files, args.jobs, cache)
        if not args.skip_official:
            print("official rule pack (XSD + StrucMin + volet, Saxon-HE):")
            compile_official(cache)
            run("official", files, 1, cache)
            if args.jobs > 1:
                run("official", files, args.jobs, cache)
    print("pyschematron vs saxonche:")
    measure_pyschematron()


if __name__ == "__main__":
    main()
