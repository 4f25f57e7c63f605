"""Reading the CDA header: a stable, small API for the other packages.

``read_cda_header(cda_bytes)`` is used by the XDM generator and the MSS reference
client; keep its names stable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lxml import etree

from simulators.interop.cda.valuesets import INS_OIDS
from simulators.interop.safe_xml import parse_xml

HL7 = "urn:hl7-org:v3"
NS = {"hl7": HL7, "cda": HL7}
_H = f"{{{HL7}}}"


def find_clinical_document(tree: etree._ElementTree) -> etree._Element | None:
    """The ClinicalDocument element: the root, or the one embedded in a
    self-presenting document (an XSL stylesheet carrying the CDA)."""
    root = tree.getroot()
    if root.tag == _H + "ClinicalDocument":
        return root
    if root.tag == "{http://www.w3.org/1999/XSL/Transform}stylesheet":
        return root.find(".//" + _H + "ClinicalDocument")
    return None


@dataclass
class CdaHeader:
    document_code: str | None = None
    document_code_system: str | None = None
    document_display_name: str | None = None
    title: str | None = None
    document_id_root: str | None = None
    document_id_extension: str | None = None
    set_id: str | None = None
    version_number: str | None = None
    effective_time: str | None = None
    confidentiality_code: str | None = None
    language_code: str | None = None
    template_ids: list[tuple[str, str | None]] = field(default_factory=list)
    ins_value: str | None = None
    ins_oid: str | None = None
    ins_qualified: bool = False
    birth_name: str | None = None
    birth_first_name: str | None = None
    birth_given_names: str | None = None
    birth_date: str | None = None
    gender: str | None = None
    birthplace_insee: str | None = None
    author_ids: list[tuple[str | None, str | None]] = field(default_factory=list)
    custodian_id: str | None = None
    level: int = 3  # 1 for nonXMLBody documents
    media_type: str | None = None

    @property
    def document_unique_id(self) -> str | None:
        if not self.document_id_root:
            return None
        if self.document_id_extension:
            return f"{self.document_id_root}^{self.document_id_extension}"
        return self.document_id_root


def _attr(el: etree._Element | None, name: str) -> str | None:
    return None if el is None else el.get(name)


def header_from_element(doc: etree._Element) -> CdaHeader:
    def first(path: str) -> etree._Element | None:
        found = doc.xpath(path, namespaces=NS)
        return found[0] if isinstance(found, list) and found else None

    h = CdaHeader()
    code = first("hl7:code")
    h.document_code = _attr(code, "code")
    h.document_code_system = _attr(code, "codeSystem")
    h.document_display_name = _attr(code, "displayName")
    title = first("hl7:title")
    h.title = (title.xpath("string()") or "").strip() if title is not None else None
    doc_id = first("hl7:id")
    h.document_id_root = _attr(doc_id, "root")
    h.document_id_extension = _attr(doc_id, "extension")
    set_id = first("hl7:setId")
    if set_id is not None:
        h.set_id = "^".join(x for x in (set_id.get("root"), set_id.get("extension")) if x)
    h.version_number = _attr(first("hl7:versionNumber"), "value")
    h.effective_time = _attr(first("hl7:effectiveTime"), "value")
    h.confidentiality_code = _attr(first("hl7:confidentialityCode"), "code")
    h.language_code = _attr(first("hl7:languageCode"), "code")
    h.template_ids = [
        (t.get("root") or "", t.get("extension")) for t in doc.findall(_H + "templateId")
    ]
    for pid in doc.xpath("hl7:recordTarget/hl7:patientRole/hl7:id", namespaces=NS):
        if pid.get("root") in INS_OIDS:
            h.ins_value = pid.get("extension")
            h.ins_oid = pid.get("root")
            break
    patient = first("hl7:recordTarget/hl7:patientRole/hl7:patient")
    if patient is not None:
        fam = patient.xpath("hl7:name/hl7:family[@qualifier='BR']", namespaces=NS)
        given_br = patient.xpath("hl7:name/hl7:given[@qualifier='BR']", namespaces=NS)
        given_all = patient.xpath("hl7:name/hl7:given[not(@qualifier)]", namespaces=NS)
        h.birth_name = (fam[0].text or "").strip() if fam else None
        h.birth_first_name = (given_br[0].text or "").strip() if given_br else None
        h.birth_given_names = (given_all[0].text or "").strip() if given_all else None
        h.birth_date = _attr(patient.find(_H + "birthTime"), "value")
        h.gender = _attr(patient.find(_H + "administrativeGenderCode"), "code")
        county = patient.find(f"{_H}birthplace/{_H}place/{_H}addr/{_H}county")
        h.birthplace_insee = (county.text or "").strip() if county is not None else None
    # An INS is "qualified" only with the identity traits the INS referential requires.
    h.ins_qualified = bool(
        h.ins_value
        and h.ins_oid in ("1.2.250.1.213.1.4.8", "1.2.250.1.213.1.4.9", "1.2.250.1.213.1.4.10")
        and h.birth_name
        and h.birth_first_name
        and h.birth_date
        and h.gender
        and h.birthplace_insee
    )
    h.author_ids = [
        (a.get("root"), a.get("extension"))
        for a in doc.xpath("hl7:author/hl7:assignedAuthor/hl7:id", namespaces=NS)
    ]
    h.custodian_id = _attr(
        first("hl7:custodian/hl7:assignedCustodian/hl7:representedCustodianOrganization/hl7:id"),
        "extension",
    )
    non_xml = first("hl7:component/hl7:nonXMLBody/hl7:text")
    if first("hl7:component/hl7:nonXMLBody") is not None:
        h.level = 1
        h.media_type = _attr(non_xml, "mediaType")
    return h


def read_cda_header(cda_bytes: bytes) -> CdaHeader:
    """Read the header of a CDA document (hostile-input safe).

    Raises ``UnsafeOrInvalidXml`` for unparseable input and ``ValueError`` when the
    XML holds no ClinicalDocument.
    """
    doc = find_clinical_document(parse_xml(cda_bytes))
    if doc is None:
        raise ValueError("no urn:hl7-org:v3 ClinicalDocument in this XML")
    return header_from_element(doc)
