"""Validation in worker processes: ``interop validate --jobs N``, ``rules compile --jobs``,
the disk cache of the rule compiler, and HTTP validations kept off the event loop."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
from click.testing import CliRunner
from fastapi import FastAPI
from interop_helpers import FIXTURES, corpus_cda_files, mutate, need_corpus

from simulators.core.store.database import Database
from simulators.interop.api import (
    InMemoryValidationRepository,
    get_options,
    get_repository,
    router,
)
from simulators.interop.cda.schematron import compile_schematron
from simulators.interop.cli import interop
from simulators.interop.engine import ValidationOptions, validate_bytes
from simulators.interop.pool import ValidationPool
from simulators.interop.store import SqliteValidationRepository
from simulators.web.api_validations import build_router

SCH = "http://purl.oclc.org/dsdl/schematron"
GOOD = FIXTURES / "cda" / "segur-sim_VAC-NOTE_2023.01.xml"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _batch(tmp_path: Path) -> list[Path]:
    """Passing and failing CDAs, HL7 v2 messages, and a file of no known kind."""
    bad = tmp_path / "bad.xml"
    bad.write_bytes(
        mutate(GOOD.read_bytes(), b'confidentialityCode code="N"', b'confidentialityCode code="X"')
    )
    unknown = tmp_path / "unknown.bin"
    unknown.write_bytes(b"neither XML nor HL7")
    return [
        GOOD,
        bad,
        *sorted((FIXTURES / "hl7v2").glob("*.hl7")),
        FIXTURES / "cda" / "segur-sim_CR-BIO_2024.01.xml",
        unknown,
        FIXTURES / "cda" / "segur-sim_CR-BIO_niveau1_pdf.xml",
    ]


def _verdicts(reports: list[dict[str, object]]) -> list[tuple[object, ...]]:
    out = []
    for r in reports:
        failed = sorted(
            (c["constraintID"], c["severity"])
            for c in _constraints(r)
            if c["testResult"] == "FAILED"
        )
        out.append((r["object"], r["result"], r["counters"], failed))
    return out


def _constraints(node: object) -> list[dict[str, object]]:
    found: list[dict[str, object]] = []
    if isinstance(node, dict):
        if "constraintID" in node:
            found.append(node)
        for value in node.values():
            found.extend(_constraints(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_constraints(value))
    return found


def test_validate_jobs_gives_the_serial_verdicts_exit_code_and_records(tmp_path: Path) -> None:
    files = [str(p) for p in _batch(tmp_path)]
    runner = CliRunner()
    runs = {}
    for jobs in ("1", "2", "0"):
        data = tmp_path / f"data-{jobs}"
        out = tmp_path / f"out-{jobs}.json"
        result = runner.invoke(
            interop,
            [
                *("validate", "--jobs", jobs, "--data-dir", str(data)),
                *("--format", "json", "--out", str(out), *files),
            ],
        )
        # progress: one line per file, counted as they finish, then the summary
        n = len(files)
        assert f"[{n}/{n}] " in result.output and f"{n - 2} passed, 2 failed" in result.output
        with Database(data / "segur-sim.sqlite3") as db:
            rows, total = SqliteValidationRepository(db).page(offset=0, limit=100)
        recorded = sorted((r.report.object_name, r.report.result.value) for r in rows)
        runs[jobs] = (result.exit_code, _verdicts(json.loads(out.read_bytes())), recorded, total)
    assert runs["1"][0] == 1  # some failed
    assert runs["2"] == runs["1"] and runs["0"] == runs["1"]
    results = {name: result for name, result in runs["1"][2]}
    assert results["bad.xml"] == "FAILED" and results["unknown.bin"] == "FAILED"
    assert results[GOOD.name] == "PASSED" and runs["1"][3] == len(files)


def test_jobs_keep_the_order_and_the_junit_of_the_serial_run(tmp_path: Path) -> None:
    files = [str(p) for p in _batch(tmp_path)]
    runner = CliRunner()
    texts = {}
    for jobs in ("1", "2"):
        junit = tmp_path / f"junit-{jobs}.xml"
        result = runner.invoke(
            interop,
            ["validate", "--no-record", "--quiet", "--jobs", jobs, "--junit", str(junit), *files],
        )
        assert result.exit_code == 1
        # the text reports come in the order of the command line
        names = [
            line.split(": ")[0]
            for line in result.stdout.splitlines()
            if re.match(r"[^ #].*: (PASSED|FAILED) ", line)
        ]
        texts[jobs] = (names, junit.read_text(encoding="utf-8").count("<failure"))
    assert texts["2"] == texts["1"] and len(texts["1"][0]) == len(files)


def _collect(into: list[int]) -> Callable[[int, str], None]:
    return lambda index, _result: into.append(index)


def test_one_pool_serves_several_batches_in_order(tmp_path: Path) -> None:
    """Each batch reports each of its files once (``on_done``), in its own numbering,
    and gets its reports back in its own order."""
    files = _batch(tmp_path)
    with ValidationPool(2) as pool:
        for batch in (files, list(reversed(files[:5]))):
            items = [(p.name, p.read_bytes()) for p in batch]
            seen: list[int] = []
            done = pool.validate_many(
                items, kind="auto", options=ValidationOptions(), on_done=_collect(seen)
            )
            assert sorted(seen) == list(range(len(items)))
            assert [d.report.object_name for d in done] == [p.name for p in batch]


def test_official_pack_in_two_workers_matches_one_process(official: ValidationOptions) -> None:
    """Each worker compiles the stylesheets it needs (the disk cache shares the XSLT);
    the failures are those of the in-process run."""
    need_corpus()
    chosen = [p for p in corpus_cda_files() if p.name.startswith(("VAC-NOTE", "CSE-CS8_2024"))]
    vac = next(p for p in chosen if p.name.startswith("VAC-NOTE"))
    mutated = mutate(
        vac.read_bytes(), b'confidentialityCode code="N"', b'confidentialityCode code="X"'
    )
    items = [(p.name, p.read_bytes()) for p in chosen] + [("mutated.xml", mutated)]
    with ValidationPool(2) as pool:
        parallel = pool.validate_many(items, kind="cda", options=official)
    assert [v.index for v in parallel] == list(range(len(items)))
    for (name, content), done in zip(items, parallel, strict=True):
        serial = validate_bytes(content, name=name, kind="cda", options=official)
        assert done.report.object_name == name
        assert done.report.result == serial.result
        assert sorted(done.report.failed_ids()) == sorted(serial.failed_ids())
    assert not parallel[-1].report.passed and "RULEPACK-VOLET-02" in {
        c.constraint_id for c in parallel[-1].report.walk()
    }


def _defective_pack(root: Path) -> Path:
    """StrucMin and two volets; an include differing by case, a missing include and a
    missing value set (rebuilt from the JDV of the same OID)."""
    _write(
        root / "schematrons" / "include" / "Rules.sch",
        f"""<pattern xmlns="{SCH}" id="p1"><rule context="cda:ClinicalDocument">
  <assert test="cda:code/@code = doc('voc-9.9.9-DYNAMIC.xml')//concept/@code">code not in set
  </assert></rule></pattern>""",
    )
    for rel in (
        "profils/structurationMinimale/ASIP-STRUCT-MIN-StrucMin.sch",
        "CI-SIS_TEST-A_2024.01.sch",
        "CI-SIS_TEST-B_2024.01.sch",
    ):
        back = "../../" if rel.startswith("profils") else ""
        _write(
            root / "schematrons" / rel,
            f"""<schema xmlns="{SCH}" queryBinding="xslt2">
