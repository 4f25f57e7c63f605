"""Every ANS example document goes through the CDA validator (built-in rules + the
corpus XSD). Expected verdicts are documented in docs/interop.md."""

from __future__ import annotations

from pathlib import Path

import pytest
from interop_helpers import CDA_XSD, corpus_cda_files, need_corpus

from simulators.interop.engine import ValidationOptions, validate_bytes

# Warnings the built-in rules are expected to raise on the ANS examples, and why:
EXPECTED_WARNINGS = {
    "FR-DOC-TPL-03",  # document-type templateId without the volet version (BIO 2021, VSM...)
    # a version with no rules of its own, nearest one used: SDM-MR 2025.01 examples say
    # 2024.01, VSM_1.4 says 201310
    "FR-DOC-TPL-04",
    "FR-HDR-INS-04",  # test NIRs whose control key does not match
    "FR-DOC-CODE-01",  # IPS-FR_2024.01_DLU uses the DLU code 74207-2 under the IPS-FR template
    "FR-HDR-TIME-02",
}


def test_all_94_ans_examples_pass_the_builtin_rules() -> None:
    need_corpus()
    files = corpus_cda_files()
    assert len(files) == 94
    options = ValidationOptions(xsd_path=CDA_XSD)
    failed: dict[str, set[str]] = {}
    warnings: set[str] = set()
    for path in files:
        report = validate_bytes(path.read_bytes(), name=path.name, kind="auto", options=options)
        assert report.kind == "cda"
        if not report.passed:
            failed[path.name] = report.failed_ids()
        warnings |= report.failed_ids(None) - report.failed_ids()
        # the three layers ran on every document
        names = {s.name for s in report.subreports}
        assert {"XSD", "Header rules (built-in)", "Document type rules (built-in)"} <= names
    assert failed == {}
    assert warnings <= EXPECTED_WARNINGS


@pytest.mark.parametrize(
    "name", ["BIO-CR-BIO_2021.01_Auto-Presentable.xml", "CANCER-PPS_2022.01_Autopresentable.xml"]
)
def test_self_presenting_documents_are_validated_on_their_embedded_cda(name: str) -> None:
    need_corpus()
    path = next(p for p in corpus_cda_files() if p.name == name)
    report = validate_bytes(
        path.read_bytes(), name=name, kind="cda", options=ValidationOptions(xsd_path=CDA_XSD)
    )
    ids = {c.constraint_id for c in report.walk()}
    assert "CDA-ROOT-02" in ids and "FR-HDR-INS-01" in ids
    assert report.passed


def test_our_own_fixtures_pass_with_and_without_the_full_xsd() -> None:
    fixtures = sorted((Path(__file__).resolve().parents[2] / "fixtures" / "cda").glob("*.xml"))
    assert len(fixtures) >= 3
    for path in fixtures:
        builtin = validate_bytes(path.read_bytes(), name=path.name)
        assert builtin.passed, builtin.to_text()
        assert builtin.failed_ids(None) == set()
        if CDA_XSD.is_file():
            full = validate_bytes(
                path.read_bytes(), name=path.name, options=ValidationOptions(xsd_path=CDA_XSD)
            )
            assert full.passed, full.to_text()
