"""``segur-sim interop ...``: validate files, list past validations, build XDM
archives, compile rule packs.

Exit codes: 0 every file passed, 1 some failed, 2 usage or input error.
"""

from __future__ import annotations

import html as html_lib
import json
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from simulators.core.config import DEFAULT_DATA_DIR, DataDir
from simulators.interop.engine import KINDS, ValidationOptions
from simulators.interop.report import Severity, ValidationReport

SERVICE_NAME = "segur-sim interop validate"


@dataclass
class _Done:
    """One validated file of a batch."""

    path: Path
    report: ValidationReport
    seconds: float
    oid: str = ""


def _options(
    rules_dir: Path | None, rule_source: str | None, cache_dir: Path | None, xsd: Path | None
) -> ValidationOptions:
    return ValidationOptions(
        rules_dir=rules_dir, rule_source=rule_source, cache_dir=cache_dir, xsd_path=xsd
    )


def _render(reports: list[ValidationReport], fmt: str) -> bytes:
    if fmt == "json":
        if len(reports) == 1:
            return reports[0].to_json_bytes()
        return json.dumps([r.to_dict() for r in reports], ensure_ascii=False, indent=2).encode()
    if fmt == "gvr":
        if len(reports) == 1:
            return reports[0].to_gvr_bytes()
        from lxml import etree

        root = etree.Element("validationReports")
        for r in reports:
            root.append(r.to_gvr_element())
        return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
    if fmt == "html":
        return "\n".join(r.to_html() for r in reports).encode("utf-8")
    return "".join(r.to_text() for r in reports).encode("utf-8")


def _data_dir(data_dir: Path | None) -> DataDir:
    return DataDir.open(data_dir)


data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=f"Data directory: the validation history (SQLite store) and the PKI that signs "
    f"proof bundles (default: $SEGUR_SIM_DATA_DIR or {DEFAULT_DATA_DIR}).",
)


@click.group()
def interop() -> None:
    """The local Gazelle: CDA, HL7 v2, XDS/XDM and FHIR validators (simulated results)."""


@interop.command()
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--kind", type=click.Choice(["auto", *KINDS]), default="auto", show_default=True)
@click.option(
    "--rules-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The ANS tree (schematrons/, jeuxDeValeurs/, infrastructure/).",
)
@click.option(
    "--rule-source",
    type=click.Choice(["builtin", "official", "both"]),
    help="Default: official with --rules-dir, builtin otherwise.",
)
@click.option(
    "--xsd",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CDA schema to use instead of the rule pack's or the built-in one.",
)
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "gvr", "html"]),
    default="text",
    show_default=True,
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the report(s) here instead of standard output.",
)
@click.option("--quiet", is_flag=True, help="No progress display.")
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(0),
    default=1,
    show_default=True,
    help="Validate in N worker processes (0: one per CPU). 1 validates in this process.",
)
@data_dir_option
@click.option(
    "--no-record", is_flag=True, help="Do not keep these validations in the data directory."
)
@click.option(
    "--proof-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write one signed proof bundle for the batch under DIR/interop/<run>, chained to "
    "the previous interop bundle of DIR (signed with the data directory's PKI).",
)
@click.option(
    "--junit",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a JUnit XML report: one testcase per file.",
)
def validate(
    files: tuple[Path, ...],
    kind: str,
    rules_dir: Path | None,
    rule_source: str | None,
    xsd: Path | None,
    cache_dir: Path | None,
    fmt: str,
    out: Path | None,
    quiet: bool,
    jobs: int,
    data_dir: Path | None,
    no_record: bool,
    proof_dir: Path | None,
    junit: Path | None,
) -> None:
    """Validate FILE(s). Exit 0 only when every file passes.

    Each validation is kept in the data directory (see `segur-sim interop history`,
    and GET /evs/rest/validations) unless --no-record is given.
    """
    if rule_source in ("official", "both") and rules_dir is None:
        raise click.UsageError("--rule-source official/both needs --rules-dir")
    options = _options(rules_dir, rule_source, cache_dir, xsd)
    progress = not quiet and len(files) > 1 and (out is not None or fmt == "text")
    items: list[tuple[str, bytes]] = []
    for path in files:
        try:
            items.append((path.name, path.read_bytes()))
        except OSError as exc:
            click.echo(f"cannot read {path}: {exc}", err=True)
            sys.exit(2)
    start = time.monotonic()
    finished = 0

    def on_done(index: int, result: str) -> None:
        nonlocal finished
        finished += 1
        if progress:
            click.echo(
                f"[{finished}/{len(files)}] {result:6} {files[index].name} "
                f"({time.monotonic() - start:.1f} s)",
                err=True,
            )

    from simulators.interop.pool import ValidationPool, resolve_jobs

    with ValidationPool(min(resolve_jobs(jobs), len(items))) as pool:
        validated = pool.validate_many(items, kind=kind, options=options, on_done=on_done)
    done = [_Done(files[v.index], v.report, v.seconds) for v in validated]
    reports = [d.report for d in done]
    data = _render(reports, fmt)
    if out is not None:
        out.write_bytes(data)
    else:
        click.echo(data.decode("utf-8"), nl=False)
    data_root: DataDir | None = None
    if not no_record or proof_dir is not None:
        try:
            data_root = _data_dir(data_dir)
        except (OSError, ValueError) as exc:
            click.echo(f"cannot open the data directory: {exc}", err=True)
            sys.exit(2)
    if not no_record and data_root is not None:
        try:
            _record(data_root, done, kind)
        except Exception as exc:  # the store is unusable: say so, do not hide it
            click.echo(f"cannot record the validations in {data_root.db_path}: {exc}", err=True)
            sys.exit(2)
    if junit is not None:
        _write_junit(junit, done, options)
    if proof_dir is not None and data_root is not None:
        bundle = _write_proof(proof_dir, data_root, done, options, kind)
        if not quiet:
            click.echo(f"proof bundle: {bundle}", err=True)
    failed = sum(1 for r in reports if not r.passed)
    if len(files) > 1 and not quiet:
        click.echo(f"{len(files) - failed} passed, {failed} failed", err=True)
    sys.exit(1 if failed else 0)


