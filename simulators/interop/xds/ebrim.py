"""XDS.b metadata (ebRIM 3.0): French constraints, and building it from CDA headers.

UUIDs of the classification schemes come from IHE ITI TF-3 4.2.5; the French
rules from the CI-SIS "Gestion des documents partagés" volet (INS patientId,
value sets J02/J04/J06/J07/J08/J10, author with RPPS).
"""

from __future__ import annotations

import base64
import hashlib
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from lxml import etree

from simulators.interop.cda.header import CdaHeader
from simulators.interop.cda.valuesets import (
    CLASS_CODE_SYSTEM,
    CLASS_CODES,
    CONFIDENTIALITY_SYSTEM,
    FORMAT_CODE_PREFIXES,
    IDNAT_PS_OID,
    INS_OIDS,
    TYPE_CODES_BUILTIN,
    XDS_CONFIDENTIALITY,
    find_value_set,
    load_svs_codes,
)
from simulators.interop.report import Location, Severity, SubReport
from simulators.interop.safe_xml import readable_path

RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
LCM = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
XDSB = "urn:ihe:iti:xds-b:2007"
_R = f"{{{RIM}}}"
NS = {"rim": RIM, "lcm": LCM, "xdsb": XDSB}

DOC_ENTRY_TYPE = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
SUBMISSION_SET_CLASS = "urn:uuid:a54d6aa5-d40d-43f9-88c1-b93f4b8a7d3e"
SCHEMES = {
    "classCode": "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a",
    "confidentialityCode": "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f",
    "formatCode": "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d",
    "healthcareFacilityTypeCode": "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1",
    "practiceSettingCode": "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead",
    "typeCode": "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983",
    "author": "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d",
    "contentTypeCode": "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500",
    "ssAuthor": "urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d",
}
DE_PATIENT_ID = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
DE_UNIQUE_ID = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
SS_UNIQUE_ID = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8"
SS_SOURCE_ID = "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832"
SS_PATIENT_ID = "urn:uuid:6b5aea1a-c46a-4a8b-bbc6-2e0a3b1dcc40"

# J02 healthcareFacilityTypeCode and J04 practiceSettingCode code systems (CI-SIS):
# TRE_R02-SecteurActivite, TRE_A00-ProducteurDocNonPS, TRE_A01-CadreExercice.
FACILITY_SYSTEMS = {"1.2.250.1.71.4.2.4", "1.2.250.1.213.1.1.4.6"}
PRACTICE_SYSTEMS = {"1.2.250.1.213.1.1.4.9", "1.2.250.1.213.1.1.4.6"}

_PATIENT_ID_RE = re.compile(r"^([^^]+)\^\^\^&([0-9.]+)&ISO(\^NH)?$")

# uniqueId shape (IHE ITI TF-3 4.2.3.2.26 DocumentEntry.uniqueId, 4.2.3.3.12
# SubmissionSet.uniqueId): for a CDA, "a serialization of the CDA Document Id extension
# and root in the form oid^extension, where OID is a 64 digits max, and the Id is a 16
# UTF-8 char max. If the OID is coded without the extension then the '^' character
# shall not be included." The SubmissionSet.uniqueId is an OID of at most 64 characters.
OID_RE = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+")
UID_ROOT_MAX = 64
UID_EXTENSION_MAX = 16


# -- validation ----------------------------------------------------------------


@dataclass
class DocumentEntry:
    element: etree._Element
    entry_id: str
    patient_id: str | None
    unique_id: str | None
    hash: str | None
    size: str | None
    uri: str | None
    mime_type: str | None


def _slot(el: etree._Element, name: str) -> list[str]:
    return [
        (v.text or "").strip()
        for v in el.xpath(f"rim:Slot[@name='{name}']/rim:ValueList/rim:Value", namespaces=NS)
    ]


def _first_slot(el: etree._Element, name: str) -> str | None:
    values = _slot(el, name)
    return values[0] if values else None


def _ext_id(el: etree._Element, scheme: str) -> str | None:
    found = el.xpath(
        f"rim:ExternalIdentifier[@identificationScheme='{scheme}']/@value", namespaces=NS
    )
    return str(found[0]) if found else None


def _loc(el: etree._Element) -> Location:
    return Location(line=el.sourceline, xpath=readable_path(el))


