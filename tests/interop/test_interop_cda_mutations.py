"""Documents broken on purpose are caught, with the right constraint IDs."""

from __future__ import annotations

from pathlib import Path

import pytest
from interop_helpers import CDA_XSD, FIXTURES, mutate

from simulators.interop.engine import ValidationOptions, validate_bytes

VAC_NOTE = FIXTURES / "cda" / "segur-sim_VAC-NOTE_2023.01.xml"
CR_BIO_N1 = FIXTURES / "cda" / "segur-sim_CR-BIO_niveau1_pdf.xml"

INS = b'<id root="1.2.250.1.213.1.4.10" extension="285057505612338"/>'
AUTHOR_ID = b'<id root="1.2.250.1.71.4.2.1" extension="801234567897"/>\n      <code'

# (name, source, old, new, expected failed constraint IDs)
MUTATIONS: list[tuple[str, Path, bytes, bytes, set[str]]] = [
    ("drop the INS", VAC_NOTE, INS, b"", {"FR-HDR-INS-01"}),
    (
        "wrong INS OID",
        VAC_NOTE,
        INS,
        INS.replace(b".4.10", b".4.99"),
        {"FR-HDR-INS-01", "FR-HDR-INS-02"},
    ),
    (
        "INS too short",
        VAC_NOTE,
        INS,
        INS.replace(b"285057505612338", b"28505750561"),
        {"FR-HDR-INS-03"},
    ),
    (
        "bad confidentiality code",
        VAC_NOTE,
        b'confidentialityCode code="N"',
        b'confidentialityCode code="X"',
        {"FR-HDR-CONF-01"},
    ),
    (
        "wrong document-type templateId",
        VAC_NOTE,
        b'root="1.2.250.1.213.1.1.1.46"',
        b'root="1.2.250.1.213.1.1.1.37"',
        {"FR-DOC-CODE-01"},
    ),
    (
        "document-type templateId removed",
        VAC_NOTE,
        b'<templateId root="1.2.250.1.213.1.1.1.46" extension="2023.01"/>',
        b"",
        {"FR-DOC-TPL-01"},
    ),
    ("wrong document code", VAC_NOTE, b'code="87273-9"', b'code="99999-9"', {"FR-DOC-CODE-01"}),
    ("missing author", VAC_NOTE, b"<author>", b"<!--", set()),  # completed below
    (
        "author id not a national id",
        VAC_NOTE,
        AUTHOR_ID,
        AUTHOR_ID.replace(b"1.2.250.1.71.4.2.1", b"1.2.3.4"),
        {"FR-HDR-AUT-03"},
    ),
    (
        "author id malformed",
        VAC_NOTE,
        AUTHOR_ID,
        AUTHOR_ID.replace(b"801234567897", b"ABC"),
        {"FR-HDR-AUT-04"},
    ),
    ("no birthplace", VAC_NOTE, b"<county>75056</county>", b"", {"FR-HDR-INS-11"}),
    (
        "no birth given name",
        VAC_NOTE,
        b'<given qualifier="BR">CAMILLE</given>',
        b"",
        {"FR-HDR-INS-07"},
    ),
    (
        "no realm",
        VAC_NOTE,
        b'<realmCode code="FR"/>',
        b'<realmCode code="US"/>',
        {"FR-HDR-REALM-01"},
    ),
    (
        "bad effectiveTime",
        VAC_NOTE,
        b'<effectiveTime value="20250114101500+0100"/>\n  <conf',
        b'<effectiveTime value="2025"/>\n  <conf',
        {"FR-HDR-TIME-01"},
    ),
    ("no legalAuthenticator", VAC_NOTE, b"<legalAuthenticator>", b"<!--", set()),
    (
        "no custodian name",
        VAC_NOTE,
        b"<name>Centre de sant\xc3\xa9 segur-sim</name>",
        b"",
        {"FR-HDR-CUST-01"},
    ),
    ("no languageCode", VAC_NOTE, b'<languageCode code="fr-FR"/>\n', b"", set()),
    (
        "PDF without B64",
        CR_BIO_N1,
        b'representation="B64"',
        b'representation="TXT"',
        {"FR-HDR-BODY-02"},
    ),
    (
        "missing vaccination section",
        VAC_NOTE,
        b'<templateId root="1.3.6.1.4.1.19376.1.5.3.1.3.23"/>',
        b"",
        {"FR-DOC-SEC-01"},
    ),
]


def _comment_out(content: bytes, start: bytes, end: bytes) -> bytes:
    i = content.index(start)
    j = content.index(end, i) + len(end)
    return content[:i] + b"<!-- removed -->" + content[j:]


def _apply(source: Path, name: str, old: bytes, new: bytes) -> bytes:
    content = source.read_bytes()
    if name == "missing author":
        return _comment_out(content, b"<author>", b"</author>")
    if name == "no legalAuthenticator":
        return _comment_out(content, b"<legalAuthenticator>", b"</legalAuthenticator>")
    return mutate(content, old, new)


EXPECTED_EXTRA = {
    "missing author": {"FR-HDR-AUT-01", "XSD-01"},
    "no legalAuthenticator": {"FR-HDR-LEGAL-01"},
    "no languageCode": {"FR-HDR-LANG-01"},
}


@pytest.mark.parametrize(
    ("name", "source", "old", "new", "expected"), MUTATIONS, ids=[m[0] for m in MUTATIONS]
)
def test_mutation_is_caught(
    name: str, source: Path, old: bytes, new: bytes, expected: set[str]
) -> None:
    expected = expected | EXPECTED_EXTRA.get(name, set())
    original = validate_bytes(source.read_bytes(), name=source.name)
    assert original.passed  # the counterpart: the unbroken document passes
    report = validate_bytes(_apply(source, name, old, new), name=f"{name}.xml")
    assert report.result.value == "FAILED", report.to_text()
    assert expected <= report.failed_ids(), report.to_text()
    # every failed constraint carries a location pointing into the document
    for c in report.walk():
        if not c.passed and c.constraint_id.startswith("FR-"):
            assert c.location is not None and c.location.line, c


def test_xsd_layer_catches_what_the_header_rules_do_not_check() -> None:
    if not CDA_XSD.is_file():
        pytest.skip("ANS corpus (CDA XSD) not present")
    bad = mutate(
        VAC_NOTE.read_bytes(),
        b'<statusCode code="completed"/>',
        b'<statusCode code="completed"/><bogus/>',
    )
    assert validate_bytes(bad, name="x.xml").passed  # our header skeleton skips the body
    full = validate_bytes(bad, name="x.xml", options=ValidationOptions(xsd_path=CDA_XSD))
    assert full.failed_ids() == {"XSD-01"}
    xsd_errors = [c for c in full.walk() if c.constraint_id == "XSD-01" and not c.passed]
    assert xsd_errors[0].location is not None and xsd_errors[0].location.line


def test_level1_without_body_type_is_reported() -> None:
    bad = _comment_out(CR_BIO_N1.read_bytes(), b"<component>", b"</component>")
    report = validate_bytes(bad, name="x.xml")
    assert {"FR-HDR-BODY-01", "XSD-01"} <= report.failed_ids()
