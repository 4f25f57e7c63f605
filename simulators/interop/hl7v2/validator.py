"""HL7 v2 profile rules for Ségur, written from the CI-SIS volets:

- "Transmission de documents CDA en HL7 v2" (ORU^R01 v2.5, MDM^T02/T04/T10 v2.6,
  MSH-21 ``2.x^CISIS_CDA_HL7_V2``) and its LPS/MSSanté variant (``1.x^CISIS_CDA_HL7_LPS``),
  both pre-adopting the v2.9 PRT segment (SB sender, RCT recipients, REPLY);
- ACK (MSA);
- IHE PAM France 2.11 (MSH-12 ``2.5^FRA^2.11``, INS in PID-3, PID-32).

hl7apy parses the message (tolerant, no grouping, since the PRT breaks it) and our
own segment reader keeps PRT and positions. The CDA in OBX-5 is validated as a
sub-report.

Document actions (initial transmission, replacement, deletion) follow the volets'
"Evènements déclenchants" and segment tables (ansforge/IG-hl7v2-volet-transmission-
document-cda-r2 and ansforge/IG-hl7v2-volet-trans-lps-doc-cda-courriel-mss, volume 2):
MDM^T02 / OBX-11 F / ORC-1 NW, MDM^T10 / OBX-11 C / ORC-1 RO, MDM^T04 / OBX-11 D /
ORC-1 CA (ORU^R01 carries the action in OBX-11 only); TXA-12 and TXA-13 identify the
document and the replaced one (TXA-13 required for a replacement), TXA-17 = AU. The
structure (EVN, PID, PV1, TXA required; MSH-9.3 = MDM_T02 for T02/T04/T10) is HL7 v2.6
chapter 9, as hl7apy's v2.6 definitions also give it.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from lxml import etree

from simulators.interop.cda.header import NS as CDA_NS
from simulators.interop.cda.header import find_clinical_document
from simulators.interop.cda.valuesets import IDNAT_PS_OID, INS_OIDS
from simulators.interop.engine import ValidationOptions
from simulators.interop.hl7v2.er7 import Er7Error, Message, Segment, parse_er7
from simulators.interop.report import (
    Location,
    Severity,
    SubReport,
    ValidationReport,
    input_error_report,
)
from simulators.interop.safe_xml import UnsafeOrInvalidXml, parse_xml

VALIDATOR_ID = "segur-sim Gazelle HL7v2.x validator (CI-SIS profiles)"

# Profile OIDs as Gazelle names them (interop-notes): message -> OID
PROFILE_OIDS = {
    ("ORU^R01", "CISIS_CDA_HL7_V2"): "1.3.6.1.4.1.12559.11.36.8.3.19",
    ("MDM^T02", "CISIS_CDA_HL7_V2"): "1.3.6.1.4.1.12559.11.36.8.3.24",
    ("MDM^T04", "CISIS_CDA_HL7_V2"): "1.3.6.1.4.1.12559.11.36.8.3.25",
    ("MDM^T10", "CISIS_CDA_HL7_V2"): "1.3.6.1.4.1.12559.11.36.8.3.21",
    ("MDM^T02", "CISIS_CDA_HL7_LPS"): "1.3.6.1.4.1.12559.11.36.8.3.20",
    ("MDM^T04", "CISIS_CDA_HL7_LPS"): "1.3.6.1.4.1.12559.11.36.8.3.22",
    ("MDM^T10", "CISIS_CDA_HL7_LPS"): "1.3.6.1.4.1.12559.11.36.8.3.23",
    ("ACK", "2.6"): "1.3.6.1.4.1.12559.11.36.8.3.27",
    ("ACK", "2.5"): "1.3.6.1.4.1.12559.11.36.8.3.26",
    ("ADT", "PAM-FR"): "2.16.840.1.113883.2.8.3.1.1",
}
CDA_PROFILES = {
    "2.1^CISIS_CDA_HL7_V2": "CISIS_CDA_HL7_V2",
    "2.0^CISIS_CDA_HL7_V2": "CISIS_CDA_HL7_V2",
    "1.1^CISIS_CDA_HL7_LPS": "CISIS_CDA_HL7_LPS",
    "1.0^CISIS_CDA_HL7_LPS": "CISIS_CDA_HL7_LPS",
}
LEGACY_CDA_PROFILES = {"1.2^CISIS_CDA_HL7_V1"}
PAM_FR_PROFILE = "2.11^IHE_FRANCE-2.11-PAM"
PRT_ROLES = {"SB", "RCT", "REPLY"}
META_DMP_MSS = {
    "DESTDMP",
    "DESTMSSANTEPS",
    "DESTMSSANTEPAT",
    "ACK_RECEPTION",
    "ACK_LECTURE_MSS",
    "MASQUE_PS",
    "INVISIBLE_PATIENT",
    "INVISIBLE_REP_LEGAUX",
    "CONNEXION_SECRETE",
    "MODIF_CONF_CODE",
    "CORPSMAIL_PS",
    "CORPSMAIL_PATIENT",
    "ACK_LECTURE_DMP",
}
# Volet versions whose specification the document-action and TXA rules below come from
# (2.1 / LPS 1.1). The older 2.0 / 1.0 examples carry no ORC in MDM, ORC-1 = SC in ORU,
# TXA-17 = LA and another TXA-12 layout: those rules are not applied to them.
CURRENT_CDA_PROFILES = {"2.1^CISIS_CDA_HL7_V2", "1.1^CISIS_CDA_HL7_LPS"}
# HL7 v2.6 chapter 9: T02, T04 and T10 share the MDM_T02 structure
MESSAGE_STRUCTURES = {
    "ORU^R01": "ORU_R01",
    "MDM^T02": "MDM_T02",
    "MDM^T04": "MDM_T02",
    "MDM^T10": "MDM_T02",
}
# Volets, "Evènements déclenchants": the action each MDM trigger carries, as OBX-11
MDM_OBX11 = {"MDM^T02": "F", "MDM^T10": "C", "MDM^T04": "D"}
# OBX-11 (HL7 table 0085) -> the action, and the ORC-1 order control that goes with it
DOCUMENT_ACTIONS = {"F": "initial transmission", "C": "replacement", "D": "deletion"}
ORDER_CONTROL = {"F": "NW", "C": "RO", "D": "CA"}
# HL7 table 0271 (document completion status)
COMPLETION_STATUS = ("AU", "DI", "DO", "IN", "IP", "LA", "PA")


@dataclass
class CdaObx:
    """An OBX carrying a document (ED, subtype XML), with the ids read from its CDA."""

    segment: Segment
    status: str  # OBX-11
    doc_id: tuple[str, str | None] | None = None  # ClinicalDocument/id (root, extension)
    parent_id: tuple[str, str | None] | None = None  # relatedDocument RPLC parent id
    decoded: bool = False


def _loc(seg: Segment | None, n: int | None = None) -> Location | None:
    if seg is None:
        return None
    return Location(line=seg.line, segment=seg.label(n))


class Hl7v2Validator:
    kind = "hl7v2"
    validator_id = VALIDATOR_ID

    def validate(
        self, content: bytes, *, name: str, options: ValidationOptions
    ) -> ValidationReport:
        try:
            msg = parse_er7(content)
        except Er7Error as exc:
            return input_error_report(
                content,
                name=name,
                kind="hl7v2",
                validator_id=VALIDATOR_ID,
                message=str(exc),
                constraint_id="INPUT-HL7-01",
            )
        report = ValidationReport.for_content(
            content,
            validator_id=VALIDATOR_ID,
            service_name="Gazelle HL7v2.x validator (segur-sim)",
            object_name=name,
            kind="hl7v2",
        )
        msh = msg.first("MSH")
        assert msh is not None  # parse_er7 guarantees the first segment
        structure = report.add("Message structure")
        msg_type = msg.components(msh.field(9))
        trigger = "^".join(msg_type[:2]) if len(msg_type) > 1 else msg_type[0]
        structure.check(
            "HL7-MSH-01",
            msh.field(2) == "^~\\&",
            f"MSH-2 SHALL be ^~\\& (got {msh.field(2)!r})",
            location=_loc(msh, 2),
        )
        structure.check(
            "HL7-MSH-10",
            bool(msh.field(10)),
            "MSH-10 (control id) SHALL be valued",
            location=_loc(msh, 10),
        )
        _hl7apy_parse(msg, structure, msh)
        kind = msg_type[0]
        if kind in ("ORU", "MDM"):
            _cda_transmission(msg, msh, trigger, report, options)
        elif kind == "ACK":
            _ack(msg, msh, report.add("ACK"))
        elif kind == "ADT":
            _pam_fr(msg, msh, report.add("IHE PAM France 2.11"))
        else:
            structure.fail(
                "HL7-MSH-09",
                f"message type {msh.field(9)!r} is not one of the "
                "Ségur profiles (ORU^R01, MDM^T02/T04/T10, ACK, ADT)",
                location=_loc(msh, 9),
            )
        return report


def _hl7apy_parse(msg: Message, sub: SubReport, msh: Segment) -> None:
    """Structural parse with hl7apy (tolerant, no groups); PRT is not in its v2.5/v2.6."""
    try:
        from hl7apy.consts import VALIDATION_LEVEL
        from hl7apy.parser import parse_message

        text = "\r".join(
            "|".join(s.fields[:1] + s.fields[2:]) if s.name == "MSH" else "|".join(s.fields)
            for s in msg.segments
            if s.name != "PRT" and not s.name.startswith("Z")
        )
        parsed: Any = parse_message(
            text, find_groups=False, validation_level=VALIDATION_LEVEL.TOLERANT
        )
        names = [child.name for child in parsed.children]
        sub.check(
            "HL7-PARSE-01",
            bool(names) and names[0] == "MSH",
            "hl7apy parses the message (PRT and Z segments are checked by our own reader)",
            location=_loc(msh),
        )
    except Exception as exc:  # hl7apy raises many types on malformed input
        sub.fail(
            "HL7-PARSE-01",
            f"hl7apy cannot parse the message: {type(exc).__name__}: {exc}",
            location=_loc(msh),
        )


def _check_ins(msg: Message, pid: Segment | None, sub: SubReport, *, required: bool) -> bool:
    if pid is None:
        sub.fail("HL7-PID-01", "PID SHALL be present")
        return False
    found = False
    for rep in msg.repetitions(pid.field(3)):
        comps = msg.components(rep)
        if len(comps) > 4 and comps[4] == "INS":
            found = True
            authority = comps[3].split(msg.subcomponent_sep) if len(comps) > 3 else []
            oid = authority[1] if len(authority) > 1 else ""
            sub.check(
                "HL7-PID-03",
                oid in INS_OIDS,
                f"the INS in PID-3 SHALL have an INS OID as assigning authority "
                f"({', '.join(INS_OIDS)}) (got {oid!r})",
                location=_loc(pid, 3),
            )
            sub.check(
                "HL7-PID-04",
                len(comps[0]) in (13, 15),
                f"the INS value SHALL be 15 characters (got {comps[0]!r})",
                location=_loc(pid, 3),
            )
    severity = Severity.ERROR if required else Severity.WARNING
    sub.check(
        "HL7-PID-02",
        found,
        "PID-3 SHALL carry the INS (identifier type code INS)",
        severity=severity,
        location=_loc(pid, 3),
    )
    return found


def _cda_transmission(
    msg: Message, msh: Segment, trigger: str, report: ValidationReport, options: ValidationOptions
) -> None:
    sub = report.add("CI-SIS transmission de documents CDA")
    kind = trigger.split("^")[0]
    allowed = {"ORU^R01"} if kind == "ORU" else {"MDM^T02", "MDM^T04", "MDM^T10"}
    sub.check(
        "HL7-MSH-09",
        trigger in allowed,
        f"MSH-9 SHALL be one of {', '.join(sorted(allowed))} (got {msh.field(9)!r})",
        location=_loc(msh, 9),
    )
    if trigger in allowed:
        comps = msg.components(msh.field(9))
        structure = comps[2] if len(comps) > 2 else ""
        expected_structure = MESSAGE_STRUCTURES[trigger]
        sub.check(
            "HL7-MSH-09-STRUCT",
            structure == expected_structure,
            f"MSH-9.3 (message structure) of {trigger} SHALL be {expected_structure} "
            f"(got {structure!r})",
            location=_loc(msh, 9),
        )
    version = msh.field(12)
    expected_version = "2.5" if kind == "ORU" else "2.6"
    sub.check(
        "HL7-MSH-12",
        version == expected_version,
        f"MSH-12 SHALL be {expected_version} for {kind} (got {version!r})",
        location=_loc(msh, 12),
    )
    profile_field = msh.field(21)
    profile = CDA_PROFILES.get(profile_field)
    legacy = profile_field in LEGACY_CDA_PROFILES
    sub.check(
        "HL7-MSH-21",
        profile is not None or legacy,
        "MSH-21 SHALL name the CI-SIS profile (2.1^CISIS_CDA_HL7_V2 or "
        f"1.1^CISIS_CDA_HL7_LPS) (got {profile_field!r})",
        location=_loc(msh, 21),
    )
    if legacy:
        sub.check(
            "HL7-MSH-21-LEGACY",
            False,
            f"{profile_field} is a superseded profile version",
            severity=Severity.WARNING,
            location=_loc(msh, 21),
        )
    if profile is not None:
        oid = PROFILE_OIDS.get((trigger, profile))
        if oid:
            sub.info("HL7-PROFILE", f"profile {oid} ({trigger}, {profile})")
    _check_ins(msg, msg.first("PID"), sub, required=True)
    current = profile_field in CURRENT_CDA_PROFILES
    if kind == "MDM" and trigger in allowed:
        _mdm_segments(msg, msh, trigger, sub, current=current)
    if profile is not None:
        _prt(msg, sub, msh)
    documents = _obx(msg, sub, report, options, delete=trigger == "MDM^T04")
    if trigger in allowed:
        _document_action(msg, trigger, documents, sub, current=current)


def _mdm_segments(
    msg: Message, msh: Segment, trigger: str, sub: SubReport, *, current: bool
) -> None:
    """MDM_T02 structure (HL7 v2.6: EVN, PID, PV1 and TXA required) and the TXA fields."""
    evn = msg.first("EVN")
    if sub.check(
        "HL7-EVN-01",
        evn is not None,
        f"{trigger} SHALL carry an EVN segment",
        location=_loc(evn) or _loc(msh),
    ):
        assert evn is not None
        event = evn.field(1)
        expected = trigger.split("^")[1]
        sub.check(
            "HL7-EVN-02",
            event in ("", expected),
            f"EVN-1 (event type code), when valued, SHALL be the trigger of MSH-9: "
            f"expected {expected!r}, got {event!r}",
            location=_loc(evn, 1),
        )
    pv1 = msg.first("PV1")
    sub.check(
        "HL7-PV1-01",
        pv1 is not None,
        f"{trigger} SHALL carry a PV1 segment",
        location=_loc(pv1) or _loc(msh),
    )
    txa = msg.first("TXA")
    if not sub.check(
        "HL7-TXA-01",
        txa is not None,
        f"{trigger} SHALL carry a TXA segment",
        location=_loc(txa) or _loc(msh),
    ):
        return
    assert txa is not None
    sub.check(
        "HL7-TXA-12",
        bool(msg.components(txa.field(12))[0]),
        f"TXA-12 (unique document number) SHALL be valued (got {txa.field(12)!r})",
        location=_loc(txa, 12),
    )
    if trigger == "MDM^T10":
        sub.check(
            "HL7-TXA-13",
            bool(txa.field(13).strip("^")),
            "a replacement (MDM^T10) SHALL give the replaced document in TXA-13 "
            f"(parent document number) (got {txa.field(13)!r})",
            location=_loc(txa, 13),
        )
    status = txa.field(17)
    allowed = ("AU",) if current else COMPLETION_STATUS
    sub.check(
        "HL7-TXA-17",
        status in allowed,
        f"TXA-17 (document completion status) SHALL be {' or '.join(allowed)} "
        f"({'the volet' if current else 'HL7 table 0271'}) (got {status!r})",
        location=_loc(txa, 17),
    )


def _ei_matches(msg: Message, value: str, ident: tuple[str, str | None]) -> bool:
    """TXA-12/TXA-13 against a CDA II, as the volets serialize it: the root alone when
    the id has no extension, else extension^^root^ISO."""
    comps = [*msg.components(value), "", "", ""]
    root, extension = ident
    if not extension:
        return comps[0] == root
    return comps[0] == extension and comps[2] == root and comps[3] in ("ISO", "")


def _ei_text(ident: tuple[str, str | None]) -> str:
    root, extension = ident
    return f"{extension}^^{root}^ISO" if extension else root


def _document_action(
    msg: Message,
    trigger: str,
    documents: list[CdaObx],
    sub: SubReport,
    *,
    current: bool,
) -> None:
    """OBX-11 of the document vs the trigger, ORC-1, replacement link, TXA-12/13 vs CDA."""
    expected_status = MDM_OBX11.get(trigger)
    for doc in documents:
        status = doc.status
        if expected_status is not None:
            sub.check(
                "HL7-OBX-11",
                status == expected_status,
                f"OBX-11 of the document SHALL be {expected_status} in {trigger} "
                f"({DOCUMENT_ACTIONS[expected_status]}) (got {status!r})",
                location=_loc(doc.segment, 11),
            )
        else:
            sub.check(
                "HL7-OBX-11",
                status in DOCUMENT_ACTIONS,
                "OBX-11 of the document SHALL be F (initial transmission), C (replacement) "
                f"or D (deletion) (got {status!r})",
                location=_loc(doc.segment, 11),
            )
        if current:
            action = expected_status or status
            orc = _order_of(msg, doc.segment)
            if (
                sub.check(
                    "HL7-ORC-01",
                    orc is not None,
                    "an ORC segment (common order: the request on the document) SHALL precede "
                    "the document OBX",
                    location=_loc(doc.segment),
                )
                and action in ORDER_CONTROL
            ):
                assert orc is not None
                sub.check(
                    "HL7-ORC-02",
                    orc.field(1) == ORDER_CONTROL[action],
                    f"ORC-1 SHALL be {ORDER_CONTROL[action]} when the request is the "
                    f"{DOCUMENT_ACTIONS[action]} (OBX-11 {action}"
                    f"{', ' + trigger if expected_status else ''}) (got {orc.field(1)!r})",
                    location=_loc(orc, 1),
                )
        if status == "C" and doc.decoded:
            sub.check(
                "HL7-CDA-RPLC-01",
                doc.parent_id is not None,
                "a replacement (OBX-11 C) SHALL carry a CDA that names the replaced document "
                "in relatedDocument[@typeCode='RPLC']/parentDocument/id (got "
                f"{_ei_text(doc.parent_id) if doc.parent_id else 'no RPLC parentDocument'!r})",
                location=_loc(doc.segment, 5),
            )
    txa = msg.first("TXA")
    carried = next((d for d in documents if d.doc_id is not None), None)
    if not (current and txa is not None and carried is not None):
        return
    assert carried.doc_id is not None
    if msg.components(txa.field(12))[0]:
        sub.check(
            "HL7-TXA-12-CDA",
            _ei_matches(msg, txa.field(12), carried.doc_id),
            "TXA-12 SHALL identify the CDA carried (ClinicalDocument/id): expected "
            f"{_ei_text(carried.doc_id)!r}, got {txa.field(12)!r}",
            location=_loc(txa, 12),
        )
    if txa.field(13).strip("^") and carried.parent_id is not None:
        sub.check(
            "HL7-TXA-13-CDA",
            _ei_matches(msg, txa.field(13), carried.parent_id),
            "TXA-13 SHALL identify the replaced document (relatedDocument/parentDocument/id "
            f"of the CDA): expected {_ei_text(carried.parent_id)!r}, got {txa.field(13)!r}",
            location=_loc(txa, 13),
        )


def _order_of(msg: Message, obx: Segment) -> Segment | None:
    """The ORC of the order group an OBX belongs to (the last ORC before it)."""
    found = None
    for seg in msg.segments:
        if seg.index >= obx.index:
            break
        if seg.name == "ORC":
            found = seg
    return found


def _cda_ids(
    cda: bytes,
) -> tuple[tuple[str, str | None] | None, tuple[str, str | None] | None]:
    """ClinicalDocument/id and the RPLC parentDocument/id, as (root, extension)."""
    try:
        doc = find_clinical_document(parse_xml(cda))
    except UnsafeOrInvalidXml:
        return None, None
    if doc is None:
        return None, None

    def ident(path: str) -> tuple[str, str | None] | None:
        found = doc.xpath(path, namespaces=CDA_NS)
        el = found[0] if isinstance(found, list) and found else None
        if not isinstance(el, etree._Element) or not el.get("root"):
            return None
        return el.get("root") or "", el.get("extension") or None

    return ident("hl7:id"), ident("hl7:relatedDocument[@typeCode='RPLC']/hl7:parentDocument/hl7:id")


def _prt(msg: Message, sub: SubReport, msh: Segment) -> None:
    prts = msg.all("PRT")
    roles = []
    for prt in prts:
        role = msg.components(prt.field(4))[0]
        roles.append(role)
        sub.check(
            "HL7-PRT-04",
            role in PRT_ROLES,
            f"PRT-4 SHALL be SB, RCT or REPLY (got {role!r})",
            location=_loc(prt, 4),
        )
        if role == "SB":
            person = prt.field(5)
            sub.check(
                "HL7-PRT-05",
                IDNAT_PS_OID in person,
                f"the sender (PRT-5) SHALL be identified by its IdNat_PS ({IDNAT_PS_OID})",
                location=_loc(prt, 5),
            )
    first_obx = msg.first("OBX")
    where = _loc(first_obx) or _loc(msh)
    sub.check(
        "HL7-PRT-01",
        "SB" in roles,
        "a PRT segment with PRT-4 = SB (sender) SHALL be present (v2.9 PRT pre-adopted)",
        location=where,
    )
    sub.check(
        "HL7-PRT-02",
        "RCT" in roles,
        "at least one PRT segment with PRT-4 = RCT (recipient) SHALL be present",
        location=where,
    )


def _obx(
    msg: Message,
    sub: SubReport,
    report: ValidationReport,
    options: ValidationOptions,
    *,
    delete: bool,
) -> list[CdaObx]:
    cda_found = False
    documents: list[CdaObx] = []
    for obx in msg.all("OBX"):
        value_type = obx.field(2)
        ident = msg.components(obx.field(3))
        coding = ident[2] if len(ident) > 2 else ""
        if coding == "MetaDMPMSS":
            sub.check(
                "HL7-OBX-META-01",
                ident[0] in META_DMP_MSS,
                f"unknown MetaDMPMSS code {ident[0]!r}",
                severity=Severity.WARNING,
                location=_loc(obx, 3),
            )
            if value_type in ("CE", "CWE"):
                value = msg.components(obx.field(5))[0]
                sub.check(
                    "HL7-OBX-META-02",
                    value in ("Y", "N"),
                    f"{ident[0]} SHALL be Y or N (got {value!r})",
                    location=_loc(obx, 5),
                )
            continue
        if value_type != "ED":
            continue
        data = msg.components(obx.field(5))
        if len(data) < 5 or (data[2].upper() != "XML"):
            continue
        cda_found = True
        document = CdaObx(segment=obx, status=obx.field(11))
        documents.append(document)
        sub.check(
            "HL7-OBX-05",
            data[3] == "Base64",
            f"OBX-5.4 SHALL be Base64 (got {data[3]!r})",
            location=_loc(obx, 5),
        )
        payload = data[4]
        if len(payload) % 4:
            sub.check(
                "HL7-OBX-06",
                False,
                "OBX-5.5 base64 is not padded to a multiple of 4 "
                "characters (decoded after adding the padding)",
                severity=Severity.WARNING,
                location=_loc(obx, 5),
            )
            payload += "=" * (-len(payload) % 4)
        try:
            cda = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            sub.fail("HL7-OBX-06", "OBX-5.5 is not valid base64", location=_loc(obx, 5))
            continue
        is_cda = b"ClinicalDocument" in cda[:4096]
        sub.check(
            "HL7-OBX-07",
            is_cda,
            "OBX-5 SHALL carry a CDA document (the decoded content is no ClinicalDocument)",
            location=_loc(obx, 5),
        )
        if is_cda:
            from simulators.interop.cda.validator import CdaValidator

            document.decoded = True
            document.doc_id, document.parent_id = _cda_ids(cda)

            inner = CdaValidator().validate(cda, name=f"{obx.label(5)}", options=options)
            holder = report.add(f"Embedded CDA ({obx.label(5)}, line {obx.line})")
            holder.subreports.extend(inner.subreports)
    if not delete:
        sub.check(
            "HL7-OBX-01", cda_found, "an OBX of type ED SHALL carry the CDA (^TEXT^XML^Base64^...)"
        )
    return documents


def _ack(msg: Message, msh: Segment, sub: SubReport) -> None:
    version = msh.field(12)
    sub.check(
        "HL7-MSH-12",
        version in ("2.5", "2.6"),
        f"ACK MSH-12 SHALL be 2.5 or 2.6 (got {version!r})",
        location=_loc(msh, 12),
    )
    msa = msg.first("MSA")
    if not sub.check("HL7-MSA-01", msa is not None, "MSA SHALL be present", location=_loc(msh)):
        return
    assert msa is not None
    sub.check(
        "HL7-MSA-02",
        msa.field(1) in ("AA", "AE", "AR", "CA", "CE", "CR"),
        f"MSA-1 SHALL be an acknowledgment code (got {msa.field(1)!r})",
        location=_loc(msa, 1),
    )
    sub.check(
        "HL7-MSA-03",
        bool(msa.field(2)),
        "MSA-2 SHALL echo the message control id",
        location=_loc(msa, 2),
    )
    if msa.field(1) in ("AE", "AR", "CE", "CR"):
        sub.check(
            "HL7-ERR-01",
            msg.first("ERR") is not None,
            "a negative acknowledgment SHOULD carry ERR",
            severity=Severity.WARNING,
            location=_loc(msa, 1),
        )


def _pam_fr(msg: Message, msh: Segment, sub: SubReport) -> None:
    sub.check(
        "HL7-MSH-12",
        msh.field(12) == "2.5^FRA^2.11",
        f"MSH-12 SHALL be 2.5^FRA^2.11 (got {msh.field(12)!r})",
        location=_loc(msh, 12),
    )
    sub.check(
        "HL7-MSH-21",
        msh.field(21) == PAM_FR_PROFILE,
        f"MSH-21 SHALL be {PAM_FR_PROFILE} (got {msh.field(21)!r})",
        location=_loc(msh, 21),
    )
    pid = msg.first("PID")
    has_ins = _check_ins(msg, pid, sub, required=False)
    if has_ins and pid is not None:
        sub.check(
            "HL7-PID-32",
            pid.field(32) in ("VALI", "QUAL"),
            f"with an INS, PID-32 (identity reliability) SHALL be VALI (got {pid.field(32)!r})",
            location=_loc(pid, 32),
        )
    sub.check(
        "HL7-PV1-01",
        msg.first("PV1") is not None
        or msh.field(9).startswith("ADT^A28")
        or msh.field(9).startswith("ADT^A31"),
        "PV1 SHALL be present in a movement message",
        location=_loc(msh, 9),
    )
