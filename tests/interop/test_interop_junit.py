"""The generic JUnit XML writer (simulators.core.junit), as CI tools read it."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from lxml import etree

from simulators.core.junit import JUnitCase, write_junit, xml_text


def test_statuses_counts_properties_and_times(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "junit.xml"
    cases = [
        JUnitCase("ok", "suite.a", 0.25, "pass"),
        JUnitCase("broken", "suite.a", 1.5, "fail", message="2 errors: A-1, B-2", details="A-1"),
        JUnitCase("crashed", "suite.b", 0.0, "error", message="boom", details="Traceback"),
        JUnitCase("later", "suite.b", 0.0, "skip", message="not applicable"),
    ]
    write_junit(out, "my suite", cases, properties={"tool": "segur-sim", "n": "1"})
    root = ET.parse(out).getroot()
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    for el in (root, suite):
        assert (el.get("tests"), el.get("failures"), el.get("errors"), el.get("skipped")) == (
            "4",
            "1",
            "1",
            "1",
        )
        assert el.get("name") == "my suite" and el.get("time") == "1.750"
    assert suite.get("timestamp")
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props == {"tool": "segur-sim", "n": "1"}
    by_name = {c.get("name"): c for c in suite.findall("testcase")}
    assert list(by_name["ok"]) == [] and by_name["ok"].get("time") == "0.250"
    failure = by_name["broken"].find("failure")
    assert failure is not None and failure.get("message") == "2 errors: A-1, B-2"
    assert failure.text == "A-1" and by_name["broken"].get("classname") == "suite.a"
    error = by_name["crashed"].find("error")
    assert error is not None and error.get("message") == "boom" and error.text == "Traceback"
    skipped = by_name["later"].find("skipped")
    assert skipped is not None and skipped.get("message") == "not applicable"


def test_hostile_text_is_escaped_and_the_file_stays_well_formed(tmp_path: Path) -> None:
    out = tmp_path / "junit.xml"
    nasty = 'a\x00b\x1b[31m <tag> & "q" \ud800 \ufffe ]]> é'
    write_junit(out, nasty, [JUnitCase(nasty, nasty, 0.1, "fail", message=nasty, details=nasty)])
    # a strict parser (libxml2) accepts it
    root = etree.parse(str(out)).getroot()
    failure = root.find("testsuite/testcase/failure")
    assert failure is not None
    expected = 'a\\x00b\\x1b[31m <tag> & "q" \\ud800 \\ufffe ]]> é'
    assert failure.text == expected and failure.get("message") == expected
    assert root.find("testsuite/testcase").get("name") == expected  # type: ignore[union-attr]
    assert xml_text("tab\tnew\nline\r") == "tab\tnew\nline\r"


def test_unknown_status_is_refused() -> None:
    with pytest.raises(ValueError, match="status"):
        JUnitCase("x", "y", 0.0, "passed")