def _record(data: DataDir, done: list[_Done], kind: str) -> None:
    from simulators.core.store.database import Database
    from simulators.interop.store import SqliteValidationRepository, StoredValidation, new_oid

    items = [StoredValidation(new_oid(), d.report, SERVICE_NAME, kind, origin="cli") for d in done]
    with Database(data.db_path) as db:
        SqliteValidationRepository(db).save_many(items)
    for d, item in zip(done, items, strict=True):
        d.oid = item.oid


def _failed(report: ValidationReport, severity: Severity) -> list[Any]:
    return [c for c in report.walk() if not c.passed and c.severity is severity]


def _write_junit(path: Path, done: list[_Done], options: ValidationOptions) -> None:
    from simulators import DISCLAIMER, __version__
    from simulators.core.junit import JUnitCase, write_junit

    cases = []
    for d in done:
        errors = _failed(d.report, Severity.ERROR)
        ids = sorted({c.constraint_id for c in errors})
        if d.report.passed:
            status, message = "pass", ""
        else:
            # the validator itself broke down: an error, not a failed check
            status = "error" if "INPUT-INTERNAL-01" in ids else "fail"
            message = f"{len(errors)} error(s): {', '.join(ids)}"
        details = "\n".join(
            f"[{c.severity.value}] {c.constraint_id}: {c.description}"
            + (f" @ {c.location.render()}" if c.location else "")
            for c in errors
        )
        cases.append(
            JUnitCase(
                name=str(d.path),
                classname=f"segur-sim.interop.{d.report.kind}",
                time=d.seconds,
                status=status,
                message=message,
                details=details,
            )
        )
    write_junit(
        path,
        SERVICE_NAME,
        cases,
        properties={
            "segur-sim": __version__,
            "rule-source": options.effective_rule_source,
            "rules-dir": str(options.rules_dir or ""),
            "disclaimer": DISCLAIMER,
        },
    )


def _write_proof(
    proof_dir: Path, data: DataDir, done: list[_Done], options: ValidationOptions, kind: str
) -> Path:
    from importlib.metadata import PackageNotFoundError, version

    from simulators import __version__
    from simulators.core.pki import TestPKI
    from simulators.core.proof import bundle_dir_for, latest_report, write_bundle
    from simulators.interop.engine import validation_artefacts

    pki = TestPKI.load_or_create(data.pki_dir, data.settings.domain)
    run_id = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    artefacts: dict[str, bytes] = {}
    entries: list[dict[str, Any]] = []
    passed: list[str] = []
    warned: list[str] = []
    failed: list[str] = []
    for d in done:
        files = validation_artefacts(d.report)
        artefacts.update(files)
        errors = sorted({c.constraint_id for c in _failed(d.report, Severity.ERROR)})
        warnings = sorted({c.constraint_id for c in _failed(d.report, Severity.WARNING)})
        name = str(d.path)
        (failed if errors else warned if warnings else passed).append(name)
        entries.append(
            {
                "file": name,
                "objectName": d.report.object_name,
                "sha256": d.report.object_sha256,
                "size": d.report.object_size,
                "kind": d.report.kind,
                "validator": d.report.validator_id,
                "result": d.report.result.value,
                "failedConstraints": errors,
                "warnings": warnings,
                "reportUuid": d.report.uuid,
                "oid": d.oid or None,
                "artefacts": [f"artefacts/{a}" for a in sorted(files)],
            }
        )
    tools = {"segur-sim": __version__}
    for package in ("lxml", "saxonche", "hl7apy", "fhir.resources"):
        try:
            tools[package] = version(package)
        except PackageNotFoundError:
            continue
    predicate = {
        "passedTests": passed,
        "warnedTests": warned,
        "failedTests": failed,
        "toolVersions": tools,
        "options": {
            "kind": kind,
            "ruleSource": options.effective_rule_source,
            "rulesDir": str(options.rules_dir) if options.rules_dir else None,
            "xsd": str(options.xsd_path) if options.xsd_path else None,
        },
        "validations": entries,
    }
    esc = html_lib.escape
    rows = "".join(
        f"<tr><td><code>{esc(e['file'])}</code></td>"
        f'<td class="{esc(e["result"])}">{esc(e["result"])}</td>'
        f"<td>{esc(', '.join(e['failedConstraints'])) or '&mdash;'}</td>"
        f"<td>{esc(', '.join(e['warnings'])) or '&mdash;'}</td></tr>"
        for e in entries
    )
    page = (
        f"<h2>Validations ({len(entries)} file(s))</h2>"
        "<table><tr><th>File</th><th>Result</th><th>Failed constraints</th>"
        f"<th>Warnings</th></tr>{rows}</table>"
        "<p>Each report (gvr, JSON, text) is under <code>artefacts/interop/&lt;uuid&gt;/</code>."
        "</p>"
    )
    return write_bundle(
        bundle_dir_for(proof_dir, "interop", run_id),
        kind="interop",
        predicate=predicate,
        artefacts=artefacts,
        html=page,
        pki=pki,
        previous=latest_report(proof_dir, kind="interop"),
        run_id=run_id,
    )


