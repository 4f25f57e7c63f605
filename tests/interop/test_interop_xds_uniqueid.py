"""XDS / XDM uniqueId coherence: shape, uniqueness in the submission, and the CDA id.

Rules (simulators/interop/xds/ebrim.py and validator.py), from IHE ITI TF-3:
- 4.2.3.2.26 DocumentEntry.uniqueId: for a CDA, "oid^extension" serialising
  ClinicalDocument/id, the OID at most 64 characters and the extension at most 16, no
  '^' when there is no extension (FR-XDS-UID-02, FR-XDS-UID-03 as a WARNING,
  FR-XDM-UID-01 against the document when it is in the archive);
- uniqueIds identify one object each: two DocumentEntries of a submission cannot share
  one (FR-XDS-UID-04), nor the SubmissionSet and a DocumentEntry (FR-XDS-UID-05);
- 4.2.3.3.12 SubmissionSet.uniqueId: an OID of at most 64 characters (FR-XDS-SS-05).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from interop_helpers import FIXTURES, corpus_cda_files, make_zip, mutate, zip_entries
from lxml import etree

from simulators.interop.engine import validate_bytes
from simulators.interop.report import Severity, ValidationReport
from simulators.interop.xds.ebrim import DE_UNIQUE_ID, NS, SS_UNIQUE_ID
from simulators.interop.xds.xdm import METADATA, build_xdm

CDAS = sorted((FIXTURES / "cda").glob("*.xml"))
UID_RULES = {"FR-XDS-UID-02", "FR-XDS-UID-04", "FR-XDS-UID-05", "FR-XDS-SS-05"}


def _ids(meta: bytes, scheme: str) -> list[str]:
    root = etree.fromstring(meta)
    path = f"//rim:ExternalIdentifier[@identificationScheme='{scheme}']/@value"
    return [str(v) for v in root.xpath(path, namespaces=NS)]


def _set_id(meta: bytes, scheme: str, index: int, value: str) -> bytes:
    root = etree.fromstring(meta)
    path = f"//rim:ExternalIdentifier[@identificationScheme='{scheme}']"
    root.xpath(path, namespaces=NS)[index].set("value", value)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _failed(report: ValidationReport, severity: Severity | None = Severity.ERROR) -> list[str]:
    return sorted(
        c.constraint_id
        for c in report.walk()
        if not c.passed and (severity is None or c.severity is severity)
    )


@pytest.fixture(scope="module")
def archive() -> bytes:
    return build_xdm([p.read_bytes() for p in CDAS])


@pytest.fixture(scope="module")
def meta(archive: bytes) -> bytes:
    return zip_entries(archive)[METADATA]


def _with_meta(archive: bytes, meta: bytes) -> bytes:
    entries = zip_entries(archive)
    entries[METADATA] = meta
    return make_zip(entries)


# -- what passes --------------------------------------------------------------------------


def test_built_archive_uses_the_cda_ids_and_passes_every_uniqueid_rule(archive: bytes) -> None:
    meta = zip_entries(archive)[METADATA]
    assert _ids(meta, DE_UNIQUE_ID) == [
        "1.2.250.1.213.1.1.9.99.4^SEGURSIM-4",
        "1.2.250.1.213.1.1.9.99.5^SEGURSIM-5",
        "1.2.250.1.213.1.1.9.99.3^SEGURSIM-3",
    ]
    report = validate_bytes(archive, name="IHE_XDM.ZIP")
    assert report.passed and _failed(report, None) == [], report.to_text()
    ran = [c.constraint_id for c in report.walk()]
    assert ran.count("FR-XDM-UID-01") == len(CDAS)
    assert ran.count("FR-XDS-UID-03") == len(CDAS)  # every id has an extension
    assert set(ran) >= UID_RULES


def test_a_cda_id_without_extension_gives_the_root_alone() -> None:
    """ANS examples identify documents by a root alone (all 94 of them): uniqueId = root."""
    cda = mutate(CDAS[0].read_bytes(), b' extension="SEGURSIM-4"/>', b"/>")
    archive = build_xdm([cda])
    meta = zip_entries(archive)[METADATA]
    assert _ids(meta, DE_UNIQUE_ID) == ["1.2.250.1.213.1.1.9.99.4"]
    assert validate_bytes(archive, name="IHE_XDM.ZIP").passed
    # the same id written root^ (an empty extension) is neither the CDA id nor well formed
    bad = _set_id(meta, DE_UNIQUE_ID, 0, "1.2.250.1.213.1.1.9.99.4^")
    report = validate_bytes(_with_meta(archive, bad), name="IHE_XDM.ZIP")
    assert _failed(report) == ["FR-XDM-UID-01", "FR-XDS-UID-02"]


def test_ans_examples_in_an_archive_keep_their_id_as_uniqueid(corpus: Path) -> None:
    for path in corpus_cda_files()[:5]:
        report = validate_bytes(build_xdm([path.read_bytes()]), name="IHE_XDM.ZIP")
        checks = [c for c in report.walk() if c.constraint_id == "FR-XDM-UID-01"]
        assert [c.passed for c in checks] == [True], path
        assert not {"FR-XDS-UID-02", "FR-XDS-UID-04"} & report.failed_ids(), path


# -- what fails -----------------------------------------------------------------------------


def test_uniqueid_that_is_not_the_cda_id_is_caught(archive: bytes, meta: bytes) -> None:
    bad = _set_id(meta, DE_UNIQUE_ID, 1, "1.2.250.1.213.1.1.9.99.5^SEGURSIM-9")
    report = validate_bytes(_with_meta(archive, bad), name="IHE_XDM.ZIP")
    assert _failed(report) == ["FR-XDM-UID-01"]
    (c,) = [c for c in report.walk() if not c.passed]
    assert "expected '1.2.250.1.213.1.1.9.99.5^SEGURSIM-5'" in c.description
    assert "metadata says '1.2.250.1.213.1.1.9.99.5^SEGURSIM-9'" in c.description
    assert c.location is not None and c.location.line and c.location.xpath
    # the same metadata alone is coherent: no document to compare with
    assert validate_bytes(bad, name="METADATA.XML").passed


def test_two_document_entries_with_the_same_uniqueid(archive: bytes, meta: bytes) -> None:
    first = _ids(meta, DE_UNIQUE_ID)[0]
    bad = _set_id(meta, DE_UNIQUE_ID, 2, first)
    report = validate_bytes(bad, name="METADATA.XML")
    assert _failed(report) == ["FR-XDS-UID-04"]
    (c,) = [c for c in report.walk() if not c.passed]
    assert repr(first) in c.description and "already the uniqueId of urn:uuid:" in c.description
    assert c.location is not None and c.location.line
    # in the archive the third document's CDA id also disagrees
    report = validate_bytes(_with_meta(archive, bad), name="IHE_XDM.ZIP")
    assert _failed(report) == ["FR-XDM-UID-01", "FR-XDS-UID-04"]


def test_submission_set_uniqueid_reused_by_a_document_entry(meta: bytes) -> None:
    (ss_uid,) = _ids(meta, SS_UNIQUE_ID)
    report = validate_bytes(_set_id(meta, DE_UNIQUE_ID, 0, ss_uid), name="METADATA.XML")
    assert _failed(report) == ["FR-XDS-UID-05"]


ROOT_64 = "1." + "2" * 62
BAD_DOCUMENT_UIDS = [
    ("urn:oid:1.2.250.1.213.1.1.9.99.4", "is not an OID"),
    ("1.2.250.01.213", "is not an OID"),
    ("3.2.250.1", "is not an OID"),
    ("1.2.250.1.213.1.1.9.99.4^A^B", "more than one '^'"),
    ("1.2.250.1.213.1.1.9.99.4^", "empty extension"),
    (ROOT_64 + "3", "65 characters"),
]


@pytest.mark.parametrize(("uid", "why"), BAD_DOCUMENT_UIDS, ids=[u[1] for u in BAD_DOCUMENT_UIDS])
def test_malformed_document_uniqueid(meta: bytes, uid: str, why: str) -> None:
    report = validate_bytes(_set_id(meta, DE_UNIQUE_ID, 0, uid), name="METADATA.XML")
    assert _failed(report) == ["FR-XDS-UID-02"]
    (c,) = [c for c in report.walk() if not c.passed]
    assert why in c.description and repr(uid) in c.description


def test_length_limits(meta: bytes) -> None:
    ok = validate_bytes(_set_id(meta, DE_UNIQUE_ID, 0, ROOT_64 + "^X"), name="METADATA.XML")
    assert ok.passed and len(ROOT_64) == 64
    # a 17-character extension is only a warning
    long_ext = _set_id(meta, DE_UNIQUE_ID, 0, "1.2.250.1.213.1.1.9.99.4^" + "E" * 17)
    report = validate_bytes(long_ext, name="METADATA.XML")
    assert report.passed
    assert _failed(report, None) == ["FR-XDS-UID-03"]
    assert _failed(report, Severity.WARNING) == ["FR-XDS-UID-03"]


@pytest.mark.parametrize("uid", ["1.2.250.1.213.1.1.9.99^X", "2.25.x", ROOT_64 + "3"])
def test_malformed_submission_set_uniqueid(meta: bytes, uid: str) -> None:
    report = validate_bytes(_set_id(meta, SS_UNIQUE_ID, 0, uid), name="METADATA.XML")
    assert _failed(report) == ["FR-XDS-SS-05"]