def document_entries(root: etree._Element) -> list[DocumentEntry]:
    out = []
    for eo in root.iter(_R + "ExtrinsicObject"):
        out.append(
            DocumentEntry(
                element=eo,
                entry_id=eo.get("id") or "",
                patient_id=_ext_id(eo, DE_PATIENT_ID),
                unique_id=_ext_id(eo, DE_UNIQUE_ID),
                hash=_first_slot(eo, "hash"),
                size=_first_slot(eo, "size"),
                uri=_first_slot(eo, "URI"),
                mime_type=eo.get("mimeType"),
            )
        )
    return out


def unique_id_problem(value: str, *, extension_allowed: bool = True) -> str | None:
    """Why a uniqueId is not an OID (or OID^extension), or None when its shape is right."""
    parts = value.split("^")
    if len(parts) > 2 or (len(parts) == 2 and not extension_allowed):
        return "more than one '^'" if extension_allowed else "an OID has no '^extension'"
    root = parts[0]
    if not OID_RE.fullmatch(root):
        return f"the root {root!r} is not an OID (digits and dots, no leading zero)"
    if len(root) > UID_ROOT_MAX:
        return f"the root has {len(root)} characters (at most {UID_ROOT_MAX})"
    if len(parts) == 2 and not parts[1]:
        return "'^' with an empty extension (without an extension the '^' is left out)"
    return None


def _check_unique_ids(
    entries: list[DocumentEntry], packages: list[etree._Element], sub: SubReport
) -> None:
    """uniqueId shape, uniqueness within the submission, SubmissionSet vs documents."""
    seen: dict[str, DocumentEntry] = {}
    for entry in entries:
        uid = entry.unique_id
        if not uid:
            continue  # FR-XDS-UID-01 already failed
        where = _loc(entry.element)
        problem = unique_id_problem(uid)
        sub.check(
            "FR-XDS-UID-02",
            problem is None,
            f"DocumentEntry.uniqueId SHALL be an OID (at most {UID_ROOT_MAX} characters) or "
            f"OID^extension, IHE ITI TF-3 4.2.3.2.26 (got {uid!r}"
            + (f": {problem})" if problem else ")"),
            location=where,
        )
        extension = uid.split("^", 1)[1] if "^" in uid else ""
        if problem is None and extension:
            sub.check(
                "FR-XDS-UID-03",
                len(extension) <= UID_EXTENSION_MAX,
                f"the extension of DocumentEntry.uniqueId SHOULD have at most "
                f"{UID_EXTENSION_MAX} characters, IHE ITI TF-3 4.2.3.2.26 (got "
                f"{len(extension)}: {extension!r})",
                severity=Severity.WARNING,
                location=where,
            )
        first = seen.setdefault(uid, entry)
        sub.check(
            "FR-XDS-UID-04",
            first is entry,
            f"DocumentEntry.uniqueId SHALL be unique within the submission (got {uid!r}"
            + (
                f", already the uniqueId of {first.entry_id} at line {first.element.sourceline})"
                if first is not entry
                else ")"
            ),
            location=where,
        )
    for ss in packages:
        ss_uid = _ext_id(ss, SS_UNIQUE_ID)
        if not ss_uid:
            continue  # FR-XDS-SS-03 already failed
        problem = unique_id_problem(ss_uid, extension_allowed=False)
        sub.check(
            "FR-XDS-SS-05",
            problem is None,
            f"SubmissionSet.uniqueId SHALL be an OID of at most {UID_ROOT_MAX} characters, "
            f"IHE ITI TF-3 4.2.3.3.12 (got {ss_uid!r}" + (f": {problem})" if problem else ")"),
            location=_loc(ss),
        )
        clash = seen.get(ss_uid)
        sub.check(
            "FR-XDS-UID-05",
            clash is None,
            "SubmissionSet.uniqueId SHALL differ from every DocumentEntry.uniqueId (got "
            f"{ss_uid!r}" + (f", also the uniqueId of {clash.entry_id})" if clash else ")"),
            location=_loc(ss),
        )


def check_patient_id(value: str | None, sub: SubReport, cid: str, where: etree._Element) -> None:
    match = _PATIENT_ID_RE.match(value or "")
    sub.check(
        cid,
        bool(match) and bool(match and match.group(2) in INS_OIDS),
        "patientId SHALL be the INS in CX form <INS>^^^&<INS OID>&ISO^NH, with OID "
        f"among {', '.join(INS_OIDS)} (got {value!r})",
        location=_loc(where),
    )


def _codes(rules_dir: Path | None, prefix: str) -> frozenset[tuple[str, str]] | None:
    path = find_value_set(rules_dir, prefix)
    return load_svs_codes(path) if path is not None else None


