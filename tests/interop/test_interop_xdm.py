"""XDM generation and validation, XDS metadata rules, and hostile archives."""

from __future__ import annotations

import re

import pytest
from interop_helpers import FIXTURES, make_zip, mutate, zip_entries

from simulators.interop.engine import validate_bytes
from simulators.interop.safe_zip import UnsafeZip, ZipLimits, read_zip
from simulators.interop.xds.xdm import METADATA, SUBSET, build_xdm

CDAS = sorted((FIXTURES / "cda").glob("*.xml"))


@pytest.fixture(scope="module")
def archive() -> bytes:
    return build_xdm([p.read_bytes() for p in CDAS])


def test_built_archive_has_the_mssante_layout_and_passes(archive: bytes) -> None:
    names = set(zip_entries(archive))
    assert {"INDEX.HTM", "README.TXT", METADATA, SUBSET + "DOC0001.XML"} <= names
    report = validate_bytes(archive, name="IHE_XDM.ZIP")
    assert report.kind == "xdm" and report.passed, report.to_text()
    cda_subs = [s for s in report.subreports[-1].subreports if s.name.startswith("CDA ")]
    assert len(cda_subs) == len(CDAS)


def test_build_is_deterministic_in_layout_and_uses_the_cda_ins(archive: bytes) -> None:
    meta = zip_entries(archive)[METADATA].decode()
    assert "285057505612338^^^&amp;1.2.250.1.213.1.4.10&amp;ISO^NH" in meta


def test_broken_hash_is_caught(archive: bytes) -> None:
    entries = zip_entries(archive)
    entries[METADATA] = re.sub(
        rb'(<rim:Slot name="hash">\s*<rim:ValueList>\s*<rim:Value>)'
        rb"[0-9a-f]{40}",
        rb"\g<1>" + b"0" * 40,
        entries[METADATA],
        count=1,
    )
    report = validate_bytes(make_zip(entries), name="IHE_XDM.ZIP")
    assert report.failed_ids() == {"FR-XDM-HASH-01"}


def test_wrong_size_and_missing_document_are_caught(archive: bytes) -> None:
    entries = zip_entries(archive)
    del entries[SUBSET + "DOC0002.XML"]
    entries[SUBSET + "DOC0001.XML"] += b"\n"
    report = validate_bytes(make_zip(entries), name="IHE_XDM.ZIP")
    assert {"FR-XDM-DOC-01", "FR-XDM-SIZE-01", "FR-XDM-HASH-01"} <= report.failed_ids()


def test_patient_id_must_match_the_cda_ins() -> None:
    archive = build_xdm(
        [CDAS[0].read_bytes()], patient_id="123456789012345^^^&1.2.250.1.213.1.4.10&ISO^NH"
    )
    report = validate_bytes(archive, name="IHE_XDM.ZIP")
    assert report.failed_ids() == {"FR-XDM-PID-01"}


def test_missing_layout_files_and_bad_metadata_codes(archive: bytes) -> None:
    entries = zip_entries(archive)
    del entries["README.TXT"]
    entries[METADATA] = mutate(
        entries[METADATA], b'nodeRepresentation="N"', b'nodeRepresentation="Z"'
    )
    entries[METADATA] = mutate(
        entries[METADATA], b"&amp;1.2.250.1.71.4.2.1&amp;", b"&amp;1.2.3&amp;"
    )
    report = validate_bytes(make_zip(entries), name="IHE_XDM.ZIP")
    assert {
        "FR-XDM-LAYOUT-01",
        "FR-XDS-CONFIDENTIALITYCODE-02",
        "FR-XDS-AUTHOR-02",
    } <= report.failed_ids()


def test_the_embedded_cda_is_validated_as_a_sub_report() -> None:
    broken = mutate(
        CDAS[0].read_bytes(), b'confidentialityCode code="N"', b'confidentialityCode code="X"'
    )
    report = validate_bytes(build_xdm([broken]), name="IHE_XDM.ZIP")
    assert "FR-HDR-CONF-01" in report.failed_ids()


def test_metadata_alone_is_validated_as_xds(archive: bytes) -> None:
    meta = zip_entries(archive)[METADATA]
    assert validate_bytes(meta, name="METADATA.XML").passed
    bad = re.sub(
        rb'value="285057505612338\^\^\^&amp;1.2.250.1.213.1.4.10', b'value="X^^^&amp;1.2.3', meta
    )
    report = validate_bytes(bad, name="METADATA.XML")
    assert {"FR-XDS-PID-01", "FR-XDS-SS-02"} <= report.failed_ids()


# -- hostile archives ----------------------------------------------------------------------


def test_path_traversal_is_refused() -> None:
    with pytest.raises(UnsafeZip, match="traversal"):
        read_zip(make_zip({"../evil.txt": b"x"}))
    with pytest.raises(UnsafeZip, match="absolute"):
        read_zip(make_zip({"/etc/passwd": b"x"}))
    report = validate_bytes(make_zip({"IHE_XDM/../../x": b"x"}), name="IHE_XDM.ZIP", kind="xdm")
    assert report.failed_ids() == {"INPUT-ZIP-01"}


def test_zip_bomb_ratio_and_total_size_limits() -> None:
    bomb = make_zip({"big.txt": b"\0" * (20 * 1024 * 1024)})
    assert len(bomb) < 100_000
    with pytest.raises(UnsafeZip, match="ratio"):
        read_zip(bomb)
    with pytest.raises(UnsafeZip, match="more than 1000"):
        read_zip(make_zip({"a": b"a" * 5000}), ZipLimits(max_total_bytes=1000))


def test_entry_count_limit() -> None:
    many = make_zip({f"f{i}": b"" for i in range(50)})
    with pytest.raises(UnsafeZip, match="entries"):
        read_zip(many, ZipLimits(max_entries=10))


def test_not_a_zip_and_truncated_zip_give_a_failed_report(archive: bytes) -> None:
    for content in (b"PK\x03\x04garbage", archive[: len(archive) // 2]):
        report = validate_bytes(content, name="IHE_XDM.ZIP", kind="xdm")
        assert report.failed_ids() == {"INPUT-ZIP-01"}


@pytest.mark.parametrize(
    ("old", "new", "constraint_id", "source"),
    [
        # JDV_J06: TRE_A03 codes 10-33 and 90 (not in the corpus: our list)
        (b'nodeRepresentation="10"', b'nodeRepresentation="99"', "CLASSCODE", "JDV_J06"),
        # JDV_J10: urn:asip:ci-sis:, urn:ans:ci-sis: or urn:ihe: codes (our list)
        (
            b'nodeRepresentation="urn:ihe:iti:xds-sd:pdf:2008"',
            b'nodeRepresentation="application/pdf"',
            "FORMATCODE",
            "JDV_J10",
        ),
    ],
)
def test_builtin_j06_and_j10_lists(
    archive: bytes, old: bytes, new: bytes, constraint_id: str, source: str
) -> None:
    meta = zip_entries(archive)[METADATA]
    report = validate_bytes(mutate(meta, old, new), name="METADATA.XML")
    failed = [c for c in report.walk() if not c.passed]
    assert [c.constraint_id for c in failed] == [f"FR-XDS-{constraint_id}-02"]
    assert f"{source} (built-in)" in failed[0].description
