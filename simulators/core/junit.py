"""JUnit XML reports, for CI systems (GitLab, Jenkins, GitHub test reporters...).

Any simulator that runs checks can hand its results to CI as JUnit XML::

    from simulators.core.junit import JUnitCase, write_junit

    write_junit(
        "results.xml",
        "segur-sim interop",
        [
            JUnitCase("doc.xml", "interop.cda", 0.12, "pass"),
            JUnitCase("bad.xml", "interop.cda", 0.08, "fail",
                      message="2 errors: FR-HDR-CONF-01, FR-HDR-INS-01",
                      details="FR-HDR-CONF-01: confidentialityCode ..."),
        ],
        properties={"segur-sim": "1.0"},
    )

``JUnitCase(name, classname, time, status, message="", details="")``: ``time`` in
seconds; ``status`` is ``pass``, ``fail`` (a ``<failure>``), ``error`` (an ``<error>``:
the check itself could not run) or ``skip`` (a ``<skipped>``); ``message`` becomes
the element's ``message`` attribute and ``details`` its text.

``write_junit(path, suite_name, cases, *, properties={})`` writes one
``<testsuites>`` holding one ``<testsuite>`` (with the counts, the total time, a
timestamp and the ``<properties>``), UTF-8, with xml.etree. Characters XML 1.0
cannot carry (control characters, lone surrogates, U+FFFE/U+FFFF) are written as
visible ``\\xNN`` / ``\\uNNNN`` escapes, so hostile text in a message cannot break the
file.
"""

from __future__ import annotations

import datetime as dt
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

STATUSES = ("pass", "fail", "error", "skip")

_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


@dataclass
class JUnitCase:
    """One test case; ``status`` is one of pass, fail, error, skip."""

    name: str
    classname: str
    time: float
    status: str
    message: str = ""
    details: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {self.status!r}")


def xml_text(text: str) -> str:
    """``text`` with the characters XML 1.0 forbids written as visible escapes."""

    def escape(match: re.Match[str]) -> str:
        code = ord(match.group(0))
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return _NOT_XML.sub(escape, text)


def _seconds(value: float) -> str:
    return f"{max(value, 0.0):.3f}"


def write_junit(
    path: Path | str,
    suite_name: str,
    cases: Sequence[JUnitCase],
    *,
    properties: Mapping[str, str] = {},  # read only: never mutated
) -> None:
    """Write ``cases`` as one JUnit test suite to ``path`` (see the module docstring)."""
    counts = {status: sum(1 for c in cases if c.status == status) for status in STATUSES}
    total = sum(c.time for c in cases)
    attrs = {
        "name": xml_text(suite_name),
        "tests": str(len(cases)),
        "failures": str(counts["fail"]),
        "errors": str(counts["error"]),
        "skipped": str(counts["skip"]),
        "time": _seconds(total),
    }
    root = ET.Element("testsuites", attrs)
    suite = ET.SubElement(
        root,
        "testsuite",
        {**attrs, "timestamp": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")},
    )
    if properties:
        props = ET.SubElement(suite, "properties")
        for key, value in properties.items():
            ET.SubElement(props, "property", name=xml_text(key), value=xml_text(str(value)))
    for case in cases:
        el = ET.SubElement(
            suite,
            "testcase",
            name=xml_text(case.name),
            classname=xml_text(case.classname),
            time=_seconds(case.time),
        )
        tag = {"fail": "failure", "error": "error", "skip": "skipped"}.get(case.status)
        if tag is None:
            continue
        child = ET.SubElement(el, tag)
        if case.message:
            child.set("message", xml_text(case.message))
        if tag != "skipped":
            child.set("type", tag)
        if case.details:
            child.text = xml_text(case.details)
    ET.indent(root)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(target, encoding="utf-8", xml_declaration=True)