def validate_metadata(root: etree._Element, sub: SubReport, *, rules_dir: Path | None) -> None:
    """French constraints on SubmitObjectsRequest / ProvideAndRegisterDocumentSetRequest."""
    local = etree.QName(root).localname
    sub.check(
        "FR-XDS-ROOT-01",
        local in ("SubmitObjectsRequest", "ProvideAndRegisterDocumentSetRequest"),
        f"root SHALL be lcm:SubmitObjectsRequest or ProvideAndRegisterDocumentSetRequest "
        f"(got {local})",
        location=_loc(root),
    )
    entries = document_entries(root)
    sub.check(
        "FR-XDS-DOC-01",
        bool(entries),
        "at least one DocumentEntry (ExtrinsicObject)",
        location=_loc(root),
    )
    packages = [
        rp
        for rp in root.iter(_R + "RegistryPackage")
        if rp.xpath(
            f"rim:Classification[@classificationNode='{SUBMISSION_SET_CLASS}']", namespaces=NS
        )
        or root.xpath(
            f"//rim:Classification[@classifiedObject='{rp.get('id')}' and "
            f"@classificationNode='{SUBMISSION_SET_CLASS}']",
            namespaces=NS,
        )
    ]
    sub.check("FR-XDS-SS-01", len(packages) == 1, "exactly one SubmissionSet", location=_loc(root))
    for ss in packages:
        check_patient_id(_ext_id(ss, SS_PATIENT_ID), sub, "FR-XDS-SS-02", ss)
        sub.check(
            "FR-XDS-SS-03",
            bool(_ext_id(ss, SS_UNIQUE_ID)),
            "SubmissionSet.uniqueId SHALL be present",
            location=_loc(ss),
        )
        sub.check(
            "FR-XDS-SS-04",
            bool(_slot(ss, "submissionTime")),
            "SubmissionSet submissionTime SHALL be present",
            location=_loc(ss),
        )
    sets = {
        "typeCode": _codes(rules_dir, "JDV_J07"),
        "confidentialityCode": _codes(rules_dir, "JDV_J08"),
        "healthcareFacilityTypeCode": _codes(rules_dir, "JDV_J02"),
        "practiceSettingCode": _codes(rules_dir, "JDV_J04"),
    }
    for entry in entries:
        eo = entry.element
        check_patient_id(entry.patient_id, sub, "FR-XDS-PID-01", eo)
        sub.check(
            "FR-XDS-UID-01",
            bool(entry.unique_id),
            "DocumentEntry.uniqueId SHALL be present",
            location=_loc(eo),
        )
        sub.check(
            "FR-XDS-HASH-01",
            bool(entry.hash and re.fullmatch(r"[0-9a-fA-F]{40}", entry.hash)),
            f"hash SHALL be the SHA-1 of the document in hex (got {entry.hash!r})",
            location=_loc(eo),
        )
        sub.check(
            "FR-XDS-SIZE-01",
            bool(entry.size and entry.size.isdigit()),
            f"size SHALL be the document size in bytes (got {entry.size!r})",
            location=_loc(eo),
        )
        for name in (
            "classCode",
            "typeCode",
            "formatCode",
            "confidentialityCode",
            "healthcareFacilityTypeCode",
            "practiceSettingCode",
        ):
            _check_coded(eo, name, sub, sets.get(name))
        _check_author(eo, sub)
    _check_unique_ids(entries, packages, sub)


def _classifications(eo: etree._Element, name: str) -> list[etree._Element]:
    return [
        c
        for c in eo.xpath(
            f"rim:Classification[@classificationScheme='{SCHEMES[name]}']", namespaces=NS
        )
        if isinstance(c, etree._Element)
    ]


def _check_coded(
    eo: etree._Element, name: str, sub: SubReport, official: frozenset[tuple[str, str]] | None
) -> None:
    found = _classifications(eo, name)
    cid = f"FR-XDS-{name.upper()}"
    if not sub.check(cid + "-01", bool(found), f"{name} SHALL be present", location=_loc(eo)):
        return
    for cl in found:
        code = cl.get("nodeRepresentation") or ""
        system = (_slot(cl, "codingScheme") or [""])[0]
        if official is not None:
            ok = (code, system) in official
            source = "official value set"
        elif name == "classCode":
            ok, source = code in CLASS_CODES and system == CLASS_CODE_SYSTEM, "JDV_J06 (built-in)"
        elif name == "typeCode":
            ok, source = code in TYPE_CODES_BUILTIN, "JDV_J07 (built-in subset)"
        elif name == "formatCode":
            ok, source = code.startswith(FORMAT_CODE_PREFIXES), "JDV_J10 (built-in)"
        elif name == "confidentialityCode":
            ok, source = (code, system) in XDS_CONFIDENTIALITY, "JDV_J08 (built-in)"
        elif name == "healthcareFacilityTypeCode":
            ok, source = system in FACILITY_SYSTEMS, "JDV_J02 code systems (built-in)"
        else:
            ok, source = system in PRACTICE_SYSTEMS, "JDV_J04 code systems (built-in)"
        sub.check(
            cid + "-02", ok, f"{name} {code!r} ({system}) SHALL be in {source}", location=_loc(cl)
        )


