"""Hostile input: every kind of bad object yields a clear FAILED report, never a
traceback, and no entity, DTD or network access happens."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from interop_helpers import FIXTURES

from simulators.interop.engine import validate_bytes
from simulators.interop.safe_xml import UnsafeOrInvalidXml, parse_xml

GOOD = (FIXTURES / "cda" / "segur-sim_VAC-NOTE_2023.01.xml").read_bytes()

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE ClinicalDocument [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<ClinicalDocument xmlns="urn:hl7-org:v3"><title>&xxe;</title></ClinicalDocument>"""
LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<ClinicalDocument xmlns="urn:hl7-org:v3"><title>&lol3;</title></ClinicalDocument>"""
EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE ClinicalDocument SYSTEM "http://example.invalid/cda.dtd">
<ClinicalDocument xmlns="urn:hl7-org:v3"/>"""


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (XXE, "entities"),
        (LAUGHS, "entities"),
        (EXTERNAL_DTD, "DOCTYPE"),
        (GOOD[: len(GOOD) // 2], "not well-formed"),
        (GOOD.replace("é".encode(), b"\xe9"), "UTF-8"),
        (b"", "empty"),
    ],
)
def test_bad_xml_gives_a_failed_report_with_a_reason(content: bytes, needle: str) -> None:
    for kind in ("cda", "xds"):
        report = validate_bytes(content, name="bad.xml", kind=kind)
        assert report.failed_ids() == {"INPUT-XML-01"}
        message = next(c.description for c in report.walk() if not c.passed)
        assert needle.lower() in message.lower()
    with pytest.raises(UnsafeOrInvalidXml):
        parse_xml(content)


def test_parser_never_resolves_entities_even_without_doctype_check() -> None:
    from lxml import etree

    from simulators.interop.safe_xml import safe_parser

    root = etree.fromstring(XXE, parser=safe_parser())
    assert "root:" not in (root.findtext("{urn:hl7-org:v3}title") or "")


def test_truncated_location_is_reported() -> None:
    report = validate_bytes(GOOD[:500], name="cut.xml", kind="cda")
    failed = [c for c in report.walk() if not c.passed]
    assert failed[0].location is not None and failed[0].location.line


def test_non_utf8_hl7_and_unknown_kind() -> None:
    report = validate_bytes(b"MSH|^~\\&|A|B\r\xff\xfe", name="m.hl7")
    assert report.failed_ids() == {"INPUT-HL7-01"}
    assert validate_bytes(b"\x00\x01binary", name="x.bin").failed_ids() == {"INPUT-KIND-01"}


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=2000), st.sampled_from(["auto", "cda", "hl7v2", "xds", "xdm", "fhir"]))
def test_fuzzed_input_never_raises(content: bytes, kind: str) -> None:
    report = validate_bytes(content, name="fuzz", kind=kind)
    assert report.result.value in ("PASSED", "FAILED")
    report.to_gvr_bytes()
    report.to_json_bytes()


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=0, max_value=len(GOOD)), st.binary(min_size=1, max_size=8))
def test_corrupted_cda_never_raises(position: int, garbage: bytes) -> None:
    content = GOOD[:position] + garbage + GOOD[position:]
    report = validate_bytes(content, name="c.xml", kind="cda")
    assert report.result.value in ("PASSED", "FAILED")
