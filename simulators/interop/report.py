"""The one report model every validator returns, and its serialisations.

Shapes follow Gazelle's "validation report" (namespace
http://validationreport.gazelle.ihe.net/, see docs/interop.md): a report holds
nested sub-reports, which hold constraints. A sub-report, and so the report,
fails only on a failed constraint of severity ERROR.
"""

from __future__ import annotations

import hashlib
import html
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from lxml import etree

from simulators import DISCLAIMER, __version__

GVR_NS = "http://validationreport.gazelle.ihe.net/"
_G = f"{{{GVR_NS}}}"


class Severity(StrEnum):
    ERROR = "ERROR"
    WARNING = "WARNING"
    INFO = "INFO"


class Result(StrEnum):
    PASSED = "PASSED"
    FAILED = "FAILED"


# INFO < WARNING < ERROR: the order Gazelle's severityThreshold works with
SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.ERROR: 2}


def parse_severity(text: str) -> Severity:
    """``"warning"``, ``"WARNING"``... -> Severity; ValueError for anything else."""
    try:
        return Severity(text.strip().upper())
    except ValueError:
        known = ", ".join(s.value for s in Severity)
        raise ValueError(f"unknown severity {text!r}; one of {known}") from None


# Gazelle's v2 model derives the severity from the priority; we keep both in step.
_PRIORITY = {
    Severity.ERROR: "MANDATORY",
    Severity.WARNING: "RECOMMENDED",
    Severity.INFO: "PERMITTED",
}


@dataclass(frozen=True)
class Location:
    line: int | None = None
    column: int | None = None
    xpath: str | None = None
    # for non-XML objects (HL7 v2): "MSH-21", "PRT[1]"...
    segment: str | None = None

    def render(self) -> str:
        parts: list[str] = []
        if self.line is not None:
            pos = f"line {self.line}"
            if self.column is not None:
                pos += f", column {self.column}"
            parts.append(pos)
        if self.xpath:
            parts.append(self.xpath)
        if self.segment:
            parts.append(self.segment)
        return " | ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Location:
        return cls(
            line=data.get("line"),
            column=data.get("column"),
            xpath=data.get("xpath"),
            segment=data.get("segment"),
        )


@dataclass
class Constraint:
    constraint_id: str
    description: str
    passed: bool
    severity: Severity = Severity.ERROR
    location: Location | None = None
    constraint_type: str = ""

    @property
    def test_result(self) -> Result:
        return Result.PASSED if self.passed else Result.FAILED

    @property
    def priority(self) -> str:
        return _PRIORITY[self.severity]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "constraintID": self.constraint_id,
            "constraintType": self.constraint_type,
            "priority": self.priority,
            "severity": self.severity.value,
            "testResult": self.test_result.value,
            "description": self.description,
        }
        if self.location is not None:
            out["location"] = self.location.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Constraint:
        location = data.get("location")
        return cls(
            constraint_id=str(data.get("constraintID", "")),
            description=str(data.get("description", "")),
            passed=data.get("testResult") == Result.PASSED.value,
            severity=Severity(data.get("severity") or "ERROR"),
            location=Location.from_dict(location) if isinstance(location, dict) else None,
            constraint_type=str(data.get("constraintType", "")),
        )


@dataclass
class SubReport:
    name: str
    constraints: list[Constraint] = field(default_factory=list)
    subreports: list[SubReport] = field(default_factory=list)

    # -- building helpers -------------------------------------------------
    def check(
        self,
        constraint_id: str,
        ok: bool,
        description: str,
        *,
        severity: Severity = Severity.ERROR,
        location: Location | None = None,
        constraint_type: str = "",
    ) -> bool:
        self.constraints.append(
            Constraint(constraint_id, description, ok, severity, location, constraint_type)
        )
        return ok

    def fail(self, constraint_id: str, description: str, **kw: Any) -> None:
        self.check(constraint_id, False, description, **kw)

    def info(self, constraint_id: str, description: str, **kw: Any) -> None:
        self.check(constraint_id, True, description, severity=Severity.INFO, **kw)

    # -- results ----------------------------------------------------------
    def walk(self) -> Iterator[Constraint]:
        yield from self.constraints
        for sub in self.subreports:
            yield from sub.walk()

    @property
    def result(self) -> Result:
        failed = any(c.severity is Severity.ERROR and not c.passed for c in self.walk())
        return Result.FAILED if failed else Result.PASSED

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "subReportResult": self.result.value,
            "constraints": [c.to_dict() for c in self.constraints],
            "subReports": [s.to_dict() for s in self.subreports],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SubReport:
        return cls(
            name=str(data.get("name", "")),
            constraints=[Constraint.from_dict(c) for c in data.get("constraints") or []],
            subreports=[SubReport.from_dict(s) for s in data.get("subReports") or []],
        )

    def filtered(self, threshold: Severity) -> SubReport:
        """A copy without the constraints below ``threshold`` (at any depth)."""
        floor = SEVERITY_RANK[threshold]
        return SubReport(
            self.name,
            [c for c in self.constraints if SEVERITY_RANK[c.severity] >= floor],
            [s.filtered(threshold) for s in self.subreports],
        )