def _check_author(eo: etree._Element, sub: SubReport) -> None:
    authors = _classifications(eo, "author")
    if not sub.check(
        "FR-XDS-AUTHOR-01", bool(authors), "a document author SHALL be present", location=_loc(eo)
    ):
        return
    for author in authors:
        person = (_slot(author, "authorPerson") or [""])[0]
        parts = person.split("^")
        assigning = parts[8] if len(parts) > 8 else ""
        ok = bool(parts[0]) and IDNAT_PS_OID in assigning
        sub.check(
            "FR-XDS-AUTHOR-02",
            ok,
            "authorPerson SHALL be an XCN with the national id (RPPS: 8+11 digits) and "
            f"assigning authority &{IDNAT_PS_OID}&ISO (got {person!r})",
            location=_loc(author),
        )
        if ok:
            sub.check(
                "FR-XDS-AUTHOR-03",
                bool(re.fullmatch(r"8\d{11}", parts[0])),
                f"the author identifier SHOULD be an RPPS-based IdNat_PS (got {parts[0]!r})",
                severity=Severity.WARNING,
                location=_loc(author),
            )


# -- generation ----------------------------------------------------------------


@dataclass
class DocumentInput:
    content: bytes
    header: CdaHeader
    uri: str
    mime_type: str = "text/xml"


@dataclass
class MetadataOptions:
    patient_id: str | None = None
    class_code: tuple[str, str, str] = ("10", CLASS_CODE_SYSTEM, "Compte rendu")
    facility: tuple[str, str, str] = ("SA07", "1.2.250.1.71.4.2.4", "Cabinet individuel")
    practice: tuple[str, str, str] = ("AMBULATOIRE", "1.2.250.1.213.1.1.4.9", "Ambulatoire")
    source_id: str = "1.2.250.1.213.1.1.9.99"
    submission_time: datetime = field(default_factory=lambda: datetime.now(UTC))


def patient_id_cx(value: str, oid: str) -> str:
    return f"{value}^^^&{oid}&ISO^NH"


def format_code(header: CdaHeader) -> tuple[str, str]:
    if header.level == 1:
        media = header.media_type or "application/pdf"
        code = (
            "urn:ihe:iti:xds-sd:text:2008"
            if media == "text/plain"
            else ("urn:ihe:iti:xds-sd:pdf:2008")
        )
        return code, "1.3.6.1.4.1.19376.1.2.3"
    return "urn:asip:ci-sis:2010", "1.2.250.1.213.1.1.4.2.282"


