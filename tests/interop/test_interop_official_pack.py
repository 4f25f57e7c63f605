"""The official ANS rule pack (schematrons as published) run by Saxon-HE through our
compiler, on a handful of documents; parity with the built-in rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from interop_helpers import ANS_CDA, corpus_cda_files, mutate, need_corpus

from simulators.interop.cda.schematron import SaxonSchematron, compile_schematron
from simulators.interop.engine import ValidationOptions, validate_bytes
from simulators.interop.report import Severity, ValidationReport


@pytest.fixture(scope="session")
def official(tmp_path_factory: pytest.TempPathFactory) -> ValidationOptions:
    need_corpus()
    cache = tmp_path_factory.mktemp("rules-cache")
    return ValidationOptions(rules_dir=ANS_CDA, cache_dir=cache, rule_source="official")


def _vac_note() -> bytes:
    return next(p for p in corpus_cda_files() if p.name == "VAC-NOTE_2023.01.xml").read_bytes()


def _errors(report: ValidationReport, sub_prefix: str) -> list[str]:
    return [
        c.location.xpath or "" if c.location else ""
        for s in report.subreports
        if s.name.startswith(sub_prefix)
        for c in s.walk()
        if not c.passed and c.severity is Severity.ERROR
    ]


BROKEN = [
    (b'<confidentialityCode code="N"', b'<confidentialityCode code="X"'),
    (b"<county>51215</county>", b""),
    (b'code="87273-9"', b'code="99999-9"'),
]


def test_ans_example_passes_and_pack_defects_are_warnings(official: ValidationOptions) -> None:
    report = validate_bytes(_vac_note(), name="VAC-NOTE.xml", kind="cda", options=official)
    assert report.passed, report.to_text()
    warnings = report.failed_ids(Severity.WARNING)
    assert "RULEPACK-VALUESET-MISSING" in warnings  # voc-1.2.250.1.213.1.1.5.471 is missing
    assert any("CI-SIS_VAC-NOTE_2023.01.sch" in c.description for c in report.walk())


def test_mutated_example_fails_in_strucmin_and_in_the_volet(official: ValidationOptions) -> None:
    content = _vac_note()
    for old, new in BROKEN:
        content = mutate(content, old, new)
    report = validate_bytes(content, name="bad.xml", kind="cda", options=official)
    assert not report.passed
    header = _errors(report, "Header rules (official")
    volet = _errors(report, "Document type rules (official")
    # the figures measured on the same mutation with ANS's pipeline: 3 and 1
    assert len(header) == 3, report.to_text()
    assert len(volet) == 1, report.to_text()
    assert "/ClinicalDocument/code[1]" in header
    assert "/ClinicalDocument/confidentialityCode[1]" in header


@pytest.mark.parametrize(
    ("old", "new", "builtin_id"),
    [
        (b'<confidentialityCode code="N"', b'<confidentialityCode code="X"', "FR-HDR-CONF-01"),
        (b"<county>51215</county>", b"", "FR-HDR-INS-11"),
        (b'code="87273-9"', b'code="99999-9"', "FR-DOC-CODE-01"),
        (b'<family qualifier="BR">PAT-TROIS</family>', b"", "FR-HDR-INS-06"),
    ],
)
def test_same_verdict_with_builtin_and_official_rules(
    official: ValidationOptions, old: bytes, new: bytes, builtin_id: str
) -> None:
    content = mutate(_vac_note(), old, new)
    both = ValidationOptions(
        rules_dir=official.rules_dir, cache_dir=official.cache_dir, rule_source="both"
    )
    report = validate_bytes(content, name="m.xml", kind="cda", options=both)
    assert builtin_id in report.failed_ids()
    assert _errors(report, "Header rules (official") or _errors(report, "Document type rules (off")
    assert validate_bytes(_vac_note(), name="ok.xml", kind="cda", options=both).passed


def test_level1_document_gets_header_rules_but_no_volet(official: ValidationOptions) -> None:
    path = next(p for p in corpus_cda_files() if p.name == "DOC_NON_STRUCTURE_CDA-R2-N1.xml")
    report = validate_bytes(path.read_bytes(), name=path.name, kind="cda", options=official)
    assert report.passed, report.to_text()
    assert "RULEPACK-VOLET-00" in {c.constraint_id for c in report.walk()}


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_tree_defects_become_warnings_not_crashes(tmp_path: Path) -> None:
    """A synthetic pack with the three defects of the ANS tree: an include differing by
    case, a missing include and a missing value set (substituted from the JDV)."""
    sch = "http://purl.oclc.org/dsdl/schematron"
    root = tmp_path / "pack"
    _write(
        root / "schematrons" / "include" / "Rules.sch",
        f"""
<pattern xmlns="{sch}" id="p1"><rule context="cda:ClinicalDocument">
  <assert test="cda:code/@code = doc('voc-9.9.9-DYNAMIC.xml')//concept/@code">code not in set
  </assert></rule></pattern>""",
    )
    _write(
        root / "schematrons" / "main.sch",
        f"""<schema xmlns="{sch}" queryBinding="xslt2">
<ns prefix="cda" uri="urn:hl7-org:v3"/>
<include href="include/rules.SCH"/>
<include href="include/absent.sch"/>
</schema>""",
    )
    _write(
        root / "jeuxDeValeurs" / "JDV_Test.xml",
        """<RetrieveValueSetResponse
 xmlns="urn:ihe:iti:svs:2008"><ValueSet id="9.9.9"><ConceptList>
 <Concept code="OK" codeSystem="1.2"/></ConceptList></ValueSet></RetrieveValueSetResponse>""",
    )
    compiled = compile_schematron(
        root / "schematrons" / "main.sch", rules_root=root, cache_dir=tmp_path / "cache"
    )
    codes = {i.code for i in compiled.issues}
    assert codes == {
        "RULEPACK-INCLUDE-CASE",
        "RULEPACK-INCLUDE-MISSING",
        "RULEPACK-VALUESET-MISSING",
    }
    runner = SaxonSchematron(compiled, tmp_path / "cache")
    good = '<ClinicalDocument xmlns="urn:hl7-org:v3"><code code="OK"/></ClinicalDocument>'
    bad = good.replace('"OK"', '"NO"')
    assert runner.run(good) == []
    failures = runner.run(bad)
    assert len(failures) == 1 and "code not in set" in failures[0].message
    assert failures[0].path.endswith("ClinicalDocument[1]")
    # warm start: the generated stylesheet comes from the cache, keyed by its hash
    again = SaxonSchematron(
        compile_schematron(
            root / "schematrons" / "main.sch", rules_root=root, cache_dir=tmp_path / "cache"
        ),
        tmp_path / "cache",
    )
    assert again.from_cache and again.compiled.key == compiled.key
