"""XDS metadata and XDM archive validators (with the CDA inside as sub-reports)."""

from __future__ import annotations

import base64
import binascii

from lxml import etree

from simulators.interop.cda.header import CdaHeader, find_clinical_document, header_from_element
from simulators.interop.cda.validator import CdaValidator
from simulators.interop.engine import ValidationOptions
from simulators.interop.report import (
    Location,
    Severity,
    SubReport,
    ValidationReport,
    input_error_report,
)
from simulators.interop.safe_xml import UnsafeOrInvalidXml, parse_xml
from simulators.interop.safe_zip import UnsafeZip, read_zip
from simulators.interop.xds.ebrim import (
    DocumentEntry,
    decode_pnr_documents,
    document_entries,
    validate_metadata,
)
from simulators.interop.xds.xdm import METADATA, SUBSET, sha1_hex

XDS_ID = "segur-sim XDS metadata (ASIP XDS FR)"
XDM_ID = "segur-sim ASIP XDM ITI-32 FR Distribute Document Set on Media"


def _cda_subreport(
    content: bytes, name: str, options: ValidationOptions, parent: SubReport
) -> CdaHeader | None:
    """Validate an embedded CDA into a nested sub-report; return its header (None when
    the document is no readable ClinicalDocument)."""
    inner = CdaValidator().validate(content, name=name, options=options)
    holder = SubReport(f"CDA {name}")
    holder.subreports.extend(inner.subreports)
    parent.subreports.append(holder)
    try:
        doc = find_clinical_document(parse_xml(content))
    except UnsafeOrInvalidXml:
        return None
    if doc is None:
        return None
    return header_from_element(doc)


def _check_documents(
    entries: list[DocumentEntry],
    documents: dict[str, bytes],
    sub: SubReport,
    options: ValidationOptions,
    *,
    by: str,
) -> None:
    for entry in entries:
        key = entry.uri if by == "uri" else entry.entry_id
        where = Location(
            line=entry.element.sourceline, xpath=f"ExtrinsicObject[@id='{entry.entry_id}']"
        )
        content = documents.get(key or "") if key else None
        if not sub.check(
            "FR-XDM-DOC-01",
            content is not None,
            f"the document {key!r} referenced by the metadata SHALL be present",
            location=where,
        ):
            continue
        assert content is not None
        sub.check(
            "FR-XDM-HASH-01",
            (entry.hash or "").lower() == sha1_hex(content),
            f"hash of {key} SHALL be its SHA-1 ({sha1_hex(content)}, metadata says {entry.hash})",
            location=where,
        )
        sub.check(
            "FR-XDM-SIZE-01",
            entry.size == str(len(content)),
            f"size of {key} SHALL be {len(content)} (metadata says {entry.size})",
            location=where,
        )
        if entry.mime_type in ("text/xml", "application/xml", None) or (key or "").upper().endswith(
            ".XML"
        ):
            header = _cda_subreport(content, key or "document", options, sub)
            if header is None:
                continue
            cda_uid = header.document_unique_id
            if cda_uid and entry.unique_id:
                # ITI TF-3 4.2.3.2.26: for a CDA, uniqueId = ClinicalDocument/id as
                # root^extension, or the root alone when the id has no extension
                sub.check(
                    "FR-XDM-UID-01",
                    entry.unique_id == cda_uid,
                    f"uniqueId of {key} SHALL be the ClinicalDocument/id of the document "
                    f"(root^extension, or the root alone): expected {cda_uid!r}, metadata "
                    f"says {entry.unique_id!r}",
                    location=where,
                )
            ins, oid = header.ins_value, header.ins_oid
            if ins and oid:
                expected = f"{ins}^^^&{oid}&ISO^NH"
                sub.check(
                    "FR-XDM-PID-01",
                    (entry.patient_id or "") == expected,
                    f"patientId SHALL match the CDA INS ({expected}; metadata says "
                    f"{entry.patient_id})",
                    location=where,
                )


class XdsValidator:
    kind = "xds"
    validator_id = XDS_ID

    def validate(
        self, content: bytes, *, name: str, options: ValidationOptions
    ) -> ValidationReport:
        try:
            tree = parse_xml(content)
        except UnsafeOrInvalidXml as exc:
            return input_error_report(
                content,
                name=name,
                kind="xds",
                validator_id=XDS_ID,
                message=str(exc),
                constraint_id="INPUT-XML-01",
                location=Location(line=exc.line, column=exc.column),
            )
        report = ValidationReport.for_content(
            content,
            validator_id=XDS_ID,
            service_name="Model-based XDS Validator (segur-sim)",
            object_name=name,
            kind="xds",
        )
        root = tree.getroot()
        sub = report.add("XDS metadata")
        validate_metadata(root, sub, rules_dir=options.rules_dir)
        if etree.QName(root).localname == "ProvideAndRegisterDocumentSetRequest":
            docs = report.add("Documents")
            _check_documents(
                document_entries(root), decode_pnr_documents(root), docs, options, by="id"
            )
        return report


class XdmValidator:
    kind = "xdm"
    validator_id = XDM_ID

    def validate(
        self, content: bytes, *, name: str, options: ValidationOptions
    ) -> ValidationReport:
        try:
            entries = read_zip(content)
        except UnsafeZip as exc:
            return input_error_report(
                content,
                name=name,
                kind="xdm",
                validator_id=XDM_ID,
                message=str(exc),
                constraint_id="INPUT-ZIP-01",
            )
        report = ValidationReport.for_content(
            content,
            validator_id=XDM_ID,
            service_name="Model-based XDS Validator (segur-sim)",
            object_name=name,
            kind="xdm",
        )
        layout = report.add("XDM layout")
        upper = {n.upper(): n for n in entries}
        for required in ("INDEX.HTM", "README.TXT", METADATA):
            layout.check(
                "FR-XDM-LAYOUT-01", required in upper, f"{required} SHALL be present in the archive"
            )
        layout.check(
            "FR-XDM-LAYOUT-02",
            name.upper().endswith("IHE_XDM.ZIP") or name == "object",
            f"the archive SHOULD be named IHE_XDM.ZIP in MSSanté (got {name!r})",
            severity=Severity.WARNING,
        )
        meta_name = upper.get(METADATA)
        if meta_name is None:
            return report
        meta_sub = report.add("METADATA.XML")
        try:
            root = parse_xml(entries[meta_name]).getroot()
        except UnsafeOrInvalidXml as exc:
            meta_sub.fail(
                "INPUT-XML-01",
                f"METADATA.XML: {exc}",
                location=Location(line=exc.line, column=exc.column),
            )
            return report
        validate_metadata(root, meta_sub, rules_dir=options.rules_dir)
        subset_docs = {
            n[len(SUBSET) :]: data for n, data in entries.items() if n.upper().startswith(SUBSET)
        }
        docs = report.add("Documents")
        _check_documents(document_entries(root), subset_docs, docs, options, by="uri")
        return report


def decode_b64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
