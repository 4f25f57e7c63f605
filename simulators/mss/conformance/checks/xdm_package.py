"""MSS-12 XDM-PACKAGE: the IHE_XDM.ZIP, its PDF/A-1 twins, the patient and the subject.

Rules chosen where the requirements leave room:

- The mails judged are those with an ``IHE_XDM.ZIP`` attachment, plus those that look
  like a document mail without one (an ``XDM/1.0/DDM+`` subject, a ZIP or PDF
  attachment): those fail for the missing archive.
- Exactly one ``IHE_XDM.ZIP`` per mail. It must open within the limits of
  ``simulators.interop.safe_zip`` and pass the project's XDM validator
  (``IHE_XDM/SUBSET01/METADATA.XML``, ``INDEX.HTM``, ``README.TXT``, metadata, hashes,
  the CDA inside); the validator's ERROR findings are the observed text.
- PDF twin: every CDA document needs a PDF attachment of its own in the mail (outside
  the archive) that identifies itself as PDF/A-1 (``pdfaid:part`` = 1 in its XMP
  packet). A PDF whose base name matches a CDA file name (``DOC0001.XML`` ↔
  ``DOC0001.PDF``) is paired with it first; the remaining CDA documents take the
  remaining PDF/A-1 attachments in order. Full PDF/A conformance is not checked.
- One patient: the CDA documents that carry an INS all carry the same one, and
  METADATA.XML names a single patientId.
- Subject: ``XDM/1.0/DDM+`` then a non-empty document label, then the CDA patient's
  birth NAME followed by the first birth given name (case, accents and spacing free);
  a birth date after them (``DD/MM/YYYY``, ``YYYY-MM-DD`` or ``YYYYMMDD``, brackets
  allowed) must be the CDA's.
- patientId: every patientId of METADATA.XML (documents and submission set) is the
  CDA INS in CX form ``<INS>^^^&<INS OID>&ISO^NH`` (the ``^NH`` suffix optional). Not
  compared when the CDA carries no INS.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from simulators.core.verdict import Verdict
from simulators.interop.cda.header import CdaHeader
from simulators.interop.engine import validate_bytes
from simulators.interop.report import Severity
from simulators.interop.safe_xml import parse_xml
from simulators.interop.xds.ebrim import DE_PATIENT_ID, NS, SS_PATIENT_ID
from simulators.mss.conformance.checks.mail_parts import (
    PDFA_NOT_CHECKED,
    CdaDocument,
    Finding,
    Leaf,
    MailView,
    XdmArchive,
    conclude,
    fold,
    guarded,
    join_limited,
    judge_each,
    none_seen,
    open_xdm,
    pdf_problem,
    plural,
    shown,
    view,
)
from simulators.mss.conformance.observed import JudgeContext, ObservedMessage
from simulators.mss.mime import decode_words

REQ_XDM = (
    "ECO.2.1.1",
    "SC.MSS/CONF.23",
    "ECO.2.1.2",
    "SC.MSS/CONF.24",
    "ECO.2.1.3",
    "SC.MSS/CONF.25",
)
SUBJECT_PREFIX = "XDM/1.0/DDM+"
_PATIENT_ID_RE = re.compile(r"^([^^]+)\^\^\^&([0-9.]+)&ISO(\^NH)?$")
_DATE_PATTERNS = (
    (re.compile(r"(\d{1,2})[/.-](\d{1,2})[/.-](\d{4})"), (3, 2, 1)),
    (re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})"), (1, 2, 3)),
    (re.compile(r"(?<!\d)(\d{4})(\d{2})(\d{2})(?!\d)"), (1, 2, 3)),
)
EXPECTED = (
    "exactly one well-formed IHE_XDM.ZIP (IHE_XDM/SUBSET01/METADATA.XML, INDEX.HTM, "
    "README.TXT) per mail; a PDF/A-1 attachment for every CDA (PDF/A-1 identification "
    f"only: {PDFA_NOT_CHECKED}); one patient; Subject 'XDM/1.0/DDM+<document label> "
    "<NAME> <first name> [<birth date>]'; METADATA patientId = the CDA INS"
)


def _validator_errors(archive: XdmArchive) -> list[str]:
    assert archive.content is not None
    report = validate_bytes(archive.content, name=archive.name, kind="xdm")
    return [
        f"{c.constraint_id}: {shown(c.description, 160)}"
        for c in report.walk()
        if not c.passed and c.severity is Severity.ERROR
    ]


def _pair_pdfs(docs: list[CdaDocument], pdfs: list[Leaf]) -> list[CdaDocument]:
    """The CDA documents left without a PDF/A-1 twin (pairing rule in the module doc)."""
    free = list(pdfs)
    unpaired: list[CdaDocument] = []
    for doc in docs:
        stem = doc.basename.rsplit(".", 1)[0].upper()
        twin = next((p for p in free if p.basename.rsplit(".", 1)[0].upper() == stem), None)
        if twin is not None:
            free.remove(twin)
        else:
            unpaired.append(doc)
    left: list[CdaDocument] = []
    for doc in unpaired:
        if free:
            free.pop(0)
        else:
            left.append(doc)
    return left


def _birth_date(text: str) -> str | None:
    for pattern, (y, m, d) in _DATE_PATTERNS:
        match = pattern.search(text)
        if match:
            return f"{match.group(y)}{int(match.group(m)):02d}{int(match.group(d)):02d}"
    return None


def subject_problem(subject: str | None, patient: CdaHeader | None) -> str | None:
    """Why the subject does not follow the XDM/1.0/DDM+ pattern for this patient."""
    if subject is None or not subject.strip():
        return "no Subject"
    text = " ".join(subject.split())
    if not text.startswith(SUBJECT_PREFIX):
        return f"the subject {text!r} does not start with {SUBJECT_PREFIX}"
    rest = fold(text[len(SUBJECT_PREFIX) :])
    if patient is None or not patient.birth_name:
        return None if rest else "the subject has nothing after XDM/1.0/DDM+"
    name = fold(patient.birth_name)
    firsts = [
        fold(f)
        for f in (patient.birth_first_name, (patient.birth_given_names or "").split(" ")[0])
        if f
    ]
    match = None
    for first in dict.fromkeys(firsts):
        match = re.search(
            rf"(?:^|\s){re.escape(name)}\s+{re.escape(first)}(?=$|[\s\[\](),;])", rest
        )
        if match:
            break
    want = f"{patient.birth_name} {patient.birth_first_name or ''}".strip()
    if match is None:
        return (
            f"the subject {text!r} does not name the CDA patient as '<NAME> <first name>' ({want})"
        )
    if not rest[: match.start()].strip(" -:"):
        return f"the subject {text!r} has no document label before the patient name"
    date = _birth_date(rest[match.end() :])
    if date and patient.birth_date and date != patient.birth_date[:8]:
        return (
            f"the subject {text!r} gives the birth date {date}; the CDA says "
            f"{patient.birth_date[:8]}"
        )
    return None


def _metadata_patient_ids(metadata: bytes | None) -> list[str] | None:
    if metadata is None:
        return None
    try:
        root = parse_xml(metadata).getroot()
    except Exception:
        return None
    found = root.xpath(
        f"//rim:ExternalIdentifier[@identificationScheme='{DE_PATIENT_ID}' or "
        f"@identificationScheme='{SS_PATIENT_ID}']/@value",
        namespaces=NS,
    )
    return [str(v).strip() for v in found] if isinstance(found, list) else []


def _check_mail(mail: MailView) -> list[Finding]:
    findings: list[Finding] = []

    def fail(message: str, observed: str) -> None:
        findings.append(
            Finding(mail, False, f"{mail.label}: {message}", f"{observed} in {mail.label}")
        )

    leaves = mail.xdm_leaves()
    if not leaves:
        names = ", ".join(a.name for a in mail.attachments()) or "none"
        fail("no IHE_XDM.ZIP attachment", f"attachments: {names}")
        return findings
    if len(leaves) > 1:
        fail(f"{len(leaves)} IHE_XDM.ZIP attachments, expected one", f"{len(leaves)} IHE_XDM.ZIP")
    archive = open_xdm(leaves[0])
    if archive.error:
        fail(
            f"the IHE_XDM.ZIP cannot be opened safely: {archive.error}",
            f"{archive.name}: {archive.error}",
        )
        return findings
    errors = _validator_errors(archive)
    if errors:
        fail(
            f"the IHE_XDM.ZIP fails the XDM validation ({plural(len(errors), 'error')})",
            "XDM validator: " + join_limited(errors, limit=5),
        )
    if archive.cda_errors:
        fail("a CDA document of the IHE_XDM.ZIP is unreadable", join_limited(archive.cda_errors))
    docs = [d for d in archive.cda if d.header is not None]
    if not docs:
        fail("the IHE_XDM.ZIP holds no CDA document", f"{archive.name} without CDA")
        return findings
    # PDF/A-1 twins
    pdfs = mail.pdf_leaves()
    problems = {id(p): pdf_problem(p) for p in pdfs}
    good = [p for p in pdfs if problems[id(p)] is None]
    missing = _pair_pdfs(docs, good)
    if missing:
        seen = (
            join_limited([problems[id(p)] or f"{p.name} (PDF/A-1)" for p in pdfs], sep=", ")
            or "no PDF attachment"
        )
        fail(
            f"no PDF/A-1 twin for {', '.join(d.basename for d in missing)} "
            f"({plural(len(docs), 'CDA document')}, {plural(len(good), 'PDF/A-1 attachment')}; "
            f"{PDFA_NOT_CHECKED})",
            f"PDF attachments: {seen}",
        )
    # one patient
    headers = [d.header for d in docs if d.header is not None]
    patients = list(dict.fromkeys((h.ins_value, h.ins_oid) for h in headers if h.ins_value))
    if len(patients) > 1:
        fail(
            f"documents for {len(patients)} patients in one mail",
            "CDA INS: " + ", ".join(f"{v} ({o})" for v, o in patients),
        )
    meta_ids = _metadata_patient_ids(archive.metadata)
    if meta_ids is None:
        fail(
            "no readable METADATA.XML: the patientId cannot be compared with the CDA INS",
            f"{archive.name} without readable METADATA.XML",
        )
    elif len(set(meta_ids)) > 1:
        fail(
            f"METADATA.XML names {len(set(meta_ids))} patients",
            "patientId: " + ", ".join(dict.fromkeys(meta_ids)),
        )
    # patientId = CDA INS
    if meta_ids and len(patients) == 1:
        ins, oid = patients[0]
        want = f"{ins}^^^&{oid}&ISO^NH"
        wrong = []
        for pid in dict.fromkeys(meta_ids):
            match = _PATIENT_ID_RE.match(pid)
            if not match or (match.group(1), match.group(2)) != (ins, oid):
                wrong.append(pid)
        if wrong:
            fail(
                f"the METADATA.XML patientId is not the CDA INS (expected {want})",
                f"patientId: {', '.join(wrong)}",
            )
    # subject
    patient = next((h for h in headers if h.birth_name), headers[0])
    subjects = mail.values("Subject")
    subject = subjects[0] if subjects else None
    problem = subject_problem(decode_words(subject) if subject else None, patient)
    if problem:
        fail(problem, f"Subject: {shown(subject)}")
    if not findings:
        findings.append(
            Finding(
                mail,
                True,
                f"IHE_XDM.ZIP with {plural(len(docs), 'CDA')}, PDF/A-1 twins, one patient, subject",
                f"IHE_XDM.ZIP ({', '.join(d.basename for d in docs)}), "
                f"{plural(len(good), 'PDF/A-1 attachment')}, "
                f"Subject: {shown(subject)} in {mail.label}",
            )
        )
    return findings


def _looks_like_document_mail(mail: MailView) -> bool:
    if mail.mime_error is not None:
        return True
    subject = decode_words(mail.value("Subject") or "").strip()
    return (
        bool(mail.xdm_leaves())
        or subject.startswith(SUBJECT_PREFIX)
        or bool(mail.pdf_leaves())
        or any(
            leaf.content_type in ("application/zip", "application/x-zip-compressed")
            or (leaf.filename or "").lower().endswith(".zip")
            for leaf in mail.leaves
        )
    )


@guarded(REQ_XDM)
def judge_xdm_package(messages: Sequence[ObservedMessage], ctx: JudgeContext) -> Verdict:
    """MSS-12: IHE_XDM.ZIP well formed + PDF/A-1 twin; one patient; subject; patientId."""
    mails = [m for m in (view(o) for o in messages) if _looks_like_document_mail(m)]
    if not mails:
        return none_seen(
            "a mail carrying an IHE_XDM.ZIP with a CDA document and its PDF/A-1 twin",
            messages,
            ctx,
            requirements=REQ_XDM,
            expected=EXPECTED,
            why_not="with an IHE_XDM.ZIP attachment",
        )
    return conclude(
        judge_each(mails, _check_mail),
        requirements=REQ_XDM,
        expected=EXPECTED,
        passed=(
            "every document mail carries one valid IHE_XDM.ZIP with PDF/A-1 twins "
            f"({PDFA_NOT_CHECKED}), one patient, the XDM subject and patientId = INS"
        ),
    )
