"""The message-format unit tests (MSS-08..12, MSS-A4, MSS-X1..X4) on real mails.

Every baseline mail passes every check that applies to it; each broken variant fails
the one rule it breaks, and says so in the verdict."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from email.message import EmailMessage
from functools import partial

import pytest

from simulators.core.store.mail import Mailbox
from simulators.core.verdict import Status, Verdict
from simulators.interop.xds.xdm import build_xdm
from simulators.mss.conformance.checks import app_mail, extras, headers, xdm_package
from simulators.mss.conformance.checks.mail_parts import pdfa_part
from simulators.mss.conformance.observed import JudgeContext, ObservedMessage

from .mailbuilder import (
    APP_BOX,
    BOXES,
    CORRESPONDENT,
    DOMAIN,
    INS,
    NIL,
    ORG_BOX,
    PER_BOX,
    build_mail,
    cda,
    ctx,
    mdn_mail,
    observe,
    other_patient,
    patient_mail,
    pdf,
    reply_mail,
    set_header,
    unqualified,
    xdm_entries,
    zip_bomb,
    zip_of,
)

Judge = Callable[[Sequence[ObservedMessage], JudgeContext], Verdict]
ORIGINAL = f"<original-42@{DOMAIN}>"

PLAIN_JUDGES: list[Judge] = [
    headers.judge_nil,
    headers.judge_codecda_without_cda,
    headers.judge_ins_without_cda,
    headers.judge_message_format,
    extras.judge_delivery_notice,
    extras.judge_read_notice_request,
]
CDA_JUDGES: list[Judge] = [
    headers.judge_nil,
    headers.judge_codecda_with_cda,
    headers.judge_ins_with_cda,
    headers.judge_message_format,
    xdm_package.judge_xdm_package,
    extras.judge_delivery_notice,
    extras.judge_read_notice_request,
]
ALL_JUDGES: dict[str, Judge] = {
    "nil": headers.judge_nil,
    "codecda-with": headers.judge_codecda_with_cda,
    "codecda-without": headers.judge_codecda_without_cda,
    "ins-with": headers.judge_ins_with_cda,
    "ins-without": headers.judge_ins_without_cda,
    "format": headers.judge_message_format,
    "xdm": xdm_package.judge_xdm_package,
    "app": app_mail.judge_app_reply_to,
    "delivery": extras.judge_delivery_notice,
    "read-request": extras.judge_read_notice_request,
    "mdn": partial(extras.judge_mdn, original_message_id=ORIGINAL),
    "reply": partial(extras.judge_reply, original_message_id=ORIGINAL),
    "patient": extras.judge_patient_addressing,
}


def run(judge: Judge, *mails: EmailMessage | bytes, box: Mailbox = PER_BOX) -> Verdict:
    observed = [observe(m, sid=i, box=box) for i, m in enumerate(mails, start=1)]
    return judge(observed, ctx(box))


def failed(verdict: Verdict, *fragments: str) -> None:
    assert verdict.status is Status.FAIL, verdict
    text = " | ".join((verdict.message, verdict.expected, verdict.observed))
    for fragment in fragments:
        assert fragment in text, (fragment, verdict)


def passed(verdict: Verdict) -> None:
    assert verdict.status is Status.PASS, verdict


# ---- baselines -----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["PER", "ORG", "APP"])
def test_baseline_plain_mail_passes_every_check(kind: str) -> None:
    box = BOXES[kind]
    mail = build_mail(box)
    for judge in PLAIN_JUDGES + ([app_mail.judge_app_reply_to] if kind == "APP" else []):
        passed(run(judge, mail, box=box))


@pytest.mark.parametrize("kind", ["PER", "ORG", "APP"])
def test_baseline_cda_mail_passes_every_check(kind: str) -> None:
    box = BOXES[kind]
    mail = build_mail(box, cdas=[cda()])
    for judge in CDA_JUDGES + ([app_mail.judge_app_reply_to] if kind == "APP" else []):
        passed(run(judge, mail, box=box))


def test_baseline_two_documents_and_level1_cda_pass() -> None:
    mail = build_mail(PER_BOX, cdas=[cda("CR-BIO"), cda("VAC-NOTE"), cda("CR-BIO-PDF")])
    for judge in CDA_JUDGES:
        passed(run(judge, mail))


def test_baseline_patient_reply_and_mdn_pass() -> None:
    passed(run(extras.judge_patient_addressing, patient_mail()))
    passed(run(xdm_package.judge_xdm_package, patient_mail()))
    passed(
        extras.judge_reply(
            [observe(reply_mail(PER_BOX, ORIGINAL))], ctx(), original_message_id=ORIGINAL
        )
    )
    passed(
        extras.judge_mdn(
            [observe(mdn_mail(PER_BOX, ORIGINAL))], ctx(), original_message_id=ORIGINAL
        )
    )
    # the original id may be given without angle brackets
    verdict = extras.judge_mdn(
        [observe(mdn_mail(PER_BOX, ORIGINAL))], ctx(), original_message_id=ORIGINAL.strip("<>")
    )
    passed(verdict)
    assert verdict.requirements == ("ECO.3.1.6", "SC.MSS/UX.34")


def test_baseline_window_with_both_kinds_of_mail() -> None:
    plain, with_cda = build_mail(PER_BOX), build_mail(PER_BOX, cdas=[cda()])
    for judge in PLAIN_JUDGES + CDA_JUDGES:
        passed(run(judge, plain, with_cda))


# ---- verdict shape -------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(ALL_JUDGES))
def test_no_mail_is_a_fail_saying_what_was_expected(name: str) -> None:
    verdict = ALL_JUDGES[name]([], ctx(APP_BOX if name == "app" else PER_BOX))
    failed(verdict, "none was seen", "no mail submitted by")
    assert verdict.requirements and verdict.expected


def test_verdict_carries_requirements_and_evidence_per_mail() -> None:
    good = build_mail(PER_BOX)
    bad = set_header(build_mail(PER_BOX), "X-MSS-NIL", "DEV000000")
    verdict = run(headers.judge_nil, good, bad)
    assert verdict.requirements == ("ECO.2.4.3", "SC.MSS/CONF.16")
    assert [(e.kind, e.ref) for e in verdict.evidence] == [("submission", "1"), ("submission", "2")]
    assert "DEV000000" in verdict.evidence[1].detail
    assert verdict.evidence[0].detail.startswith("conforms")
    assert verdict.expected == f"X-MSS-NIL: {NIL} on every mail"
    assert verdict.observed == f"X-MSS-NIL: DEV000000 in mail {bad['Message-ID']}"


# ---- MSS-08 X-MSS-NIL ----------------------------------------------------------------------
def test_nil_missing() -> None:
    mail = set_header(build_mail(), "X-MSS-NIL", None)
    failed(run(headers.judge_nil, mail), "has no X-MSS-NIL header", mail["Message-ID"])


def test_nil_wrong_value() -> None:
    mail = set_header(build_mail(), "X-MSS-NIL", "DEV000000")
    failed(run(headers.judge_nil, mail), "X-MSS-NIL: DEV000000 in mail <", "'DEV935997'")


def test_nil_undeclared_is_an_error_of_the_setup() -> None:
    verdict = headers.judge_nil([observe(build_mail())], ctx(nil=""))
    assert verdict.status is Status.ERROR


# ---- MSS-09 X-MSS-CODECDA ------------------------------------------------------------------
def test_codecda_wrong_value() -> None:
    mail = set_header(build_mail(cdas=[cda()]), "X-MSS-CODECDA", "11502-3")
    failed(
        run(headers.judge_codecda_with_cda, mail), "X-MSS-CODECDA: 11502-3", "CDA codes: 11502-2"
    )


def test_codecda_missing_on_cda_mail() -> None:
    mail = set_header(build_mail(cdas=[cda()]), "X-MSS-CODECDA", None)
    failed(run(headers.judge_codecda_with_cda, mail), "no X-MSS-CODECDA header")


def test_codecda_is_order_and_space_insensitive() -> None:
    mail = build_mail(cdas=[cda("CR-BIO"), cda("VAC-NOTE")])
    set_header(mail, "X-MSS-CODECDA", " 87273-9 ,  11502-2 ")
    passed(run(headers.judge_codecda_with_cda, mail))
    set_header(mail, "X-MSS-CODECDA", "87273-9")
    failed(run(headers.judge_codecda_with_cda, mail), "its CDA codes are 11502-2,87273-9")


def test_codecda_on_plain_mail() -> None:
    mail = build_mail()
    mail["X-MSS-CODECDA"] = "11502-2"
    failed(run(headers.judge_codecda_without_cda, mail), "carries no CDA but has X-MSS-CODECDA")


# ---- MSS-10 X-MSS-INS ----------------------------------------------------------------------
def test_ins_n_with_a_qualified_ins() -> None:
    mail = set_header(build_mail(cdas=[cda()]), "X-MSS-INS", "N")
    failed(run(headers.judge_ins_with_cda, mail), "expected 'O'", "X-MSS-INS: N", "qualified")


def test_ins_unqualified_expects_n() -> None:
    document = unqualified(cda())
    mail = build_mail(cdas=[document])
    assert mail["X-MSS-INS"] == "N"
    passed(run(headers.judge_ins_with_cda, mail))
    set_header(mail, "X-MSS-INS", "O")
    failed(run(headers.judge_ins_with_cda, mail), "expected 'N'", "not qualified, missing")


def test_ins_missing_on_cda_mail_and_present_on_plain_mail() -> None:
    failed(
        run(headers.judge_ins_with_cda, set_header(build_mail(cdas=[cda()]), "X-MSS-INS", None)),
        "no X-MSS-INS header",
    )
    plain = build_mail()
    plain["X-MSS-INS"] = "N"
    failed(run(headers.judge_ins_without_cda, plain), "carries no CDA but has X-MSS-INS: N")


# ---- MSS-11 MESSAGE-FORMAT -----------------------------------------------------------------
def test_format_no_message_id() -> None:
    mail = set_header(build_mail(), "Message-ID", None)
    failed(run(headers.judge_message_format, mail), "mail #1 (no Message-ID) has no Message-ID")


def test_format_malformed_message_id() -> None:
    mail = set_header(build_mail(), "Message-ID", "not-an-id")
    failed(run(headers.judge_message_format, mail), "malformed Message-ID 'not-an-id'")


def test_format_latin1_body() -> None:
    mail = build_mail(html=False)
    mail.set_content("Compte rendu à lire.\n", charset="iso-8859-1")
    failed(run(headers.judge_message_format, mail), "charset=iso-8859-1, not UTF-8")


def test_format_invalid_utf8_and_missing_charset() -> None:
    raw = build_mail(html=False).as_bytes()
    head, _sep, _body = raw.partition(b"\n\n")
    head = head.replace(b"Content-Transfer-Encoding: 7bit", b"Content-Transfer-Encoding: 8bit")
    bad_bytes = head + b"\n\nCompte rendu \xe0 lire.\n"
    failed(run(headers.judge_message_format, bad_bytes), "is not valid utf-8")
    no_charset = head.replace(b'; charset="utf-8"', b"") + b"\n\nHello.\n"
    failed(run(headers.judge_message_format, no_charset), "declares no charset")


def test_format_us_ascii_is_accepted() -> None:
    raw = build_mail(html=False).as_bytes().replace(b'charset="utf-8"', b"charset=us-ascii")
    passed(run(headers.judge_message_format, raw))


def test_format_html_only() -> None:
    mail = build_mail(html=False)
    mail.set_content("<p>Bonjour</p>", subtype="html")
    failed(run(headers.judge_message_format, mail), "text/html only", "text/html in mail")


def test_format_alternative_with_html_first() -> None:
    mail = build_mail(html=False)
    mail.set_content("<p>Bonjour</p>", subtype="html")
    mail.add_alternative("Bonjour")
    failed(run(headers.judge_message_format, mail), "starts with text/html, not text/plain")


def test_format_attachment_first_in_mixed() -> None:
    mail = build_mail(cdas=[cda()])
    parts = mail.get_payload()
    assert isinstance(parts, list)
    parts.reverse()
    failed(
        run(headers.judge_message_format, mail), "first part of multipart/mixed is application/pdf"
    )


@pytest.mark.parametrize(
    ("label", "ok"),
    [
        ("Dr_Jean_MARTIN_CABINET SIMULATION", True),
        ("Dr Jean Martin CABINET SIMULATION", True),
        ("dr jean martin", True),
        ("MARTIN Jean Dr CABINET SIMULATION", False),
        ("Jean MARTIN", False),
    ],
)
def test_format_per_sender_label(label: str, ok: bool) -> None:
    mail = set_header(build_mail(), "From", f'"{label}" <{PER_BOX.address}>')
    verdict = run(headers.judge_message_format, mail)
    if ok:
        passed(verdict)
    else:
        failed(
            verdict,
            f"the From label {label!r} does not contain the display name 'Dr Jean MARTIN'",
            "Dr_Jean_MARTIN_CABINET SIMULATION",  # the expected form, in `expected`
            f"From: {label} <{PER_BOX.address}>",
        )


@pytest.mark.parametrize(
    ("display_name", "label"),
    [
        ("dr.martin", "Dr__MARTIN_CABINET SIMULATION"),
        ("Docteur Jean MARTIN", "Dr_Jean_MARTIN_CABINET SIMULATION"),
        ("Mme Éloïse Dupré-Lefèvre", "Mme_Eloise_DUPRE-LEFEVRE_CABINET SIMULATION"),
    ],
)
def test_format_per_label_tolerance(display_name: str, label: str) -> None:
    box = Mailbox(9, PER_BOX.address, PER_BOX.type, display_name, PER_BOX.entity, 0.0)
    mail = set_header(build_mail(box), "From", f'"{label}" <{box.address}>')
    passed(run(headers.judge_message_format, mail, box=box))


def test_format_empty_label_and_org_label() -> None:
    failed(
        run(headers.judge_message_format, set_header(build_mail(), "From", PER_BOX.address)),
        "the From header has no display label",
    )
    mail = set_header(build_mail(ORG_BOX), "From", f'"Cardiologie" <{ORG_BOX.address}>')
    failed(
        run(headers.judge_message_format, mail, box=ORG_BOX),
        "does not contain the entity 'CHU SIMULATION'",
    )
    mail = set_header(
        build_mail(ORG_BOX), "From", f'"Cardiologie - chu simulation" <{ORG_BOX.address}>'
    )
    passed(run(headers.judge_message_format, mail, box=ORG_BOX))


# ---- MSS-12 XDM-PACKAGE --------------------------------------------------------------------
def test_xdm_without_metadata() -> None:
    entries = xdm_entries(build_xdm([cda()]))
    del entries["IHE_XDM/SUBSET01/METADATA.XML"]
    mail = build_mail(cdas=[cda()], xdm=zip_of(entries))
    failed(
        run(xdm_package.judge_xdm_package, mail),
        "fails the XDM validation",
        "XDM validator: FR-XDM-LAYOUT-01: IHE_XDM/SUBSET01/METADATA.XML SHALL be present",
        "no readable METADATA.XML",
    )


def test_xdm_zip_slip() -> None:
    entries = xdm_entries(build_xdm([cda()]))
    entries["../../etc/evil.XML"] = b"<x/>"
    mail = build_mail(cdas=[cda()], xdm=zip_of(entries))
    failed(run(xdm_package.judge_xdm_package, mail), "cannot be opened safely", "path traversal")
    failed(run(headers.judge_codecda_with_cda, mail), "cannot be read", "path traversal")


def test_xdm_zip_bomb() -> None:
    mail = build_mail(cdas=[cda()], xdm=zip_bomb())
    for judge in (xdm_package.judge_xdm_package, headers.judge_ins_with_cda):
        failed(run(judge, mail), "zip bomb")


def test_xdm_bad_base64() -> None:
    raw = build_mail(cdas=[cda()]).as_bytes()
    start = raw.index(b'filename="IHE_XDM.ZIP"')
    body = raw.index(b"\n\n", start) + 2
    raw = raw[:body] + b"!!!not*base64!!!\n" + raw[body:]
    failed(run(xdm_package.judge_xdm_package, raw), "invalid base64")


def test_xdm_two_archives() -> None:
    mail = build_mail(cdas=[cda()])
    mail.add_attachment(
        build_xdm([cda()]), maintype="application", subtype="zip", filename="IHE_XDM.ZIP"
    )
    failed(run(xdm_package.judge_xdm_package, mail), "2 IHE_XDM.ZIP attachments, expected one")


def test_xdm_no_pdf_twin_and_pdf_not_pdfa1() -> None:
    failed(
        run(xdm_package.judge_xdm_package, build_mail(cdas=[cda()], pdfs=[])),
        "no PDF/A-1 twin for DOC0001.XML",
        "PDF attachments: no PDF attachment",
        "full PDF/A conformance is not checked here",
    )
    mail = build_mail(cdas=[cda()], pdfs=[("cr.pdf", pdf(pdfa_part=None))])
    failed(run(xdm_package.judge_xdm_package, mail), "cr.pdf declares no PDF/A identification")
    mail = build_mail(cdas=[cda()], pdfs=[("cr.pdf", pdf(pdfa_part="2"))])
    failed(run(xdm_package.judge_xdm_package, mail), "cr.pdf declares PDF/A-2, not PDF/A-1")
    two = build_mail(cdas=[cda("CR-BIO"), cda("VAC-NOTE")], pdfs=[("DOC0002.PDF", pdf())])
    failed(run(xdm_package.judge_xdm_package, two), "no PDF/A-1 twin for DOC0001.XML")


def test_pdfa_identification_forms() -> None:
    assert pdfa_part(pdf()) == "1"
    element_form = b'<r xmlns:id="http://www.aiim.org/pdfa/ns/id/"><id:part>1</id:part></r>'
    assert pdfa_part(b"%PDF-1.4\n" + element_form) == "1"
    assert pdfa_part(pdf(pdfa_part=None)) is None


@pytest.mark.parametrize(
    ("subject", "fragment"),
    [
        ("Compte rendu SIMULO CAMILLE", "does not start with XDM/1.0/DDM+"),
        ("XDM/1.0/DDM+Compte rendu DUPONT MARIE", "does not name the CDA patient"),
        ("XDM/1.0/DDM+SIMULO CAMILLE", "no document label"),
        ("XDM/1.0/DDM+CR SIMULO CAMILLE 01/01/1990", "birth date 19900101"),
    ],
)
def test_xdm_bad_subject(subject: str, fragment: str) -> None:
    mail = build_mail(cdas=[cda()], subject=subject)
    failed(run(xdm_package.judge_xdm_package, mail), fragment, f"Subject: {subject}")


def test_xdm_subject_is_tolerant() -> None:
    for subject in (
        "XDM/1.0/DDM+Résultats Simulo Camille",
        "XDM/1.0/DDM+CR bio SIMULO CAMILLE [1985-05-12]",
    ):
        passed(run(xdm_package.judge_xdm_package, build_mail(cdas=[cda()], subject=subject)))


def test_xdm_patient_id_mismatch() -> None:
    wrong = "190017512345678^^^&1.2.250.1.213.1.4.10&ISO^NH"
    mail = build_mail(cdas=[cda()], xdm=build_xdm([cda()], patient_id=wrong))
    failed(
        run(xdm_package.judge_xdm_package, mail),
        "patientId is not the CDA INS",
        f"expected {INS}^^^&1.2.250.1.213.1.4.10&ISO^NH",
        f"patientId: {wrong}",
    )


def test_xdm_two_patients() -> None:
    mail = build_mail(cdas=[cda(), other_patient(cda("VAC-NOTE"))])
    failed(run(xdm_package.judge_xdm_package, mail), "documents for 2 patients", "190017512345678")


def test_xdm_no_archive_on_a_document_mail() -> None:
    mail = build_mail(subject="XDM/1.0/DDM+CR SIMULO CAMILLE", pdfs=[("cr.pdf", pdf())])
    failed(run(xdm_package.judge_xdm_package, mail), "no IHE_XDM.ZIP attachment", "cr.pdf")


# ---- MSS-A4 APP-REPLY-TO -------------------------------------------------------------------
def app_run(mail: EmailMessage, **kw: Callable[[str], str | None]) -> Verdict:
    return app_mail.judge_app_reply_to([observe(mail, box=APP_BOX)], ctx(APP_BOX), **kw)


def test_app_without_reply_to() -> None:
    failed(app_run(set_header(build_mail(APP_BOX), "Reply-To", None)), "has no Reply-To")


def test_app_reply_to_itself() -> None:
    mail = set_header(build_mail(APP_BOX), "Reply-To", APP_BOX.address)
    failed(app_run(mail), f"Reply-To is the APP mailbox {APP_BOX.address} itself")


def test_app_reply_to_type_lookup() -> None:
    types = {CORRESPONDENT: "PER", f"robot@{DOMAIN}": "APP"}
    passed(app_run(build_mail(APP_BOX), mailbox_type=types.get))
    mail = set_header(build_mail(APP_BOX), "Reply-To", f"robot@{DOMAIN}")
    failed(app_run(mail, mailbox_type=types.get), "is a APP mailbox, not a PER or ORG one")
    mail = set_header(build_mail(APP_BOX), "Reply-To", "x@elsewhere.example")
    failed(app_run(mail, mailbox_type=types.get), "not a known PER or ORG mailbox")


def test_app_without_footer() -> None:
    failed(app_run(build_mail(APP_BOX, footer=None)), "no footer saying the mail was generated")


@pytest.mark.parametrize(
    "footer",
    [
        "This message was automatically generated.",
        "Auto-generated e-mail, do not reply.",
        "COURRIEL AUTOMATIQUE - NE PAS RÉPONDRE",
        "Message envoyé de manière automatique par le laboratoire.",
    ],
)
def test_app_footer_wordings(footer: str) -> None:
    passed(app_run(build_mail(APP_BOX, footer=footer)))


# ---- MSS-X1..X4 ----------------------------------------------------------------------------
def test_delivery_notice_missing_or_wrong() -> None:
    failed(
        run(extras.judge_delivery_notice, set_header(build_mail(), "Return-Receipt-To", None)),
        "asks for no delivery notice (no Return-Receipt-To)",
    )
    mail = set_header(build_mail(), "Return-Receipt-To", CORRESPONDENT)
    failed(run(extras.judge_delivery_notice, mail), f"instead of the sender {PER_BOX.address}")


def test_read_notice_request_missing() -> None:
    mail = set_header(build_mail(), "Disposition-Notification-To", None)
    failed(run(extras.judge_read_notice_request, mail), "no Disposition-Notification-To")


def mdn_verdict(raw: bytes) -> Verdict:
    return extras.judge_mdn([observe(raw)], ctx(), original_message_id=ORIGINAL)


def test_mdn_wrong_original_message_id() -> None:
    failed(
        mdn_verdict(mdn_mail(PER_BOX, f"<other@{DOMAIN}>")),
        f"is for <other@{DOMAIN}>, not for the original {ORIGINAL}",
        f"Original-Message-ID: <other@{DOMAIN}>",
    )


def test_mdn_other_defects() -> None:
    failed(mdn_verdict(mdn_mail(PER_BOX, ORIGINAL, disposition=None)), "no Disposition field")
    failed(mdn_verdict(mdn_mail(PER_BOX, ORIGINAL, disposition="lu")), "malformed Disposition")
    failed(
        mdn_verdict(mdn_mail(PER_BOX, ORIGINAL, report_type="delivery-status")),
        "report-type=delivery-status",
    )
    failed(mdn_verdict(build_mail().as_bytes()), "not multipart/report")


def test_reply_threading() -> None:
    def verdict(mail: EmailMessage) -> Verdict:
        return extras.judge_reply([observe(mail)], ctx(), original_message_id=ORIGINAL)

    failed(verdict(reply_mail(PER_BOX, f"<x@{DOMAIN}>", references=ORIGINAL)), "has In-Reply-To")
    failed(verdict(set_header(reply_mail(PER_BOX, ORIGINAL), "References", None)), "no References")
    failed(
        verdict(reply_mail(PER_BOX, ORIGINAL, references=f"<x@{DOMAIN}>")),
        f"do not contain {ORIGINAL}",
    )
    failed(verdict(build_mail()), "has no In-Reply-To")


def test_patient_addressing_defects() -> None:
    wrong_local = set_header(patient_mail(), "To", "123@patient.mssante.fr")
    failed(
        extras.judge_patient_addressing(
            [observe(wrong_local, rcpt=("123@patient.mssante.fr",))], ctx()
        ),
        "goes to 123@patient.mssante.fr, whose local part is not the INS",
    )
    failed(
        run(extras.judge_patient_addressing, patient_mail(content=unqualified(cda()))),
        "without a qualified INS",
    )
    failed(
        run(extras.judge_patient_addressing, set_header(patient_mail(), "X-MSS-MES", None)),
        "without X-MSS-MES: FIN",
    )


# ---- hostile input -------------------------------------------------------------------------
def _billion_laughs_xdm() -> bytes:
    entries = xdm_entries(build_xdm([cda()]))
    entries["IHE_XDM/SUBSET01/DOC0001.XML"] = (
        b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>'
        b'<ClinicalDocument xmlns="urn:hl7-org:v3">&b;</ClinicalDocument>'
    )
    entries["IHE_XDM/SUBSET01/METADATA.XML"] = b"<not-closed"
    return zip_of(entries)


def _deeply_nested() -> bytes:
    head = b"From: a@b\r\nMessage-ID: <n@b>\r\nX-MSS-NIL: DEV935997\r\n"
    body = b"Content-Type: text/plain\r\n\r\nhi\r\n"
    for i in range(60):
        b = f"B{i}".encode()
        body = (
            b"Content-Type: multipart/mixed; boundary="
            + b
            + b"\r\n\r\n--"
            + b
            + b"\r\n"
            + body
            + b"--"
            + b
            + b"--\r\n"
        )
    return head + body


HOSTILE = {
    "garbage": b"\x00\xff\xfe garbage without headers \x80\x81",
    "no-boundary": b"From: a@b\r\nContent-Type: multipart/mixed\r\n\r\n--x\r\nhi\r\n",
    "bad-headers": b"From: <<<@@@>>>\r\nMessage-ID: <<a>>\r\nReply-To: ,,,;:\r\n"
    b'Content-Type: text/plain; charset="\xff"\r\nIn-Reply-To: \x00\r\n\r\nbody\r\n',
    "deep-nesting": _deeply_nested(),
    "hostile-xml": build_mail(cdas=[cda()], xdm=_billion_laughs_xdm()).as_bytes(),
    "not-a-zip": build_mail(cdas=[cda()], xdm=b"PK\x03\x04 not really a zip").as_bytes(),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_mails_never_raise(case: str) -> None:
    raw = HOSTILE[case]
    for name, judge in ALL_JUDGES.items():
        verdict = judge([observe(raw, rcpt=(f"{INS}@patient.mssante.fr",))], ctx())
        assert verdict.status in (Status.FAIL, Status.PASS), (case, name, verdict)
        assert verdict.message, (case, name)


def test_hostile_xml_in_the_archive_is_reported() -> None:
    raw = HOSTILE["hostile-xml"]
    failed(run(headers.judge_codecda_with_cda, raw), "unreadable XML", "XML entities")
    deep = HOSTILE["deep-nesting"]
    failed(run(headers.judge_message_format, deep), "cannot be read as MIME", "nesting")
    # a header-only check still reads the headers of a mail whose body cannot be walked
    passed(run(headers.judge_nil, deep))
