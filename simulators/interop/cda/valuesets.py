"""Our own code lists, written from the published specifications.

Each list states where it comes from. When the user gives the ANS tree
(``--rules-dir``), the official SVS value sets of ``jeuxDeValeurs/`` are read
instead where they exist (see ``load_svs_codes``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from simulators.interop.safe_xml import parse_xml

LOINC = "2.16.840.1.113883.6.1"
CONFIDENTIALITY_SYSTEM = "2.16.840.1.113883.5.25"

# ANS "Référentiel INS": OIDs of the patient national identifier (interop-notes, CI-SIS
# "structuration minimale" volet): INS-NIR, INS-NIA, test INS-NIR, demonstration INS-NIR.
INS_OIDS: dict[str, str] = {
    "1.2.250.1.213.1.4.8": "INS-NIR",
    "1.2.250.1.213.1.4.9": "INS-NIA",
    "1.2.250.1.213.1.4.10": "INS-NIR de test",
    "1.2.250.1.213.1.4.11": "INS-NIR de démonstration",
}
INS_OID_ARC = "1.2.250.1.213.1.4."
# Other patient identifiers under the same arc that are not an INS: the NIR used as the
# social security number (CSE volets carry it next to the INS).
NON_INS_PATIENT_OIDS = {"1.2.250.1.213.1.4.13"}

# National health-professional identifier (IdNat_PS) and structures (IdNat_Struct)
IDNAT_PS_OID = "1.2.250.1.71.4.2.1"
IDNAT_STRUCT_OID = "1.2.250.1.71.4.2.2"

# HL7 v3 Confidentiality (CDA header): N, R, V. Source: HL7 v3 vocabulary
# 2.16.840.1.113883.5.25 as restricted by CI-SIS "structuration minimale".
CDA_CONFIDENTIALITY = {"N", "R", "V"}

# JDV_J08 (XDS confidentialityCode, CI-SIS): the HL7 codes plus the French masking codes.
XDS_CONFIDENTIALITY = {
    ("N", CONFIDENTIALITY_SYSTEM),
    ("R", CONFIDENTIALITY_SYSTEM),
    ("V", CONFIDENTIALITY_SYSTEM),
    ("INVISIBLE_PATIENT", "1.2.250.1.213.1.1.4.13"),
    ("INVISIBLE_REPRESENTANTS_LEGAUX", "1.2.250.1.213.1.1.4.13"),
    ("MASQUE_PS", "1.2.250.1.213.1.1.4.13"),
}

# JDV_J06 classCode. Source: ANS terminology TRE_A03-ClasseDocument
# (OID 1.2.250.1.213.1.1.4.1), as listed in the CI-SIS "Gestion des documents
# partagés" volet. Not published in the corpus, hence kept here.
CLASS_CODE_SYSTEM = "1.2.250.1.213.1.1.4.1"
CLASS_CODES = {
    "10",
    "11",
    "12",
    "13",
    "14",
    "15",
    "16",
    "17",
    "18",
    "19",
    "20",
    "21",
    "22",
    "23",
    "24",
    "25",
    "26",
    "27",
    "28",
    "29",
    "30",
    "31",
    "32",
    "33",
    "90",
}

# JDV_J10 formatCode. Source: CI-SIS "Gestion des documents partagés" and each volet's
# "formatCode" table (urn:asip:ci-sis:... and urn:ans:ci-sis:...), plus IHE ITI TF-3
# codes for unstructured documents. Not published in the corpus, hence kept here.
FORMAT_CODE_SYSTEMS = {"1.2.250.1.213.1.1.4.2.282", "1.3.6.1.4.1.19376.1.2.3"}
FORMAT_CODE_PREFIXES = ("urn:asip:ci-sis:", "urn:ans:ci-sis:", "urn:ihe:")
FORMAT_CODES_IHE = {
    "urn:ihe:iti:xds-sd:pdf:2008",
    "urn:ihe:iti:xds-sd:text:2008",
    "urn:ihe:iti:xds:2017:mimeTypeSufficient",
}


@dataclass(frozen=True)
class DocumentType:
    name: str
    codes: frozenset[str]
    # False: the volet accepts other codes, a different one is only a warning
    strict: bool = True


# Document types by templateId root. Source: CI-SIS volets (each volet's "en-tête"
# chapter gives the templateId and the LOINC code of the document); interop-notes.md.
DOCUMENT_TYPES: dict[str, DocumentType] = {
    "1.2.250.1.213.1.1.1.13": DocumentType("VSM", frozenset({"SYNTH", "34117-2", "60591-5"})),
    "1.2.250.1.213.1.1.1.51": DocumentType("IPS-FR", frozenset({"60591-5"}), strict=False),
    "1.2.250.1.213.1.1.1.55": DocumentType("CR-BIO", frozenset({"11502-2"})),
    "1.2.250.1.213.1.1.1.59": DocumentType("BIO-TROD", frozenset({"96173-0"})),
    "1.2.250.1.213.1.1.1.46": DocumentType("VAC-NOTE", frozenset({"87273-9"})),
    "1.2.250.1.213.1.1.1.37": DocumentType("VAC", frozenset({"11369-6"})),
    "1.2.250.1.213.1.1.1.22": DocumentType("DLU", frozenset({"74207-2"})),
    "1.2.250.1.213.1.1.1.23": DocumentType("FLUDT", frozenset({"74207-2"})),
    "1.2.250.1.213.1.1.1.24": DocumentType("FLUDR", frozenset({"74207-2"})),
    "1.2.250.1.213.1.1.1.29": DocumentType("LDL-SES", frozenset({"11490-0"})),
    "1.2.250.1.213.1.1.1.21": DocumentType("LDL-EES", frozenset({"18761-7"})),
    "1.2.250.1.213.1.1.1.45": DocumentType("IMG-CR-IMG", frozenset({"18748-4"})),
    "1.2.250.1.213.1.1.1.47": DocumentType("IMG-DA-IMG", frozenset({"55115-0"})),
    "1.2.250.1.213.1.1.1.39": DocumentType("eP-MED-DM", frozenset({"57833-6"})),
    "1.2.250.1.213.1.1.1.54": DocumentType("eDISP-MED", frozenset({"60593-1"})),
    "1.2.250.1.213.1.1.1.40": DocumentType("ANEST-CR-ANEST", frozenset({"77436-4"})),
    "1.2.250.1.213.1.1.1.41": DocumentType("ANEST-CR-CPA", frozenset({"34749-2"})),
    "1.2.250.1.213.1.1.1.15": DocumentType("AVC-AUNV", frozenset({"34133-9"})),
    "1.2.250.1.213.1.1.1.16": DocumentType("AVC-EUNV", frozenset({"34133-9"})),
    "1.2.250.1.213.1.1.1.17": DocumentType("AVC-SUNV", frozenset({"34133-9"})),
    "1.2.250.1.213.1.1.1.25": DocumentType("AVC-PAVC", frozenset({"11488-4"})),
    "1.2.250.1.213.1.1.1.26": DocumentType("CANCER-PPS", frozenset({"18776-5"})),
    "1.2.250.1.213.1.1.1.27": DocumentType("CANCER-D2LM-FIN", frozenset({"18748-4"})),
    "1.2.250.1.213.1.1.1.28": DocumentType("CANCER-D2LM-FIDD", frozenset({"18748-4"})),
    "1.2.250.1.213.1.1.1.30": DocumentType("SDM-MR", frozenset({"34133-9"})),
    "1.2.250.1.213.1.1.1.12.1": DocumentType("OBP-SAP", frozenset({"57055-6"})),
    "1.2.250.1.213.1.1.1.12.2": DocumentType("OBP-SNM", frozenset({"57057-2"})),
    "1.2.250.1.213.1.1.1.12.3": DocumentType("OBP-SNE", frozenset({"57075-4"})),
    "1.2.250.1.213.1.1.1.12.4": DocumentType("OBP-SCM", frozenset({"89235-6"})),
    "1.2.250.1.213.1.1.1.12.5": DocumentType("OBP-SEM", frozenset({"78489-2"})),
    "1.2.250.1.213.1.1.1.2.1.1": DocumentType("CARD-F-PRC-AVK", frozenset({"34133-9"})),
    "1.2.250.1.213.1.1.1.2.1.2": DocumentType("CARD-F-PRC-TAP", frozenset({"34133-9"})),
    "1.2.250.1.213.1.1.1.2.1.3": DocumentType("CARD-F-PRC-DCI", frozenset({"34133-9"})),
    "1.2.250.1.213.1.1.1.2.1.4": DocumentType("CARD-F-PRC-PSC", frozenset({"34133-9"})),
    "1.2.250.1.213.1.1.1.2.1.5": DocumentType("CARD-F-PRC-PPV", frozenset({"34133-9"})),
    "1.2.250.1.213.1.1.1.5.1": DocumentType("CSE-CS8", frozenset({"CERT_DECL"})),
    "1.2.250.1.213.1.1.1.5.2": DocumentType("CSE-CS9", frozenset({"CERT_DECL"})),
    "1.2.250.1.213.1.1.1.5.3": DocumentType("CSE-CS24", frozenset({"CERT_DECL"})),
    "1.2.250.1.213.1.1.1.5.4": DocumentType("CSE-MDE", frozenset({"29274-8"})),
    "1.2.250.1.213.1.1.1.8": DocumentType("CANCER-FRCP", frozenset({"34794-8"})),
    "1.2.250.1.213.1.1.1.18": DocumentType("OPH-CR-RTN", frozenset({"75492-9"})),
    "1.2.250.1.213.1.1.1.32": DocumentType("CANCER-CR-GM", frozenset({"51969-4"})),
    "1.2.250.1.213.1.1.1.36": DocumentType("CNAM-HR", frozenset({"REMB"})),
    "1.2.250.1.213.1.1.1.38": DocumentType("TLM-DA", frozenset({"75496-0"})),
    "1.2.250.1.213.1.1.1.42": DocumentType("OPH-BRE", frozenset({"78513-9"})),
}

# Volet versions the built-in document-type rules know, by templateId root: the versions
# of the CI-SIS volets published with ANS's validation tool (TestContenuCDA 3.0, 2025-03),
# whose document-type templateId carries the version in @extension. A document naming
# another version gets the rules of the nearest one (FR-DOC-TPL-04, a warning).
KNOWN_VERSIONS: dict[str, tuple[str, ...]] = {
    "1.2.250.1.213.1.1.1.13": ("2022.01", "2023.01"),  # VSM (1.4 in 2022.01)
    "1.2.250.1.213.1.1.1.51": ("2024.01",),
    "1.2.250.1.213.1.1.1.55": ("2021.01", "2023.01", "2024.01"),
    "1.2.250.1.213.1.1.1.59": ("2024.01",),
    "1.2.250.1.213.1.1.1.46": ("2023.01",),
    "1.2.250.1.213.1.1.1.37": ("2023.01",),
    "1.2.250.1.213.1.1.1.22": ("2022.01",),
    "1.2.250.1.213.1.1.1.23": ("2022.01",),
    "1.2.250.1.213.1.1.1.24": ("2022.01",),
    "1.2.250.1.213.1.1.1.29": ("2022.01",),
    "1.2.250.1.213.1.1.1.21": ("2022.01",),
    "1.2.250.1.213.1.1.1.45": ("2024.01",),
    "1.2.250.1.213.1.1.1.47": ("2024.01",),
    "1.2.250.1.213.1.1.1.39": ("2022.01", "2023.01", "2024.01"),
    "1.2.250.1.213.1.1.1.54": ("2024.01",),
    "1.2.250.1.213.1.1.1.40": ("2022.01",),
    "1.2.250.1.213.1.1.1.41": ("2022.01",),
    "1.2.250.1.213.1.1.1.15": ("2022.01",),
    "1.2.250.1.213.1.1.1.16": ("2022.01",),
    "1.2.250.1.213.1.1.1.17": ("2022.01",),
    "1.2.250.1.213.1.1.1.25": ("2022.01",),
    "1.2.250.1.213.1.1.1.26": ("2022.01",),
    "1.2.250.1.213.1.1.1.27": ("2022.01",),
    "1.2.250.1.213.1.1.1.28": ("2022.01",),
    "1.2.250.1.213.1.1.1.30": ("2022.01", "2025.01"),
    "1.2.250.1.213.1.1.1.12.1": ("2024.01",),
    "1.2.250.1.213.1.1.1.12.2": ("2024.01",),
    "1.2.250.1.213.1.1.1.12.3": ("2024.01",),
    "1.2.250.1.213.1.1.1.12.4": ("2024.01",),
    "1.2.250.1.213.1.1.1.12.5": ("2024.01",),
    "1.2.250.1.213.1.1.1.2.1.1": ("2022.01",),
    "1.2.250.1.213.1.1.1.2.1.2": ("2022.01",),
    "1.2.250.1.213.1.1.1.2.1.3": ("2022.01",),
    "1.2.250.1.213.1.1.1.2.1.4": ("2022.01",),
    "1.2.250.1.213.1.1.1.2.1.5": ("2022.01",),
    "1.2.250.1.213.1.1.1.5.1": ("2022.01", "2024.01", "2025.01"),
    "1.2.250.1.213.1.1.1.5.2": ("2022.01", "2024.01", "2025.01"),
    "1.2.250.1.213.1.1.1.5.3": ("2022.01", "2024.01", "2025.01"),
    "1.2.250.1.213.1.1.1.5.4": ("2023.01",),
    "1.2.250.1.213.1.1.1.8": ("2022.01",),
    "1.2.250.1.213.1.1.1.18": ("2022.01",),
    "1.2.250.1.213.1.1.1.32": ("2022.01",),
    "1.2.250.1.213.1.1.1.36": ("2021.01",),
    "1.2.250.1.213.1.1.1.38": ("2022.01",),
    "1.2.250.1.213.1.1.1.42": ("2022.01", "2022.02"),
}

_VERSION_RE = re.compile(r"^(\d{4})[.\-]?(\d{2})$")


def _months(version: str | None) -> int | None:
    match = _VERSION_RE.match((version or "").strip())
    return int(match.group(1)) * 12 + int(match.group(2)) if match else None


def nearest_version(wanted: str | None, known: Iterable[str]) -> str | None:
    """The known version closest in time to ``wanted`` ("YYYY.MM"; "YYYYMM" is read
    too); a tie goes to the newer one. Unreadable ``wanted``: the newest known one.
    None when nothing is known."""
    versions = sorted(set(known), key=lambda v: (_months(v) or 0, v))
    if not versions:
        return None
    target = _months(wanted)
    if target is None:
        return versions[-1]
    return min(versions, key=lambda v: (abs((_months(v) or 0) - target), -(_months(v) or 0)))


# Section templateIds some document types require (CI-SIS volet "corps" chapters; IHE PCC).
REQUIRED_SECTIONS: dict[str, tuple[tuple[str, str], ...]] = {
    # VAC-NOTE: the "Vaccinations" section (IHE PCC Immunizations section)
    "1.2.250.1.213.1.1.1.46": (("1.3.6.1.4.1.19376.1.5.3.1.3.23", "Vaccinations"),),
    # CR-BIO: at least one laboratory specialty section (IHE PaLM XD-LAB)
    "1.2.250.1.213.1.1.1.55": (("1.3.6.1.4.1.19376.1.3.3.2.1", "Laboratory Specialty"),),
}

# JDV_J07 typeCode (XDS typeCode / CDA document code): LOINC or ANS codes. The official
# list has 115 concepts; ours holds the codes of the document types above plus the common
# level-1 ones of the CI-SIS. With --rules-dir the official JDV_J07 file is used.
TYPE_CODES_BUILTIN: set[str] = {code for doc in DOCUMENT_TYPES.values() for code in doc.codes} | {
    "11502-2",
    "18748-4",
    "34133-9",
    "11490-0",
    "11488-4",
    "57833-6",
    "60591-5",
    "51969-4",
    "34794-8",
    "REMB",
    "29274-8",
    "78513-9",
    "75492-9",
    "85208-7",
    "75496-0",
    "56445-0",
    "11505-5",
    "47420-5",
    "34749-2",
    "77436-4",
}

# nonXMLBody media types accepted by the CI-SIS for level-1 documents
NON_XML_MEDIA_TYPES = {"application/pdf", "text/plain", "text/rtf", "image/jpeg", "image/tiff"}


@lru_cache(maxsize=64)
def load_svs_codes(path: Path) -> frozenset[tuple[str, str]]:
    """(code, codeSystem) pairs of an SVS value set file (JDV of the ANS tree)."""
    tree = parse_xml(path.read_bytes())
    pairs = set()
    for concept in tree.iter("{urn:ihe:iti:svs:2008}Concept"):
        code = concept.get("code")
        if code:
            pairs.add((code, concept.get("codeSystem") or ""))
    return frozenset(pairs)


def find_value_set(rules_dir: Path | None, prefix: str) -> Path | None:
    """The official SVS file whose name starts with ``prefix`` (e.g. "JDV_J07")."""
    if rules_dir is None:
        return None
    folder = rules_dir / "jeuxDeValeurs"
    if not folder.is_dir():
        return None
    matches = sorted(folder.glob(prefix + "*.xml"))
    return matches[0] if matches else None