@dataclass(frozen=True)
class Counters:
    constraints: int
    errors: int
    warnings: int
    infos: int

    def to_dict(self) -> dict[str, int]:
        # both the classic gvr names and the validation-service-api v2 names
        return {
            "numberOfConstraints": self.constraints,
            "numberOfErrors": self.errors,
            "numberOfWarnings": self.warnings,
            "numberOfAssertions": self.constraints,
            "numberOfFailedWithErrors": self.errors,
            "numberOfFailedWithWarnings": self.warnings,
            "numberOfFailedWithInfos": self.infos,
            "numberOfUnexpectedErrors": 0,
        }


def sha256_hex(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


@dataclass
class ValidationReport:
    """A complete validation of one object (file, message, archive)."""

    validator_id: str
    service_name: str
    object_name: str
    object_sha256: str
    kind: str
    subreports: list[SubReport] = field(default_factory=list)
    uuid: str = field(default_factory=lambda: str(uuid.uuid4()))
    date: datetime = field(default_factory=lambda: datetime.now(UTC))
    validator_version: str = __version__
    object_size: int = 0

    @classmethod
    def for_content(
        cls, content: bytes, *, validator_id: str, service_name: str, object_name: str, kind: str
    ) -> ValidationReport:
        return cls(
            validator_id=validator_id,
            service_name=service_name,
            object_name=object_name,
            object_sha256=sha256_hex(content),
            kind=kind,
            object_size=len(content),
        )

    def add(self, name: str) -> SubReport:
        sub = SubReport(name)
        self.subreports.append(sub)
        return sub

    def walk(self) -> Iterator[Constraint]:
        for sub in self.subreports:
            yield from sub.walk()

    @property
    def result(self) -> Result:
        failed = any(s.result is Result.FAILED for s in self.subreports)
        return Result.FAILED if failed else Result.PASSED

    @property
    def passed(self) -> bool:
        return self.result is Result.PASSED

    @property
    def counters(self) -> Counters:
        all_c = list(self.walk())
        return Counters(
            constraints=len(all_c),
            errors=sum(1 for c in all_c if not c.passed and c.severity is Severity.ERROR),
            warnings=sum(1 for c in all_c if not c.passed and c.severity is Severity.WARNING),
            infos=sum(1 for c in all_c if not c.passed and c.severity is Severity.INFO),
        )

    def failed_ids(self, severity: Severity | None = Severity.ERROR) -> set[str]:
        """IDs of failed constraints (of one severity, or any when None)."""
        return {
            c.constraint_id
            for c in self.walk()
            if not c.passed and (severity is None or c.severity is severity)
        }

    # -- serialisations --------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "disclaimer": DISCLAIMER,
            "uuid": self.uuid,
            "result": self.result.value,
            "validationDateTime": self.date.isoformat(),
            "validationServiceName": self.service_name,
            "validationServiceVersion": __version__,
            "validatorID": self.validator_id,
            "validatorVersion": self.validator_version,
            "kind": self.kind,
            "object": {
                "name": self.object_name,
                "sha256": self.object_sha256,
                "size": self.object_size,
            },
            "counters": self.counters.to_dict(),
            "subReports": [s.to_dict() for s in self.subreports],
        }

    def to_json_bytes(self) -> bytes:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=2).encode("utf-8")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ValidationReport:
        """The inverse of :meth:`to_dict` (reports kept as JSON in the store)."""
        obj = data.get("object") or {}
        return cls(
            validator_id=str(data.get("validatorID", "")),
            service_name=str(data.get("validationServiceName", "")),
            object_name=str(obj.get("name", "")),
            object_sha256=str(obj.get("sha256", "")),
            kind=str(data.get("kind", "")),
            subreports=[SubReport.from_dict(s) for s in data.get("subReports") or []],
            uuid=str(data.get("uuid") or uuid.uuid4()),
            date=datetime.fromisoformat(data["validationDateTime"])
            if data.get("validationDateTime")
            else datetime.now(UTC),
            validator_version=str(data.get("validatorVersion", __version__)),
            object_size=int(obj.get("size") or 0),
        )

    def filtered(self, threshold: Severity | str | None) -> ValidationReport:
        """Gazelle's ``severityThreshold``: a copy of this report without the
        constraints of a lower severity (passed or failed), so they are neither
        reported nor counted. The result cannot change: it hangs on failed ERRORs,
        which no threshold removes. ``None`` or INFO: the report as it is."""
        if threshold is None:
            return self
        if isinstance(threshold, str):
            threshold = parse_severity(threshold)
        if threshold is Severity.INFO:
            return self
        return replace(self, subreports=[s.filtered(threshold) for s in self.subreports])

    def to_gvr_element(self) -> etree._Element:
        root = etree.Element(
            _G + "validationReport",
            nsmap={"gvr": GVR_NS},
            result=self.result.value,
            uuid=self.uuid,
        )
        overview = etree.SubElement(
            root,
            _G + "validationOverview",
            validationDateTime=self.date.isoformat(),
            validationOverallResult=self.result.value,
        )
        for tag, text in (
            ("disclaimer", DISCLAIMER),
            ("validationServiceName", self.service_name),
            ("validationServiceVersion", __version__),
            ("validatorID", self.validator_id),
            ("validatorVersion", self.validator_version),
        ):
            etree.SubElement(overview, _G + tag).text = text
        counters = self.counters
        etree.SubElement(
            root,
            _G + "counters",
            numberOfConstraints=str(counters.constraints),
            numberOfErrors=str(counters.errors),
            numberOfWarnings=str(counters.warnings),
        )
        for sub in self.subreports:
            _gvr_subreport(root, sub)
        return root

    def to_gvr_bytes(self) -> bytes:
        return etree.tostring(
            self.to_gvr_element(), xml_declaration=True, encoding="UTF-8", pretty_print=True
        )

    def to_text(self, *, verbose: bool = False) -> str:
        c = self.counters
        lines = [
            f"# {DISCLAIMER}",
            f"{self.object_name}: {self.result.value}  [{self.validator_id}]",
            f"  constraints={c.constraints} errors={c.errors} warnings={c.warnings}"
            f" sha256={self.object_sha256[:16]}...",
        ]

        def emit(sub: SubReport, depth: int) -> None:
            pad = "  " * depth
            lines.append(f"{pad}- {sub.name}: {sub.result.value}")
            for con in sub.constraints:
                if con.passed and not verbose:
                    continue
                loc = f" @ {con.location.render()}" if con.location else ""
                mark = "ok " if con.passed else con.severity.value
                lines.append(f"{pad}    [{mark}] {con.constraint_id}: {con.description}{loc}")
            for child in sub.subreports:
                emit(child, depth + 1)

        for sub in self.subreports:
            emit(sub, 1)
        return "\n".join(lines) + "\n"

    def to_html(self) -> str:
        esc = html.escape
        c = self.counters
        rows: list[str] = []

        def emit(sub: SubReport, path: str) -> None:
            name = f"{path} / {sub.name}" if path else sub.name
            for con in sub.constraints:
                cls = "ok" if con.passed else con.severity.value.lower()
                loc = con.location.render() if con.location else ""
                rows.append(
                    f'<tr class="{cls}"><td>{esc(name)}</td><td>{esc(con.constraint_id)}</td>'
                    f"<td>{con.severity.value}</td><td>{con.test_result.value}</td>"
                    f"<td>{esc(con.description)}</td><td>{esc(loc)}</td></tr>"
                )
            for child in sub.subreports:
                emit(child, name)

        for sub in self.subreports:
            emit(sub, "")
        return (
            "<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>{esc(self.object_name)} - {self.result.value}</title>"
            "<style>.error{background:#fdd}.warning{background:#ffd}.ok{color:#484}"
            "td{border:1px solid #ccc;padding:2px 4px}</style></head><body>"
            f"<p><strong>{esc(DISCLAIMER)}</strong></p>"
            f"<h1>{esc(self.object_name)}: {self.result.value}</h1>"
            f"<p>Validator {esc(self.validator_id)}; {c.constraints} constraints, "
            f"{c.errors} errors, {c.warnings} warnings; sha256 {self.object_sha256}</p>"
            "<table><tr><th>Sub-report</th><th>Constraint</th><th>Severity</th><th>Result</th>"
            "<th>Description</th><th>Location</th></tr>" + "".join(rows) + "</table></body></html>"
        )


