"""``segur-sim interop ...``: validate files, build XDM archives, compile rule packs.

Exit codes: 0 every file passed, 1 some failed, 2 usage or input error.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from simulators.interop.engine import KINDS, ValidationOptions, validate_bytes
from simulators.interop.report import ValidationReport


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
) -> None:
    """Validate FILE(s). Exit 0 only when every file passes."""
    if rule_source in ("official", "both") and rules_dir is None:
        raise click.UsageError("--rule-source official/both needs --rules-dir")
    options = _options(rules_dir, rule_source, cache_dir, xsd)
    reports = []
    progress = not quiet and len(files) > 1 and (out is not None or fmt == "text")
    start = time.monotonic()
    for i, path in enumerate(files, start=1):
        try:
            content = path.read_bytes()
        except OSError as exc:
            click.echo(f"cannot read {path}: {exc}", err=True)
            sys.exit(2)
        report = validate_bytes(content, name=path.name, kind=kind, options=options)
        reports.append(report)
        if progress:
            click.echo(
                f"[{i}/{len(files)}] {report.result.value:6} {path.name} "
                f"({time.monotonic() - start:.1f} s)",
                err=True,
            )
    data = _render(reports, fmt)
    if out is not None:
        out.write_bytes(data)
    else:
        click.echo(data.decode("utf-8"), nl=False)
    failed = sum(1 for r in reports if not r.passed)
    if len(files) > 1 and not quiet:
        click.echo(f"{len(files) - failed} passed, {failed} failed", err=True)
    sys.exit(1 if failed else 0)


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
def rules_compile(rules_dir: Path, cache_dir: Path | None, all_volets: bool) -> None:
    """Compile (and cache) the header rules, and the volets; list the pack's defects."""
    from simulators.interop.cda.rulepack import STRUCMIN, RulePack

    options = ValidationOptions(rules_dir=rules_dir, cache_dir=cache_dir)
    pack = RulePack.open(rules_dir, cache_dir=options.effective_cache_dir)
    targets = [pack.schematrons / STRUCMIN]
    if all_volets:
        targets += [v.path for v in pack.volets]
    issues = 0
    for path in targets:
        start = time.monotonic()
        try:
            sch = pack.schematron(path)
        except Exception as exc:  # a broken schematron must not stop the others
            click.echo(f"FAILED {path.name}: {exc}", err=True)
            issues += 1
            continue
        click.echo(
            f"{path.name}: {sch.compiled.asserts} assertions, {sch.compiled.patterns} "
            f"patterns, {time.monotonic() - start:.2f} s"
            f"{' (xsl from cache)' if sch.from_cache else ''}"
        )
        for issue in sch.compiled.issues:
            click.echo(f"  WARNING {issue.code} {issue.source}: {issue.message}")
    sys.exit(1 if issues else 0)