def build_metadata(documents: list[DocumentInput], options: MetadataOptions) -> bytes:
    """A SubmitObjectsRequest for the documents (one submission set)."""
    if not documents:
        raise ValueError("no document to describe")
    first = documents[0].header
    patient = options.patient_id or (
        patient_id_cx(first.ins_value, first.ins_oid) if first.ins_value and first.ins_oid else None
    )
    if patient is None:
        raise ValueError("no patient INS in the first CDA and no patient_id given")
    nsmap = {"lcm": LCM, "rim": RIM}
    root = etree.Element(f"{{{LCM}}}SubmitObjectsRequest", nsmap=nsmap)
    rol = etree.SubElement(root, _R + "RegistryObjectList")
    ss_id = "urn:uuid:" + str(uuid.uuid4())

    def slot(parent: etree._Element, name: str, *values: str) -> None:
        s = etree.SubElement(parent, _R + "Slot", name=name)
        vl = etree.SubElement(s, _R + "ValueList")
        for v in values:
            etree.SubElement(vl, _R + "Value").text = v

    def name_el(parent: etree._Element, text: str) -> None:
        n = etree.SubElement(parent, _R + "Name")
        etree.SubElement(n, _R + "LocalizedString", value=text)

    def classify(parent: etree._Element, scheme: str, code: str, system: str, display: str) -> None:
        cl = etree.SubElement(
            parent,
            _R + "Classification",
            id="urn:uuid:" + str(uuid.uuid4()),
            classificationScheme=scheme,
            classifiedObject=parent.get("id") or "",
            nodeRepresentation=code,
        )
        slot(cl, "codingScheme", system)
        name_el(cl, display)

    def ext_id(parent: etree._Element, scheme: str, value: str, label: str) -> None:
        ei = etree.SubElement(
            parent,
            _R + "ExternalIdentifier",
            id="urn:uuid:" + str(uuid.uuid4()),
            registryObject=parent.get("id") or "",
            identificationScheme=scheme,
            value=value,
        )
        name_el(ei, label)

    doc_ids = []
    for doc in documents:
        h = doc.header
        eo_id = "urn:uuid:" + str(uuid.uuid4())
        doc_ids.append(eo_id)
        eo = etree.SubElement(
            rol, _R + "ExtrinsicObject", id=eo_id, mimeType=doc.mime_type, objectType=DOC_ENTRY_TYPE
        )
        slot(eo, "creationTime", (h.effective_time or "")[:14].split("+")[0].split("-")[0])
        slot(eo, "hash", hashlib.sha1(doc.content).hexdigest())
        slot(eo, "size", str(len(doc.content)))
        slot(eo, "languageCode", h.language_code or "fr-FR")
        slot(eo, "sourcePatientId", patient)
        slot(eo, "URI", doc.uri)
        name_el(eo, h.title or "Document")
        for root_, ext in h.author_ids[:1]:
            if ext:
                classify_author = etree.SubElement(
                    eo,
                    _R + "Classification",
                    id="urn:uuid:" + str(uuid.uuid4()),
                    classificationScheme=SCHEMES["author"],
                    classifiedObject=eo_id,
                    nodeRepresentation="",
                )
                slot(classify_author, "authorPerson", f"{ext}^^^^^^^^&{root_}&ISO^D^^^IDNPS")
        classify(eo, SCHEMES["classCode"], *options.class_code)
        conf = h.confidentiality_code or "N"
        classify(eo, SCHEMES["confidentialityCode"], conf, CONFIDENTIALITY_SYSTEM, conf)
        classify(eo, SCHEMES["formatCode"], *format_code(h), "format")
        classify(eo, SCHEMES["healthcareFacilityTypeCode"], *options.facility)
        classify(eo, SCHEMES["practiceSettingCode"], *options.practice)
        classify(
            eo,
            SCHEMES["typeCode"],
            h.document_code or "",
            h.document_code_system or "",
            h.document_display_name or h.document_code or "",
        )
        ext_id(eo, DE_PATIENT_ID, patient, "XDSDocumentEntry.patientId")
        ext_id(
            eo,
            DE_UNIQUE_ID,
            h.document_unique_id or ("2.25." + str(uuid.uuid4().int)),
            "XDSDocumentEntry.uniqueId",
        )
    rp = etree.SubElement(rol, _R + "RegistryPackage", id=ss_id)
    slot(rp, "submissionTime", options.submission_time.strftime("%Y%m%d%H%M%S"))
    name_el(rp, "segur-sim submission set")
    classify(
        rp,
        SCHEMES["contentTypeCode"],
        first.document_code or "",
        first.document_code_system or "",
        first.document_display_name or "",
    )
    ext_id(rp, SS_UNIQUE_ID, "2.25." + str(uuid.uuid4().int), "XDSSubmissionSet.uniqueId")
    ext_id(rp, SS_SOURCE_ID, options.source_id, "XDSSubmissionSet.sourceId")
    ext_id(rp, SS_PATIENT_ID, patient, "XDSSubmissionSet.patientId")
    etree.SubElement(
        rol,
        _R + "Classification",
        id="urn:uuid:" + str(uuid.uuid4()),
        classifiedObject=ss_id,
        classificationNode=SUBMISSION_SET_CLASS,
    )
    for eo_id in doc_ids:
        assoc = etree.SubElement(
            rol,
            _R + "Association",
            id="urn:uuid:" + str(uuid.uuid4()),
            associationType="urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember",
            sourceObject=ss_id,
            targetObject=eo_id,
        )
        slot(assoc, "SubmissionSetStatus", "Original")
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def decode_pnr_documents(root: etree._Element) -> dict[str, bytes]:
    """Documents carried inline by a ProvideAndRegisterDocumentSetRequest, by id."""
    out = {}
    for doc in root.iter(f"{{{XDSB}}}Document"):
        try:
            out[doc.get("id") or ""] = base64.b64decode((doc.text or "").strip(), validate=False)
        except (ValueError, TypeError):
            out[doc.get("id") or ""] = b""
    return out
