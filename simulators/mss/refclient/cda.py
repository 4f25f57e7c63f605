"""The health document a mail carries (CONF.23-25, CONF.14-15): one CDA with a
qualified INS, packed as IHE_XDM.ZIP, plus the same document as a PDF/A-1 twin.

The CDA comes from the template shipped in ``data/`` (a CR-BIO with a test INS, OID
1.2.250.1.213.1.4.10, and every identity trait) or from SEGUR_SIM_REFCLIENT_CDA.
"""

from __future__ import annotations

import io
import uuid
import zipfile
from dataclasses import dataclass
from importlib import resources

from lxml import etree

from simulators.interop.cda.header import NS, CdaHeader, find_clinical_document, read_cda_header
from simulators.interop.safe_xml import parse_xml
from simulators.interop.xds.ebrim import patient_id_cx
from simulators.interop.xds.xdm import METADATA, build_xdm
from simulators.mss.refclient.config import ClientConfig
from simulators.mss.refclient.faults import FaultSwitch
from simulators.mss.refclient.pdfa import build_pdfa

TEMPLATE = "cr-bio-template.xml"
TEMPLATE_DOC_ID = b'extension="SEGURSIM-4"'
# Another (valid-looking) test INS: what the patientid-mismatch variant puts in METADATA.XML
OTHER_INS = "279035121518989"


@dataclass(frozen=True)
class Package:
    """What goes into the mail: attachments and the X-MSS headers they imply."""

    xdm: bytes
    pdf: bytes | None
    pdf_name: str
    subject: str
    codecda: str | None  # X-MSS-CODECDA value, None to omit
    ins: str | None  # X-MSS-INS value ("O"/"N"), None to omit
    header: CdaHeader


def load_cda(cfg: ClientConfig) -> bytes:
    if cfg.cda_file is not None:
        return cfg.cda_file.read_bytes()
    template = resources.files("simulators.mss.refclient") / "data" / TEMPLATE
    content = template.read_bytes()
    # a new document id per mail: the same document sent twice would be a duplicate
    fresh = f'extension="REFCLIENT-{uuid.uuid4().hex[:12].upper()}"'.encode()
    return content.replace(TEMPLATE_DOC_ID, fresh, 1)


def birth_date_fr(value: str | None) -> str:
    """CDA ``19850512`` -> ``12/05/1985`` (how French subjects write a birth date)."""
    if not value or len(value) < 8 or not value[:8].isdigit():
        return ""
    return f"{value[6:8]}/{value[4:6]}/{value[0:4]}"


def xdm_subject(header: CdaHeader) -> str:
    """``XDM/1.0/DDM+<document label> <NAME> <first name> <birth date>`` (CONF.25)."""
    parts = [
        header.title or header.document_display_name or "Document",
        (header.birth_name or "").upper(),
        header.birth_first_name or "",
        birth_date_fr(header.birth_date),
    ]
    return "XDM/1.0/DDM+" + " ".join(p for p in parts if p)


def document_lines(cda: bytes, header: CdaHeader) -> list[str]:
    """The readable content of the PDF twin: identity, document, then section texts."""
    lines = [
        f"Patient : {(header.birth_name or '').upper()} {header.birth_first_name or ''}".strip(),
        f"Né(e) le : {birth_date_fr(header.birth_date)}   Sexe : {header.gender or ''}",
        f"INS : {header.ins_value or ''} (OID {header.ins_oid or ''})",
        f"Document : {header.document_display_name or ''} (code {header.document_code or ''})",
        f"Date : {header.effective_time or ''}",
        "",
    ]
    doc = find_clinical_document(parse_xml(cda))
    if doc is not None:
        for section in doc.iterfind(".//{urn:hl7-org:v3}section"):
            title = section.find("hl7:title", NS)
            text = section.find("hl7:text", NS)
            if title is not None:
                lines.append(" ".join(etree.tostring(title, method="text", encoding=str).split()))
            if text is not None:
                lines.append(" ".join(etree.tostring(text, method="text", encoding=str).split()))
    lines += ["", "Document généré par segur-sim refclient (SIMULATION)."]
    return lines


def build_package(cfg: ClientConfig, faults: FaultSwitch) -> Package:
    cda = load_cda(cfg)
    header = read_cda_header(cda)
    if not header.ins_value or not header.ins_oid:
        raise ValueError("the CDA carries no INS: it cannot be sent in an XDM package")
    patient = None
    if faults.on("patientid-mismatch"):
        patient = patient_id_cx(OTHER_INS, header.ins_oid)
    xdm = build_xdm([cda], patient_id=patient)
    if faults.on("broken-xdm"):
        xdm = _without(xdm, METADATA)
    title = header.title or "Document"
    pdf = None if faults.on("no-pdf-twin") else build_pdfa(title, document_lines(cda, header))
    subject = xdm_subject(header)
    if faults.on("bad-subject"):
        subject = title  # no XDM/1.0/DDM+ prefix, no patient traits
    codecda: str | None = header.document_code or ""
    if faults.on("no-codecda"):
        codecda = None
    elif faults.on("wrong-codecda"):
        codecda = "11488-4"  # a real LOINC document code, not this document's
    ins: str | None = "O" if header.ins_qualified else "N"
    if faults.on("wrong-ins"):
        ins = "N" if ins == "O" else "O"
    return Package(
        xdm=xdm,
        pdf=pdf,
        pdf_name=_pdf_name(title),
        subject=subject,
        codecda=codecda,
        ins=ins,
        header=header,
    )


def _pdf_name(title: str) -> str:
    safe = "".join(c if c.isalnum() else "_" for c in title).strip("_") or "document"
    return f"{safe}.pdf"


def _without(archive: bytes, name: str) -> bytes:
    """The archive minus one member (the broken-xdm variant)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archive)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            if info.filename != name:
                dst.writestr(info, src.read(info.filename), compress_type=zipfile.ZIP_DEFLATED)
    return out.getvalue()