def _gvr_subreport(parent: etree._Element, sub: SubReport) -> None:
    el = etree.SubElement(parent, _G + "subReport", name=sub.name, subReportResult=sub.result.value)
    for con in sub.constraints:
        cel = etree.SubElement(
            el,
            _G + "constraint",
            constraintID=con.constraint_id,
            constraintType=con.constraint_type,
            priority=con.priority,
            severity=con.severity.value,
            testResult=con.test_result.value,
        )
        etree.SubElement(cel, _G + "constraintDescription").text = _xml_safe(con.description)
        if con.location is not None:
            etree.SubElement(cel, _G + "locationInValidatedObject").text = _xml_safe(
                con.location.render()
            )
    for child in sub.subreports:
        _gvr_subreport(el, child)


def _xml_safe(text: str) -> str:
    # messages may quote hostile input: keep only characters XML 1.0 allows
    return "".join(
        ch
        for ch in text
        if ch in "\t\n\r"
        or (" " <= ch <= "\ud7ff")
        or ("\ue000" <= ch <= "\ufffd")
        or ord(ch) >= 0x10000
    )


def parse_gvr(content: bytes) -> ValidationReport:
    """Read a gvr report back (ours or Gazelle's) into the model."""
    from simulators.interop.safe_xml import parse_xml

    root = parse_xml(content).getroot()
    ov = root.find(_G + "validationOverview")

    def text(tag: str) -> str:
        el = ov.find(_G + tag) if ov is not None else None
        return (el.text or "") if el is not None else ""

    report = ValidationReport(
        validator_id=text("validatorID"),
        service_name=text("validationServiceName"),
        object_name="",
        object_sha256="",
        kind="",
        uuid=root.get("uuid") or str(uuid.uuid4()),
    )

    def read_sub(el: etree._Element) -> SubReport:
        sub = SubReport(el.get("name") or "")
        for cel in el.findall(_G + "constraint"):
            loc_el = cel.find(_G + "locationInValidatedObject")
            desc_el = cel.find(_G + "constraintDescription")
            sub.constraints.append(
                Constraint(
                    constraint_id=cel.get("constraintID") or "",
                    description=(desc_el.text or "") if desc_el is not None else "",
                    passed=cel.get("testResult") == "PASSED",
                    severity=Severity(cel.get("severity") or "ERROR"),
                    location=Location(xpath=loc_el.text) if loc_el is not None else None,
                    constraint_type=cel.get("constraintType") or "",
                )
            )
        sub.subreports = [read_sub(child) for child in el.findall(_G + "subReport")]
        return sub

    report.subreports = [read_sub(el) for el in root.findall(_G + "subReport")]
    return report


def input_error_report(
    content: bytes,
    *,
    name: str,
    kind: str,
    validator_id: str,
    message: str,
    constraint_id: str = "INPUT-01",
    location: Location | None = None,
) -> ValidationReport:
    """A clean FAILED report for unreadable input (never a traceback)."""
    report = ValidationReport.for_content(
        content,
        validator_id=validator_id,
        service_name="segur-sim interop",
        object_name=name,
        kind=kind,
    )
    report.add("Input").fail(constraint_id, message, location=location, constraint_type="input")
    return report
