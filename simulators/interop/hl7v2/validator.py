"""HL7 v2 profile rules for Ségur, written from the CI-SIS volets:

- "Transmission de documents CDA en HL7 v2" (ORU^R01 v2.5, MDM^T02/T04/T10 v2.6,
  MSH-21 ``2.x^CISIS_CDA_HL7_V2``) and its LPS/MSSanté variant (``1.x^CISIS_CDA_HL7_LPS``),
  both pre-adopting the v2.9 PRT segment (SB sender, RCT recipients, REPLY);
- ACK (MSA);
- IHE PAM France 2.11 (MSH-12 ``2.5^FRA^2.11``, INS in PID-3, PID-32).

hl7apy parses the message (tolerant, no grouping, since the PRT breaks it) and our
own segment reader keeps PRT and positions. The CDA in OBX-5 is validated as a
sub-report.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

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
    if profile is not None:
        _prt(msg, sub, msh)
    _obx(msg, sub, report, options, delete=trigger == "MDM^T04")


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
) -> None:
    cda_found = False
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

            inner = CdaValidator().validate(cda, name=f"{obx.label(5)}", options=options)
            holder = report.add(f"Embedded CDA ({obx.label(5)}, line {obx.line})")
            holder.subreports.extend(inner.subreports)
    if not delete:
        sub.check(
            "HL7-OBX-01", cda_found, "an OBX of type ED SHALL carry the CDA (^TEXT^XML^Base64^...)"
        )


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
