"""The report model and its Gazelle/JSON/text/HTML serialisations."""

from __future__ import annotations

import json

import pytest
from interop_helpers import FIXTURES, mutate
from lxml import etree

from simulators import DISCLAIMER
from simulators.interop.engine import validate_bytes, validation_artefacts
from simulators.interop.report import (
    GVR_NS,
    Location,
    Result,
    Severity,
    SubReport,
    ValidationReport,
    parse_gvr,
)

NS = {"gvr": GVR_NS}


def _report(*, error: bool, warning: bool) -> ValidationReport:
    report = ValidationReport.for_content(
        b"<x/>", validator_id="v", service_name="s", object_name="x.xml", kind="cda"
    )
    outer = report.add("outer")
    outer.check("OK-1", True, "passes")
    nested = SubReport("nested")
    outer.subreports.append(nested)
    if error:
        nested.fail(
            "ERR-1", "broken <thing> & co", location=Location(line=3, column=7, xpath="/a/b")
        )
    if warning:
        nested.check("WARN-1", False, "not great", severity=Severity.WARNING)
    return report


def test_result_fails_only_on_error_and_propagates_from_nested_subreports() -> None:
    assert _report(error=False, warning=True).result is Result.PASSED
    failed = _report(error=True, warning=False)
    assert failed.result is Result.FAILED
    assert failed.subreports[0].result is Result.FAILED
    assert failed.failed_ids() == {"ERR-1"}


def test_gvr_shape_is_readable_by_a_plain_gazelle_style_parser() -> None:
    report = _report(error=True, warning=True)
    root = etree.fromstring(report.to_gvr_bytes())
    assert root.tag == f"{{{GVR_NS}}}validationReport"
    assert root.get("result") == "FAILED"
    assert root.xpath("string(gvr:validationOverview/gvr:disclaimer)", namespaces=NS) == DISCLAIMER
    assert (
        root.xpath("string(gvr:validationOverview/@validationOverallResult)", namespaces=NS)
        == "FAILED"
    )
    counters = root.find("gvr:counters", NS)
    assert counters is not None
    assert (
        counters.get("numberOfConstraints"),
        counters.get("numberOfErrors"),
        counters.get("numberOfWarnings"),
    ) == ("3", "1", "1")
    err = root.xpath(
        "//gvr:subReport/gvr:subReport/gvr:constraint[@constraintID='ERR-1']", namespaces=NS
    )[0]
    assert (err.get("severity"), err.get("testResult"), err.get("priority")) == (
        "ERROR",
        "FAILED",
        "MANDATORY",
    )
    assert err.findtext("gvr:constraintDescription", namespaces=NS) == "broken <thing> & co"
    assert err.findtext("gvr:locationInValidatedObject", namespaces=NS) == "line 3, column 7 | /a/b"
    warn = root.xpath("//gvr:constraint[@constraintID='WARN-1']", namespaces=NS)[0]
    assert warn.get("priority") == "RECOMMENDED"


def test_gvr_round_trips_through_parse_gvr() -> None:
    report = _report(error=True, warning=False)
    again = parse_gvr(report.to_gvr_bytes())
    assert again.result is Result.FAILED
    assert again.failed_ids() == {"ERR-1"}
    assert parse_gvr(_report(error=False, warning=False).to_gvr_bytes()).result is Result.PASSED


def test_json_text_and_html_carry_the_disclaimer_and_the_verdict() -> None:
    report = _report(error=True, warning=False)
    data = json.loads(report.to_json_bytes())
    assert data["disclaimer"] == DISCLAIMER
    assert data["result"] == "FAILED"
    assert data["counters"]["numberOfFailedWithErrors"] == 1
    assert data["object"]["sha256"] == report.object_sha256
    assert data["subReports"][0]["subReports"][0]["constraints"][0]["constraintID"] == "ERR-1"
    text = report.to_text()
    assert DISCLAIMER in text and "FAILED" in text and "ERR-1" in text
    html = report.to_html()
    assert "NOT an official" in html and "broken &lt;thing&gt;" in html


def test_control_characters_from_hostile_input_do_not_break_the_gvr() -> None:
    report = ValidationReport.for_content(
        b"", validator_id="v", service_name="s", object_name="x", kind="cda"
    )
    report.add("s").fail("X", "bad \x00\x07 bytes")
    root = etree.fromstring(report.to_gvr_bytes())
    assert root.xpath("string(//gvr:constraintDescription)", namespaces=NS) == "bad  bytes"


def test_validation_artefacts_hold_every_serialisation_and_the_input_hash() -> None:
    report = _report(error=False, warning=False)
    files = validation_artefacts(report)
    assert set(files) == {
        f"interop/{report.uuid}/{n}"
        for n in ("report.gvr.xml", "report.json", "report.txt", "object.sha256")
    }
    assert files[f"interop/{report.uuid}/report.gvr.xml"] == report.to_gvr_bytes()
    assert report.object_sha256.encode() in files[f"interop/{report.uuid}/object.sha256"]


def test_severity_threshold_leaves_out_and_does_not_count_lower_constraints() -> None:
    good = (FIXTURES / "cda" / "segur-sim_VAC-NOTE_2023.01.xml").read_bytes()
    # a version nobody knows (WARNING FR-DOC-TPL-04) and a bad confidentiality (ERROR)
    content = mutate(good, b'extension="2023.01"', b'extension="2031.01"')
    content = mutate(content, b'confidentialityCode code="N"', b'confidentialityCode code="X"')
    report = validate_bytes(content, name="doc.xml", kind="cda")
    severities = {c.severity for c in report.walk()}
    assert severities == {Severity.ERROR, Severity.WARNING, Severity.INFO}
    full = report.counters

    warning_up = report.filtered("warning")
    assert {c.severity for c in warning_up.walk()} == {Severity.ERROR, Severity.WARNING}
    assert warning_up.counters.constraints == sum(
        1 for c in report.walk() if c.severity is not Severity.INFO
    )
    assert warning_up.counters.warnings == full.warnings >= 1
    assert warning_up.failed_ids(Severity.WARNING) == {"FR-DOC-TPL-04"}

    errors_only = report.filtered(Severity.ERROR)
    assert {c.severity for c in errors_only.walk()} == {Severity.ERROR}
    assert errors_only.counters.warnings == 0 and errors_only.counters.errors == full.errors
    assert errors_only.result is report.result is Result.FAILED
    assert "FR-HDR-CONF-01" in errors_only.failed_ids()
    # the gvr counters follow the filter
    counters = etree.fromstring(errors_only.to_gvr_bytes()).find("gvr:counters", NS)
    assert counters is not None and counters.get("numberOfWarnings") == "0"
    assert counters.get("numberOfConstraints") == str(errors_only.counters.constraints)
    # INFO (or none) keeps everything; the original is untouched
    assert report.filtered("INFO") is report and report.filtered(None) is report
    assert report.counters == full
    with pytest.raises(ValueError, match="FATAL"):
        report.filtered("FATAL")


def test_report_round_trips_through_its_json() -> None:
    report = _report(error=True, warning=True)
    back = ValidationReport.from_dict(json.loads(report.to_json_bytes()))
    assert back.to_dict() == report.to_dict()
    assert back.to_gvr_bytes() == report.to_gvr_bytes()
    assert back.date == report.date and back.object_size == report.object_size
