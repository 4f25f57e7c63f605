"""A templateId version without rules: the nearest known version's rules run, and a
WARNING says so (built-in rules and official rule pack alike)."""

from __future__ import annotations

from pathlib import Path

import pytest
from interop_helpers import ANS_CDA, FIXTURES, corpus_cda_files, mutate, need_corpus

from simulators.interop.cda.header import find_clinical_document
from simulators.interop.cda.rulepack import RulePack
from simulators.interop.cda.valuesets import nearest_version
from simulators.interop.engine import ValidationOptions, validate_bytes
from simulators.interop.report import Constraint, Severity, ValidationReport
from simulators.interop.safe_xml import parse_xml

GOOD = (FIXTURES / "cda" / "segur-sim_VAC-NOTE_2023.01.xml").read_bytes()
TEMPLATE = b'<templateId root="1.2.250.1.213.1.1.1.46" extension="2023.01"/>'
FUTURE = b'<templateId root="1.2.250.1.213.1.1.1.46" extension="2031.01"/>'


def _one(report: ValidationReport, constraint_id: str) -> Constraint:
    (found,) = [c for c in report.walk() if c.constraint_id == constraint_id]
    return found


@pytest.mark.parametrize(
    ("wanted", "known", "nearest"),
    [
        ("2024.01", ("2022.01", "2025.01"), "2025.01"),  # SDM-MR examples
        ("2022.06", ("2022.01", "2025.01"), "2022.01"),
        ("2023.07", ("2023.01", "2024.01"), "2024.01"),  # a tie goes to the newer one
        ("201310", ("2022.01", "2023.01"), "2022.01"),  # VSM 1.4 example: YYYYMM
        ("2031.01", ("2023.01",), "2023.01"),
        ("v3", ("2022.01", "2025.01"), "2025.01"),  # unreadable: the newest
        ("2024.01", (), None),
    ],
)
def test_nearest_version(wanted: str, known: tuple[str, ...], nearest: str | None) -> None:
    assert nearest_version(wanted, known) == nearest


def test_builtin_rules_fall_back_to_the_nearest_version_with_a_warning() -> None:
    content = mutate(GOOD, TEMPLATE, FUTURE)
    report = validate_bytes(content, name="future.xml")
    assert report.passed, report.to_text()
    warning = _one(report, "FR-DOC-TPL-04")
    assert not warning.passed and warning.severity is Severity.WARNING
    assert "'2031.01'" in warning.description and "2023.01" in warning.description
    assert warning.location is not None and warning.location.line == 14  # the templateId
    # the document-type rules did run: a wrong document code is still caught
    broken = mutate(content, b'code="87273-9"', b'code="99999-9"')
    report = validate_bytes(broken, name="broken.xml")
    assert "FR-DOC-CODE-01" in report.failed_ids()
    assert "FR-DOC-TPL-04" in report.failed_ids(Severity.WARNING)
    # a known version gives no such warning
    assert "FR-DOC-TPL-04" not in {c.constraint_id for c in validate_bytes(GOOD).walk()}


def test_official_pack_runs_the_nearest_volet_with_a_warning(official: ValidationOptions) -> None:
    ans = next(p for p in corpus_cda_files() if p.name == "VAC-NOTE_2023.01.xml").read_bytes()
    content = mutate(ans, TEMPLATE, FUTURE)
    report = validate_bytes(content, name="future.xml", kind="cda", options=official)
    warning = _one(report, "RULEPACK-VOLET-03")
    assert not warning.passed and warning.severity is Severity.WARNING
    assert "2031.01" in warning.description
    assert "CI-SIS_VAC-NOTE_2023.01.sch" in warning.description
    # not skipped: the 2023.01 volet ran (and itself insists on its own version)
    ran = _one(report, "CI-SIS_VAC-NOTE_2023.01")
    assert (
        ran.passed and ran.severity is Severity.INFO and "assertions evaluated" in ran.description
    )
    header = [s for s in report.subreports if s.name.startswith("Header rules (official")]
    assert header and all(s.result.value == "PASSED" for s in header)
    # ... and catches a wrong document code
    broken = mutate(content, b'code="87273-9"', b'code="99999-9"')
    report = validate_bytes(broken, name="broken.xml", kind="cda", options=official)
    (volet,) = [s for s in report.subreports if s.name == "Document type rules (official)"]
    errors = [c for c in volet.walk() if not c.passed and c.severity is Severity.ERROR]
    assert any("87273-9" in c.description for c in errors), report.to_text()
    assert "RULEPACK-VOLET-03" in report.failed_ids(Severity.WARNING)


@pytest.mark.parametrize(
    ("name", "volet", "fallback"),
    [
        ("SDM-MR_2025.01_nouveau-ne.xml", "CI-SIS_SDM-MR_2025.01.sch", True),  # says 2024.01
        ("VSM_1.4_2022.01.xml", "CI-SIS_VSM_1.4_2022.01.sch", True),  # says 201310
        ("OPH-BRE_2022.02.xml", "CI-SIS_OPH-BRE_2022.02.sch", False),
        ("BIO-CR-BIO_2024.01_TSH_1.xml", "CI-SIS_BIO-CR-BIO_2021.01.sch", False),  # no version
    ],
)
def test_volet_choice_on_the_ans_examples(
    name: str, volet: str, fallback: bool, tmp_path: Path
) -> None:
    need_corpus()
    pack = RulePack.open(ANS_CDA, cache_dir=tmp_path)
    path = next(p for p in corpus_cda_files() if p.name == name)
    doc = find_clinical_document(parse_xml(path.read_bytes()))
    assert doc is not None
    chosen, _why, was_fallback = pack.choose_volet(doc)
    assert chosen is not None and chosen.path.name == volet and was_fallback is fallback
