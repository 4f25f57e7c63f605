"""HL7 v2 profile rules: CDA transmission (ORU, MDM, with PRT), ACK, PAM France."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from interop_helpers import ANS_HL7, FIXTURES, corpus_hl7_files, mutate

from simulators.interop.engine import validate_bytes

HL7 = FIXTURES / "hl7v2"
ORU = HL7 / "segur-sim_ORU_R01_CR-BIO.hl7"
MDM = HL7 / "segur-sim_MDM_T02_LPS.hl7"
ACK = HL7 / "segur-sim_ACK_T02.hl7"
ADT = HL7 / "segur-sim_ADT_A01_PAM-FR.hl7"


def _drop_segments(content: bytes, name: bytes) -> bytes:
    return b"\r".join(s for s in content.split(b"\r") if not s.startswith(name))


@pytest.mark.parametrize("path", [ORU, MDM, ACK, ADT], ids=lambda p: p.name)
def test_our_fixtures_pass(path: Path) -> None:
    report = validate_bytes(path.read_bytes(), name=path.name)
    assert report.kind == "hl7v2"
    assert report.passed, report.to_text()


def test_embedded_cda_is_a_sub_report() -> None:
    report = validate_bytes(ORU.read_bytes(), name=ORU.name)
    embedded = [s for s in report.subreports if s.name.startswith("Embedded CDA")]
    assert len(embedded) == 1
    assert any(c.constraint_id == "FR-HDR-INS-01" and c.passed for c in embedded[0].walk())


MUTATIONS = [
    ("missing PRT", ORU, lambda c: _drop_segments(c, b"PRT"), {"HL7-PRT-01", "HL7-PRT-02"}),
    (
        "missing sender PRT",
        MDM,
        lambda c: mutate(c, b"PRT||UC||SB^", b"PRT||UC||XX^"),
        {"HL7-PRT-01", "HL7-PRT-04"},
    ),
    (
        "wrong MSH-21",
        ORU,
        lambda c: mutate(c, b"2.1^CISIS_CDA_HL7_V2", b"2.1^OTHER"),
        {"HL7-MSH-21"},
    ),
    ("wrong MSH-12", MDM, lambda c: mutate(c, b"|P|2.6|", b"|P|2.5|"), {"HL7-MSH-12"}),
    ("no INS in PID-3", ORU, lambda c: mutate(c, b"^INS^^", b"^NH^^"), {"HL7-PID-02"}),
    (
        "wrong INS OID",
        MDM,
        lambda c: mutate(c, b"&1.2.250.1.213.1.4.10&ISO^INS", b"&1.2.3&ISO^INS"),
        {"HL7-PID-03"},
    ),
    (
        "CDA not base64",
        ORU,
        lambda c: mutate(c, b"^Base64^PD94", b"^Base64^%%%%PD94"),
        {"HL7-OBX-06"},
    ),
    (
        "placeholder instead of CDA",
        ORU,
        lambda c: (
            c.split(b"^Base64^")[0]
            + b"^Base64^"
            + base64.b64encode(b"not a CDA")
            + b"||||||F\r"
            + c.split(b"||||||F\r", 1)[1]
        ),
        {"HL7-OBX-07"},
    ),
    ("embedded CDA with bad confidentiality", ORU, lambda c: _reembed(c), {"FR-HDR-CONF-01"}),
    ("bad MSA-1", ACK, lambda c: mutate(c, b"MSA|AA|", b"MSA|ZZ|"), {"HL7-MSA-02"}),
    ("PAM-FR without VALI", ADT, lambda c: mutate(c, b"|VALI", b"|PROV"), {"HL7-PID-32"}),
    (
        "PAM-FR wrong MSH-21",
        ADT,
        lambda c: mutate(c, b"2.11^IHE_FRANCE-2.11-PAM", b"2.10^X"),
        {"HL7-MSH-21"},
    ),
    (
        "wrong encoding characters",
        ORU,
        lambda c: mutate(c, b"MSH|^~\\&|", b"MSH|^\xcb\x9c\\&|"),
        {"HL7-MSH-01"},
    ),
]


def _reembed(content: bytes) -> bytes:
    cda = (FIXTURES / "cda" / "segur-sim_CR-BIO_2024.01.xml").read_bytes()
    bad = mutate(cda, b'confidentialityCode code="N"', b'confidentialityCode code="X"')
    return mutate(content, base64.b64encode(cda), base64.b64encode(bad))


@pytest.mark.parametrize(
    ("name", "source", "change", "expected"), MUTATIONS, ids=[m[0] for m in MUTATIONS]
)
def test_mutation_is_caught_with_segment_positions(
    name: str, source: Path, change: object, expected: set[str]
) -> None:
    assert callable(change)
    report = validate_bytes(change(source.read_bytes()), name=f"{name}.hl7")
    assert not report.passed
    assert expected <= report.failed_ids(), report.to_text()
    for c in report.walk():
        if not c.passed and c.constraint_id.startswith("HL7-") and c.location:
            assert c.location.line and c.location.segment


def test_hl7apy_alone_does_not_keep_prt_but_we_do() -> None:
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.parser import parse_message

    text = MDM.read_bytes().decode()
    try:
        parsed = parse_message(text, find_groups=False, validation_level=VALIDATION_LEVEL.TOLERANT)
        names = [c.name for c in parsed.children]
    except Exception:  # hl7apy 1.3.5 rejects PRT in a v2.6 message ("Invalid name")
        names = []
    assert "PRT" not in names
    report = validate_bytes(MDM.read_bytes(), name=MDM.name)
    assert any(c.constraint_id == "HL7-PRT-01" and c.passed for c in report.walk())


# Documented verdicts of the ANS HL7 v2 examples (docs/interop.md): ACK and PAM-FR pass;
# messages whose OBX-5 holds a placeholder instead of a base64 CDA fail on HL7-OBX-07.
def test_ans_examples_verdicts() -> None:
    files = corpus_hl7_files()
    if not files:
        pytest.skip(f"ANS HL7 v2 corpus not found at {ANS_HL7}")
    assert len(files) == 59
    for path in files:
        report = validate_bytes(path.read_bytes(), name=path.name)
        assert report.kind == "hl7v2"
        content = path.read_bytes()
        if b"ACK^" in content[:300] or b"ADT^" in content[:300]:
            assert report.passed, (path, report.to_text())
        real_cda = b"^Base64^PENsaW5pY2FsRG9jdW1lbnQ" in content or b"^Base64^PD94bWwg" in content
        if b"RG9jdW1lbnQg" in content and not real_cda:
            assert "HL7-OBX-07" in report.failed_ids(), path
        # the encoding characters of the V2.0 ORU examples hold a small tilde (U+02DC)
        if "\u02dc".encode() in content[:12]:
            assert "HL7-MSH-01" in report.failed_ids(), path
