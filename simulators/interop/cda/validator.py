"""The CDA validator: XSD, header rules, document-type rules.

Rule source "builtin" runs our own rules; "official" runs the ANS schematron tree
given with ``rules_dir`` (StrucMin for the header, the volet schematron picked by
templateId for the document type); "both" runs both side by side.
"""

from __future__ import annotations

from lxml import etree

from simulators.interop.cda.builtin_rules import check_document_type, check_header
from simulators.interop.cda.header import HL7, find_clinical_document
from simulators.interop.cda.xsd import resolve_xsd, validate_xsd
from simulators.interop.engine import ValidationOptions
from simulators.interop.report import Location, ValidationReport, input_error_report
from simulators.interop.safe_xml import UnsafeOrInvalidXml, parse_xml

VALIDATOR_ID = "segur-sim CDA (structuration minimale + volets CI-SIS)"
SERVICE = "Schematron Based CDA Validator (segur-sim)"


class CdaValidator:
    kind = "cda"
    validator_id = VALIDATOR_ID

    def validate(
        self, content: bytes, *, name: str, options: ValidationOptions
    ) -> ValidationReport:
        try:
            tree = parse_xml(content)
        except UnsafeOrInvalidXml as exc:
            return input_error_report(
                content,
                name=name,
                kind="cda",
                validator_id=VALIDATOR_ID,
                message=str(exc),
                constraint_id="INPUT-XML-01",
                location=Location(line=exc.line, column=exc.column),
            )
        report = ValidationReport.for_content(
            content, validator_id=VALIDATOR_ID, service_name=SERVICE, object_name=name, kind="cda"
        )
        self.validate_tree(tree, report, options)
        return report

    def validate_tree(
        self, tree: etree._ElementTree, report: ValidationReport, options: ValidationOptions
    ) -> None:
        doc = find_clinical_document(tree)
        structure = report.add("CDA document")
        if doc is None:
            structure.fail(
                "CDA-ROOT-01",
                f"no ClinicalDocument in namespace {HL7}",
                location=Location(line=tree.getroot().sourceline),
            )
            return
        if doc.getparent() is not None:
            structure.info(
                "CDA-ROOT-02",
                "self-presenting document: the embedded ClinicalDocument is validated",
                location=Location(line=doc.sourceline),
            )
        else:
            structure.check("CDA-ROOT-01", True, "root is a CDA ClinicalDocument")
        source = options.effective_rule_source
        xsd = resolve_xsd(options.rules_dir, options.xsd_path)
        validate_xsd(doc, report.add("XSD"), xsd)
        if source in ("builtin", "both"):
            check_header(doc, report.add("Header rules (built-in)"), rules_dir=options.rules_dir)
            check_document_type(doc, report.add("Document type rules (built-in)"))
        if source in ("official", "both"):
            if options.rules_dir is None:
                report.add("Official rule pack").fail(
                    "RULEPACK-00", "rule source 'official' needs a rules directory"
                )
                return
            from simulators.interop.cda.rulepack import RulePack

            pack = RulePack.open(options.rules_dir, cache_dir=options.effective_cache_dir)
            pack.validate(doc, report, extra_profiles=options.extra_profiles)
