"""Our own CDA rules, written from the published CI-SIS specifications.

Header rules (``FR-HDR-*``) follow the "structuration minimale" volet; document
type rules (``FR-DOC-*``) are picked by the document-type templateId. Each rule
records a PASSED or FAILED constraint so reports show what was checked.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from lxml import etree

from simulators.interop.cda.header import NS
from simulators.interop.cda.valuesets import (
    CDA_CONFIDENTIALITY,
    CONFIDENTIALITY_SYSTEM,
    DOCUMENT_TYPES,
    IDNAT_PS_OID,
    INS_OID_ARC,
    INS_OIDS,
    KNOWN_VERSIONS,
    LOINC,
    NON_INS_PATIENT_OIDS,
    NON_XML_MEDIA_TYPES,
    REQUIRED_SECTIONS,
    TYPE_CODES_BUILTIN,
    find_value_set,
    load_svs_codes,
    nearest_version,
)
from simulators.interop.report import Location, Severity, SubReport
from simulators.interop.safe_xml import readable_path

CISIS_ROOT_TEMPLATE = "1.2.250.1.213.1.1.1.1"
HL7_FR_TEMPLATE = "2.16.840.1.113883.2.8.2.1"
DOC_TEMPLATE_ARC = "1.2.250.1.213.1.1.1."

_TS_RE = re.compile(r"^\d{8}(\d{2}(\d{2}(\d{2}(\.\d{1,4})?)?)?)?([+-]\d{4})?$")
_NIR_RE = re.compile(r"^[12378]\d{4}(\d{2}|2A|2B)\d{6}\d{2}$")
# IdNat_PS: "8"+RPPS (11 digits), "0"+ADELI, "3"/"4"/"5" + structure id "/" local id
_IDNAT_PS_RE = re.compile(r"^(8\d{11}|0\d{9,10}|[345][0-9A-Za-z]+(/\S+)?)$")
_RPPS_RE = re.compile(r"^8\d{11}$")


def loc(el: etree._Element | None) -> Location | None:
    if el is None:
        return None
    return Location(line=el.sourceline, xpath=readable_path(el))


def _x(el: etree._Element, path: str) -> list[etree._Element]:
    result = el.xpath(path, namespaces=NS)
    return [r for r in result if isinstance(r, etree._Element)] if isinstance(result, list) else []


def _first(el: etree._Element, path: str) -> etree._Element | None:
    found = _x(el, path)
    return found[0] if found else None


def nir_key_ok(nir: str) -> bool:
    digits = nir[:13].replace("2A", "19").replace("2B", "18")
    try:
        return 97 - int(digits) % 97 == int(nir[13:])
    except ValueError:
        return False


def check_header(doc: etree._Element, sub: SubReport, *, rules_dir: Path | None = None) -> None:
    """Layer (b): the French header rules."""
    c = sub.check
    c(
        "FR-HDR-REALM-01",
        bool(_x(doc, "hl7:realmCode[@code='FR']")),
        "realmCode/@code SHALL be 'FR'",
        location=loc(_first(doc, "hl7:realmCode")) or loc(doc),
    )
    c(
        "FR-HDR-TYPEID-01",
        bool(_x(doc, "hl7:typeId[@root='2.16.840.1.113883.1.3' and @extension='POCD_HD000040']")),
        "typeId SHALL be root 2.16.840.1.113883.1.3, extension POCD_HD000040",
        location=loc(doc),
    )
    c(
        "FR-HDR-TPL-01",
        bool(_x(doc, f"hl7:templateId[@root='{HL7_FR_TEMPLATE}']")),
        f"templateId {HL7_FR_TEMPLATE} (HL7 France) SHALL be present",
        location=loc(doc),
    )
    c(
        "FR-HDR-TPL-02",
        bool(_x(doc, f"hl7:templateId[@root='{CISIS_ROOT_TEMPLATE}']")),
        f"templateId {CISIS_ROOT_TEMPLATE} (CI-SIS) SHALL be present",
        location=loc(doc),
    )
    doc_id = _first(doc, "hl7:id")
    c(
        "FR-HDR-ID-01",
        doc_id is not None and bool(doc_id.get("root")),
        "the document id SHALL have a @root",
        location=loc(doc_id) or loc(doc),
    )
    _check_code(doc, sub, rules_dir)
    title = _first(doc, "hl7:title")
    c(
        "FR-HDR-TITLE-01",
        title is not None and bool((title.xpath("string()") or "").strip()),
        "title SHALL be present and not empty",
        location=loc(title) or loc(doc),
    )
    eff = _first(doc, "hl7:effectiveTime")
    value = eff.get("value", "") if eff is not None else ""
    c(
        "FR-HDR-TIME-01",
        bool(_TS_RE.match(value)) and len(value) >= 12,
        f"effectiveTime/@value SHALL be a timestamp precise to the minute (got {value!r})",
        location=loc(eff) or loc(doc),
    )
    if _TS_RE.match(value):
        c(
            "FR-HDR-TIME-02",
            "+" in value or "-" in value,
            "effectiveTime SHOULD carry a UTC offset",
            severity=Severity.WARNING,
            location=loc(eff),
        )
    conf = _first(doc, "hl7:confidentialityCode")
    c(
        "FR-HDR-CONF-01",
        conf is not None
        and conf.get("code") in CDA_CONFIDENTIALITY
        and conf.get("codeSystem") == CONFIDENTIALITY_SYSTEM,
        "confidentialityCode SHALL be N, R or V from HL7 Confidentiality "
        f"({CONFIDENTIALITY_SYSTEM}) (got {conf.get('code') if conf is not None else None!r})",
        location=loc(conf) or loc(doc),
    )
    lang = _first(doc, "hl7:languageCode")
    c(
        "FR-HDR-LANG-01",
        lang is not None and lang.get("code") == "fr-FR",
        "languageCode SHALL be fr-FR",
        location=loc(lang) or loc(doc),
    )
    set_id = _first(doc, "hl7:setId")
    c(
        "FR-HDR-SETID-01",
        set_id is not None and bool(set_id.get("root")),
        "setId SHALL be present with a @root",
        location=loc(set_id) or loc(doc),
    )
    ver = _first(doc, "hl7:versionNumber")
    ver_value = ver.get("value", "") if ver is not None else ""
    c(
        "FR-HDR-VERS-01",
        ver_value.isdigit() and int(ver_value) >= 1,
        "versionNumber/@value SHALL be a positive integer",
        location=loc(ver) or loc(doc),
    )
    _check_patient(doc, sub)
    _check_author(doc, sub)
    cust = _first(doc, "hl7:custodian/hl7:assignedCustodian/hl7:representedCustodianOrganization")
    c(
        "FR-HDR-CUST-01",
        cust is not None and bool(_x(cust, "hl7:id[@root]")) and bool(_x(cust, "hl7:name")),
        "custodian/assignedCustodian/representedCustodianOrganization SHALL have an id and a name",
        location=loc(cust) or loc(doc),
    )
    legal = _first(doc, "hl7:legalAuthenticator")
    c(
        "FR-HDR-LEGAL-01",
        legal is not None
        and bool(_x(legal, "hl7:time"))
        and bool(_x(legal, "hl7:assignedEntity/hl7:id")),
        "legalAuthenticator SHALL be present with time and assignedEntity/id",
        location=loc(legal) or loc(doc),
    )
    _check_body(doc, sub)


def _check_code(doc: etree._Element, sub: SubReport, rules_dir: Path | None) -> None:
    code = _first(doc, "hl7:code")
    value = code.get("code") if code is not None else None
    sub.check(
        "FR-HDR-CODE-01",
        bool(value) and bool(code is not None and code.get("codeSystem")),
        "the document code SHALL have @code and @codeSystem",
        location=loc(code) or loc(doc),
    )
    if not value or code is None:
        return
    official = find_value_set(rules_dir, "JDV_J07")
    if official is not None:
        pairs = load_svs_codes(official)
        sub.check(
            "FR-HDR-CODE-02",
            (value, code.get("codeSystem") or "") in pairs,
            f"the document code {value!r} SHALL be in JDV_J07 (typeCode, {official.name})",
            location=loc(code),
        )
    else:
        # our list is a subset of J07: an unknown code is only a warning
        sub.check(
            "FR-HDR-CODE-02",
            value in TYPE_CODES_BUILTIN,
            f"the document code {value!r} SHOULD be in JDV_J07 (built-in subset; give "
            "--rules-dir for the full value set)",
            severity=Severity.WARNING,
            location=loc(code),
        )


def _check_patient(doc: etree._Element, sub: SubReport) -> None:
    c = sub.check
    roles = _x(doc, "hl7:recordTarget/hl7:patientRole")
    c(
        "FR-HDR-PAT-01",
        len(roles) == 1,
        "exactly one recordTarget/patientRole SHALL be present",
        location=loc(roles[0]) if roles else loc(doc),
    )
    if not roles:
        return
    role = roles[0]
    ids = _x(role, "hl7:id")
    ins_ids = [i for i in ids if i.get("root") in INS_OIDS]
    unknown_ins_arc = [
        i
        for i in ids
        if (i.get("root") or "").startswith(INS_OID_ARC)
        and i.get("root") not in INS_OIDS
        and i.get("root") not in NON_INS_PATIENT_OIDS
    ]
    c(
        "FR-HDR-INS-01",
        bool(ins_ids),
        "patientRole SHALL carry the patient's INS (id with @root " + ", ".join(INS_OIDS) + ")",
        location=loc(role),
    )
    for bad in unknown_ins_arc:
        c(
            "FR-HDR-INS-02",
            False,
            f"unknown INS OID {bad.get('root')!r}: an INS SHALL use one of " + ", ".join(INS_OIDS),
            location=loc(bad),
        )
    if not ins_ids:
        return
    ins = ins_ids[0]
    value = ins.get("extension") or ""
    if ins.get("root") in ("1.2.250.1.213.1.4.8", "1.2.250.1.213.1.4.10", "1.2.250.1.213.1.4.11"):
        shape = bool(_NIR_RE.match(value))
        c(
            "FR-HDR-INS-03",
            shape,
            f"the INS-NIR SHALL be 15 characters (13 + key) (got {value!r})",
            location=loc(ins),
        )
        if shape:
            c(
                "FR-HDR-INS-04",
                nir_key_ok(value),
                "the INS-NIR control key SHOULD match (97 - NIR mod 97)",
                severity=Severity.WARNING,
                location=loc(ins),
            )
    else:
        c(
            "FR-HDR-INS-03",
            bool(re.fullmatch(r"[0-9A-Z]{13,15}", value)),
            f"the INS-NIA SHALL be 13-15 characters (got {value!r})",
            location=loc(ins),
        )
    patient = _first(role, "hl7:patient")
    c(
        "FR-HDR-INS-05",
        patient is not None,
        "patientRole/patient SHALL be present",
        location=loc(role),
    )
    if patient is None:
        return
    traits: list[tuple[str, str, str]] = [
        (
            "FR-HDR-INS-06",
            "hl7:name/hl7:family[@qualifier='BR' and normalize-space()]",
            "name/family[@qualifier='BR'] (birth name)",
        ),
        (
            "FR-HDR-INS-07",
            "hl7:name/hl7:given[@qualifier='BR' and normalize-space()]",
            "name/given[@qualifier='BR'] (first birth given name)",
        ),
        (
            "FR-HDR-INS-08",
            "hl7:name/hl7:given[not(@qualifier) and normalize-space()]",
            "name/given without qualifier (all birth given names)",
        ),
        ("FR-HDR-INS-09", "hl7:birthTime[@value]", "birthTime"),
        ("FR-HDR-INS-10", "hl7:administrativeGenderCode[@code]", "administrativeGenderCode"),
        (
            "FR-HDR-INS-11",
            "hl7:birthplace/hl7:place/hl7:addr/hl7:county[normalize-space()]",
            "birthplace/place/addr/county (INSEE code of the birthplace)",
        ),
    ]
    for cid, path, what in traits:
        c(
            cid,
            bool(_x(patient, path)),
            f"with an INS, the identity trait {what} SHALL be present",
            location=loc(patient),
        )


def _check_author(doc: etree._Element, sub: SubReport) -> None:
    c = sub.check
    authors = _x(doc, "hl7:author")
    c("FR-HDR-AUT-01", bool(authors), "at least one author SHALL be present", location=loc(doc))
    for author in authors:
        c(
            "FR-HDR-AUT-02",
            bool(_x(author, "hl7:time[@value]")),
            "author/time SHALL be present",
            location=loc(author),
        )
        assigned = _first(author, "hl7:assignedAuthor")
        ids = _x(assigned, "hl7:id") if assigned is not None else []
        national = [i for i in ids if i.get("root") == IDNAT_PS_OID]
        c(
            "FR-HDR-AUT-03",
            bool(national),
            f"assignedAuthor/id SHALL be a national identifier (root {IDNAT_PS_OID})",
            location=loc(ids[0] if ids else assigned if assigned is not None else author),
        )
        for ident in national:
            ext = ident.get("extension") or ""
            c(
                "FR-HDR-AUT-04",
                bool(_IDNAT_PS_RE.match(ext)),
                "the author identifier SHALL be an IdNat_PS: '8'+RPPS (e.g. 801234567897), "
                f"'0'+ADELI or a structure-based id (got {ext!r})",
                location=loc(ident),
            )
        c(
            "FR-HDR-AUT-05",
            assigned is not None
            and bool(_x(assigned, "hl7:assignedPerson | hl7:assignedAuthoringDevice")),
            "assignedAuthor SHALL have assignedPerson or assignedAuthoringDevice",
            location=loc(assigned) or loc(author),
        )


def _check_body(doc: etree._Element, sub: SubReport) -> None:
    structured = _first(doc, "hl7:component/hl7:structuredBody")
    non_xml = _first(doc, "hl7:component/hl7:nonXMLBody")
    sub.check(
        "FR-HDR-BODY-01",
        (structured is None) != (non_xml is None),
        "component SHALL hold exactly one structuredBody or nonXMLBody",
        location=loc(doc),
    )
    if non_xml is not None:
        text = _first(non_xml, "hl7:text")
        media = text.get("mediaType") if text is not None else None
        sub.check(
            "FR-HDR-BODY-02",
            text is not None
            and media in NON_XML_MEDIA_TYPES
            and text.get("representation") == "B64",
            "nonXMLBody/text SHALL be base64 (representation='B64') with a mediaType among "
            + ", ".join(sorted(NON_XML_MEDIA_TYPES))
            + f" (got {media!r})",
            location=loc(text) or loc(non_xml),
        )


def document_type_template(doc: etree._Element) -> tuple[etree._Element | None, str | None]:
    """The most specific CI-SIS document-type templateId (longest known root)."""
    best: tuple[etree._Element | None, str | None] = (None, None)
    for tpl in _x(doc, "hl7:templateId"):
        root = tpl.get("root") or ""
        if (
            root.startswith(DOC_TEMPLATE_ARC)
            and root != CISIS_ROOT_TEMPLATE
            and root in DOCUMENT_TYPES
        ) and (best[1] is None or len(root) > len(best[1])):
            best = (tpl, root)
    if best[1] is None:
        for tpl in _x(doc, "hl7:templateId"):
            root = tpl.get("root") or ""
            if root.startswith(DOC_TEMPLATE_ARC) and root != CISIS_ROOT_TEMPLATE:
                return tpl, root
    return best


def check_document_type(doc: etree._Element, sub: SubReport) -> str | None:
    """Layer (c): rules of the document type named by the templateId. Returns its name."""
    is_level1 = bool(_x(doc, "hl7:component/hl7:nonXMLBody"))
    tpl, root = document_type_template(doc)
    if is_level1:
        sub.info(
            "FR-DOC-LEVEL-01",
            "level-1 document (nonXMLBody): no document-type rules apply",
            location=loc(doc),
        )
        return None
    sub.check(
        "FR-DOC-TPL-01",
        root is not None,
        "a structured (level 3) document SHALL declare its document-type templateId "
        f"({DOC_TEMPLATE_ARC}*)",
        location=loc(doc),
    )
    if root is None or tpl is None:
        return None
    doc_type = DOCUMENT_TYPES.get(root)
    sub.check(
        "FR-DOC-TPL-02",
        doc_type is not None,
        f"document-type templateId {root} is not one the built-in rules know",
        severity=Severity.WARNING,
        location=loc(tpl),
    )
    if doc_type is None:
        return None
    version = tpl.get("extension")
    sub.check(
        "FR-DOC-TPL-03",
        bool(version),
        f"the {doc_type.name} templateId SHOULD carry the volet version in @extension",
        severity=Severity.WARNING,
        location=loc(tpl),
    )
    known = KNOWN_VERSIONS.get(root, ())
    if version and known and version not in known:
        # rules of another version rather than none: say which, as a warning
        sub.check(
            "FR-DOC-TPL-04",
            False,
            f"the built-in rules know no {doc_type.name} version {version!r} (known: "
            f"{', '.join(known)}); the rules of the nearest known version, "
            f"{nearest_version(version, known)}, are applied",
            severity=Severity.WARNING,
            location=loc(tpl),
        )
    code = _first(doc, "hl7:code")
    value = code.get("code") if code is not None else None
    system_ok = code is not None and (
        code.get("codeSystem") == LOINC or not (value or "")[:1].isdigit()
    )
    sub.check(
        "FR-DOC-CODE-01",
        value in doc_type.codes and system_ok,
        f"a {doc_type.name} document SHALL have code "
        + " or ".join(sorted(doc_type.codes))
        + f" (got {value!r})",
        severity=Severity.ERROR if doc_type.strict else Severity.WARNING,
        location=loc(code) or loc(doc),
    )
    for section_root, label in REQUIRED_SECTIONS.get(root, ()):
        found = _x(doc, f".//hl7:section/hl7:templateId[@root='{section_root}']")
        sub.check(
            "FR-DOC-SEC-01",
            bool(found),
            f"a {doc_type.name} document SHALL contain a '{label}' section "
            f"(templateId {section_root})",
            location=loc(_first(doc, "hl7:component")),
        )
    extra = _DOC_SPECIFIC.get(root)
    if extra:
        extra(doc, sub)
    return doc_type.name


def _vac_note(doc: etree._Element, sub: SubReport) -> None:
    sub.check(
        "FR-DOC-VACNOTE-01",
        bool(_x(doc, "hl7:templateId[@root='1.3.6.1.4.1.19376.1.5.3.1.1.18.1.2']")),
        "a VAC-NOTE document SHALL declare the IHE Immunization Content templateId "
        "1.3.6.1.4.1.19376.1.5.3.1.1.18.1.2",
        location=loc(doc),
    )
    for adm in _x(doc, ".//hl7:section/hl7:entry/hl7:substanceAdministration"):
        sub.check(
            "FR-DOC-VACNOTE-02",
            bool(_x(adm, "hl7:consumable/hl7:manufacturedProduct/hl7:manufacturedMaterial")),
            "each vaccination SHALL identify the vaccine (consumable/manufacturedProduct)",
            location=loc(adm),
        )


def _birth_time(doc: etree._Element, sub: SubReport) -> None:
    sub.check(
        "FR-DOC-PAT-01",
        bool(_x(doc, "hl7:recordTarget/hl7:patientRole/hl7:patient/hl7:birthTime")),
        "the patient's birth date SHALL be present in this document type",
        location=loc(doc),
    )


_DOC_SPECIFIC: dict[str, Callable[[etree._Element, SubReport], None]] = {
    "1.2.250.1.213.1.1.1.46": _vac_note,
    "1.2.250.1.213.1.1.1.37": _birth_time,
}