@interop.command()
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0, show_default=True)
def history(data_dir: Path | None, as_json: bool, limit: int, offset: int) -> None:
    """List the recorded validations, newest first."""
    root = Path(data_dir) if data_dir is not None else DEFAULT_DATA_DIR
    data = DataDir(root.expanduser().resolve())
    items: list[Any] = []
    total = 0
    if data.db_path.is_file():  # do not create a data directory just to say it is empty
        from simulators.core.store.database import Database
        from simulators.interop.store import SqliteValidationRepository

        with Database(data.db_path) as db:
            items, total = SqliteValidationRepository(db).page(offset=offset, limit=limit)
    if as_json:
        payload = {
            "total": total,
            "offset": offset,
            "limit": limit,
            "items": [i.summary() for i in items],
        }
        click.echo(json.dumps(payload, indent=2, ensure_ascii=False))
        return
    if not total:
        click.echo(f"no validation recorded in {data.root}")
        return
    click.echo(f"{len(items)} of {total} validation(s), newest first ({data.db_path})")
    for item in items:
        c = item.report.counters
        click.echo(
            f"{item.created_at[:19]}  {item.report.result.value:6}  {item.report.kind:5}  "
            f"errors={c.errors} warnings={c.warnings}  {item.origin:4}  "
            f"{item.report.object_name}  {item.oid}"
        )


@interop.group()
def xdm() -> None:
    """IHE XDM media (IHE_XDM.ZIP)."""


@xdm.command("build")
@click.argument(
    "cda", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default="IHE_XDM.ZIP",
    show_default=True,
)
@click.option("--patient-id", help="CX patientId; default: the INS of the first CDA.")
def xdm_build(cda: tuple[Path, ...], out: Path, patient_id: str | None) -> None:
    """Build an IHE_XDM.ZIP from CDA documents."""
    from simulators.interop.safe_xml import UnsafeOrInvalidXml
    from simulators.interop.xds.xdm import build_xdm

    try:
        data = build_xdm([p.read_bytes() for p in cda], patient_id=patient_id)
    except (ValueError, UnsafeOrInvalidXml) as exc:
        click.echo(f"cannot build the XDM archive: {exc}", err=True)
        sys.exit(2)
    out.write_bytes(data)
    click.echo(f"{out} ({len(data)} bytes, {len(cda)} document(s))")


@interop.group()
def rules() -> None:
    """Official rule packs (the ANS schematron tree)."""


@rules.command("compile")
@click.option(
    "--rules-dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--all-volets", is_flag=True, help="Also compile every CI-SIS_*.sch volet.")
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(0),
    default=1,
    show_default=True,
    help="Compile in N worker processes (0: one per CPU), largest schematron first.",
)
def rules_compile(rules_dir: Path, cache_dir: Path | None, all_volets: bool, jobs: int) -> None:
    """Compile (and cache) the header rules, and the volets; list the pack's defects.

    Saxon-HE keeps compiled stylesheets in memory only: this checks that every
    schematron compiles and fills the disk cache (generated XSLT, value sets), so that
    later processes skip the Python steps."""
    from simulators.interop.pool import ValidationPool, resolve_jobs

    options = ValidationOptions(rules_dir=rules_dir, cache_dir=cache_dir)
    start = time.monotonic()
    with ValidationPool(resolve_jobs(jobs)) as pool:
        results = pool.compile_pack(rules_dir, options.effective_cache_dir, all_volets=all_volets)
    issues = 0
    for result in results:
        if result.error:
            click.echo(f"FAILED {result.path.name}: {result.error}", err=True)
            issues += 1
            continue
        click.echo(
            f"{result.path.name}: {result.asserts} assertions, {result.patterns} "
            f"patterns, {result.seconds:.2f} s"
            f"{' (xsl from cache)' if result.from_cache else ''}"
        )
        for code, source, message in result.issues:
            click.echo(f"  WARNING {code} {source}: {message}")
    click.echo(
        f"{len(results)} schematron(s) in {time.monotonic() - start:.2f} s "
        f"({pool.jobs} process(es))",
        err=True,
    )
    sys.exit(1 if issues else 0)