<ns prefix="cda" uri="urn:hl7-org:v3"/>
<include href="{back}include/rules.SCH"/>
<include href="{back}include/absent.sch"/>
</schema>""",
        )
    _write(
        root / "jeuxDeValeurs" / "JDV_Test.xml",
        """<RetrieveValueSetResponse
 xmlns="urn:ihe:iti:svs:2008"><ValueSet id="9.9.9"><ConceptList>
 <Concept code="OK" codeSystem="1.2"/></ConceptList></ValueSet></RetrieveValueSetResponse>""",
    )
    return root


def test_rules_compile_jobs_reports_the_pack_defects_of_every_schematron(tmp_path: Path) -> None:
    pack = _defective_pack(tmp_path / "pack")
    cache = tmp_path / "cache"
    runner = CliRunner()
    args = ["rules", "compile", "--rules-dir", str(pack), "--cache-dir", str(cache)]
    first = runner.invoke(interop, [*args, "--all-volets", "--jobs", "2"])
    assert first.exit_code == 0, first.output
    lines = first.stdout.splitlines()
    names = [line.split(":")[0] for line in lines if not line.startswith(" ")]
    # StrucMin first, then the volets in the pack's order, whatever finished first
    assert names == [
        "ASIP-STRUCT-MIN-StrucMin.sch",
        "CI-SIS_TEST-A_2024.01.sch",
        "CI-SIS_TEST-B_2024.01.sch",
    ]
    for code in ("RULEPACK-INCLUDE-CASE", "RULEPACK-INCLUDE-MISSING", "RULEPACK-VALUESET-MISSING"):
        assert sum(code in line for line in lines) == 3, code
    assert "(xsl from cache)" not in first.stdout
    again = runner.invoke(interop, [*args, "--all-volets", "--jobs", "1"])
    assert again.exit_code == 0
    assert again.stdout.count("(xsl from cache)") == 3
    # the warnings come from the cache too
    assert again.stdout.count("RULEPACK-INCLUDE-MISSING") == 3


def test_compiler_cache_follows_the_sources(tmp_path: Path) -> None:
    """The manifest is named by the schematron and checked against the hash of every
    source file, the files that were missing, and the substituted value sets."""
    pack = _defective_pack(tmp_path / "pack")
    cache = tmp_path / "cache"
    main = pack / "schematrons" / "CI-SIS_TEST-A_2024.01.sch"

    def compile_() -> tuple[bool, str, set[str]]:
        c = compile_schematron(main, rules_root=pack, cache_dir=cache)
        return c.from_cache, c.xslt, {i.code for i in c.issues}

    cold = compile_()
    assert not cold[0] and "RULEPACK-INCLUDE-MISSING" in cold[2]
    warm = compile_()
    assert warm == (True, *cold[1:]) and "code not in set" in cold[1]
    uncached = compile_schematron(main, rules_root=pack, cache_dir=cache, use_cache=False)
    assert uncached.xslt == cold[1] and not uncached.from_cache
    # an included file changes: compiled again, with the new rule
    rules = pack / "schematrons" / "include" / "Rules.sch"
    rules.write_text(rules.read_text().replace("code not in set", "code unknown"))
    changed = compile_()
    assert not changed[0] and "code unknown" in changed[1]
    assert compile_()[0]
    # the missing include appears: compiled again, and the warning goes
    _write(
        pack / "schematrons" / "include" / "absent.sch",
        f'<pattern xmlns="{SCH}" id="p2"><rule context="cda:title">'
        '<assert test="string(.)">empty title</assert></rule></pattern>',
    )
    found = compile_()
    assert not found[0] and "RULEPACK-INCLUDE-MISSING" not in found[2]
    assert "empty title" in found[1]
    # a substituted value set deleted from the cache: built again
    for substitute in (cache / "valuesets").iterdir():
        substitute.unlink()
    rebuilt = compile_()
    assert not rebuilt[0] and any((cache / "valuesets").iterdir())
    # a corrupt manifest is ignored, never trusted
    for manifest in (cache / "manifests").iterdir():
        manifest.write_text("{not json")
    assert compile_() == (False, *found[1:])


# -- HTTP: the validation runs in a worker process, the loop keeps serving ------------


def _gated_pack(root: Path) -> tuple[Path, Path]:
    """A rule pack whose header schematron reads ``gate.xml``, a named pipe: the
    validation blocks in Saxon until the test writes to it."""
    _write(
        root / "schematrons" / "profils" / "structurationMinimale" / "ASIP-STRUCT-MIN-StrucMin.sch",
        f"""<schema xmlns="{SCH}" queryBinding="xslt2">
