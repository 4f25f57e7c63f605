"""Layer (a): XML Schema validation of the CDA.

The full schema (CDA R2 with the French extensions) comes from the ANS tree
(``<rules-dir>/infrastructure/cda/CDA_extended.xsd``) or an explicit path.
Without it we run our own structural schema of the header.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

from lxml import etree

from simulators.interop.report import Location, Severity, SubReport

OFFICIAL_XSD = Path("infrastructure") / "cda" / "CDA_extended.xsd"


def resolve_xsd(rules_dir: Path | None, xsd_path: Path | None) -> Path | None:
    if xsd_path is not None:
        return xsd_path
    if rules_dir is not None:
        candidate = rules_dir / OFFICIAL_XSD
        if candidate.is_file():
            return candidate
    return None


@lru_cache(maxsize=8)
def _load_schema(path: str) -> etree.XMLSchema:
    # the schema is trusted (the user's rule pack or ours) but network stays off
    parser = etree.XMLParser(no_network=True, resolve_entities=False)
    return etree.XMLSchema(etree.parse(path, parser))


def _builtin_schema() -> etree.XMLSchema:
    ref = resources.files("simulators.interop.cda") / "data" / "cda_header_structure.xsd"
    with resources.as_file(ref) as path:
        return _load_schema(str(path))


def validate_xsd(doc: etree._Element, sub: SubReport, xsd: Path | None) -> None:
    schema = _load_schema(str(xsd)) if xsd is not None else _builtin_schema()
    label = xsd.name if xsd is not None else "built-in CDA header structure"
    if xsd is None:
        sub.info(
            "XSD-INFO-01",
            "no CDA XSD given: only the header structure was checked "
            "(use --rules-dir with the ANS tree for CDA_extended.xsd)",
        )
    offset = 0
    if doc.getparent() is not None:
        # embedded ClinicalDocument (self-presenting document): validate a detached copy,
        # shifting line numbers back to the original file
        offset = (doc.sourceline or 1) - 1
        doc = etree.fromstring(etree.tostring(doc))
    ok = schema.validate(doc)
    if ok:
        sub.check("XSD-01", True, f"the document is valid against {label}")
        return
    for err in schema.error_log:
        sub.check(
            "XSD-01",
            False,
            f"{label}: {err.message}",
            severity=Severity.ERROR,
            location=Location(line=err.line + offset, column=err.column, xpath=err.path),
            constraint_type="xsd",
        )