<ns prefix="cda" uri="urn:hl7-org:v3"/>
<pattern id="gate"><rule context="/cda:ClinicalDocument">
  <!-- a computed URI: left alone by the compiler, read when the rule runs -->
  <assert test="doc(concat('gate', substring(name(.), 1, 0), '.xml'))/gate/@open = 'yes'"
    >the gate was not opened</assert>
</rule></pattern></schema>""",
    )
    gate = root / "schematrons" / "profils" / "structurationMinimale" / "gate.xml"
    os.mkfifo(gate)
    return root, gate


def _evs_body(content: bytes) -> dict[str, object]:
    import base64

    return {
        "validationService": {
            "name": "Schematron Based CDA Validator",
            "validator": ".Structuration minimale des documents de santé v1.16",
        },
        "object": {"originalFileName": "doc.xml", "content": base64.b64encode(content).decode()},
    }


async def _reader_is_waiting(gate: Path, task: asyncio.Task[httpx.Response]) -> int:
    """The write end of the pipe, once a reader (Saxon, in a worker) has opened it.
    Opening a FIFO for writing without blocking fails (ENXIO) while nobody reads."""
    for _ in range(6000):  # a guard against a hang, not a measure of speed
        assert not task.done(), "the validation ended before reading the gate"
        try:
            return os.open(gate, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            await asyncio.sleep(0.05)
    raise AssertionError("no validation ever reached the gate")


async def _served_while_validating(tmp_path: Path, endpoint: str) -> None:
    pack, gate = _gated_pack(tmp_path / "pack")
    app = FastAPI()
    app.include_router(router)
    app.include_router(build_router())
    repo = InMemoryValidationRepository()
    options = ValidationOptions(
        rules_dir=pack, cache_dir=tmp_path / "cache", rule_source="official"
    )
    app.dependency_overrides[get_repository] = lambda: repo
    app.dependency_overrides[get_options] = lambda: options
    # should the loop be blocked after all, this opens the gate instead of hanging the
    # test: the event order below then fails
    watchdog = subprocess.Popen(
        ["sh", "-c", f"sleep 120 && echo '<gate open=\"late\"/>' > '{gate}'"]
    )
    events: list[str] = []
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:

            async def validation() -> httpx.Response:
                if endpoint == "evs":
                    answer = await client.post(
                        "/evs/rest/validations", json=_evs_body(GOOD.read_bytes())
                    )
                else:
                    answer = await client.post(
                        "/api/validations",
                        files={"file": ("doc.xml", GOOD.read_bytes(), "application/xml")},
                        data={"kind": "cda"},
                    )
                events.append("validation answered")
                return answer

            task = asyncio.create_task(validation())
            fd = await _reader_is_waiting(gate, task)
            events.append("validation waiting in Saxon")
            other = await client.get("/evs/rest/validations")
            assert other.status_code == 200
            events.append("other request served")
            assert not task.done()
            os.write(fd, b'<gate open="yes"/>')
            os.close(fd)
            events.append("gate opened")
            answer = await task
    finally:
        watchdog.kill()
        watchdog.wait()
    assert events == [
        "validation waiting in Saxon",
        "other request served",
        "gate opened",
        "validation answered",
    ]
    assert answer.status_code == 201, answer.text
    oid = answer.json()["oid"]
    stored = repo.get(oid)
    assert stored is not None and stored.report.passed
    ids = {c.constraint_id for c in stored.report.walk()}
    assert (
        "ASIP-STRUCT-MIN-StrucMin" in ids
        and "the gate was not opened" not in stored.report.to_text(verbose=True)
    )


async def test_evs_validation_runs_off_the_event_loop(tmp_path: Path) -> None:
    await _served_while_validating(tmp_path, "evs")


async def test_upload_validation_runs_off_the_event_loop(tmp_path: Path) -> None:
    await _served_while_validating(tmp_path, "upload")
