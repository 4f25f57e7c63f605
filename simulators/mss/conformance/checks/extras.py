"""Beyond MOTCO2 (MSS-X1..X4): notices, MDN, reply threading, patient addressing.

Rules chosen where the requirements leave room:

- X1/X2 requests: the header appears once and holds exactly one address, the mailbox
  under test (compared without case). Notices themselves (``multipart/report``) are
  not judged: a notice must not ask for a notice.
- X2 MDN: PASS when at least one mail of the window is an RFC 8098 MDN for the given
  original: ``multipart/report`` with ``report-type=disposition-notification``, a
  ``message/disposition-notification`` part whose ``Original-Message-ID`` is the
  original's and whose ``Disposition`` reads ``<action-mode>/<sending-mode>;
  <displayed|deleted|dispatched|processed>``. Other mails of the window are ignored
  when one MDN conforms.
- X3 reply: PASS when at least one mail has ``In-Reply-To`` holding exactly the
  original Message-ID and ``References`` containing it.
- X4 patient addressing: the mails judged are those with a recipient (envelope, To or
  Cc) in ``patient.mssante.fr`` or ``patient.<simulated domain>``. Each such
  recipient's local part must be the INS of the CDA (case free), the CDA must carry a
  qualified INS (see ``mail_parts.ins_is_qualified``), and ``X-MSS-MES: FIN`` must be
  present (value case free).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from email.message import Message

from simulators.core.verdict import Evidence, Verdict
from simulators.mss.conformance.checks.mail_parts import (
    PATIENT_DOMAIN,
    Finding,
    MailView,
    addresses,
    archive_problem,
    cda_headers,
    children,
    conclude,
    describe_ins,
    guarded,
    ins_is_qualified,
    join_limited,
    judge_each,
    msg_ids,
    none_seen,
    normalise_msg_id,
    shown,
    view,
    xdm_archives,
)
from simulators.mss.conformance.observed import JudgeContext, ObservedMessage

REQ_DELIVERY = ("ECO.2.3.1",)
REQ_READ_REQUEST = ("ECO.2.3.2", "SC.MSS/UX.33")
REQ_MDN = ("ECO.3.1.6", "SC.MSS/UX.34")
REQ_REPLY = ("ECO.2.2.2",)
REQ_PATIENT = ("ECO.2.2.6", "ECO.2.2.8", "SC.MSS/CONF.21")

_DISPOSITION_RE = re.compile(
    r"^\s*[\w-]+\s*/\s*[\w-]+\s*;\s*(displayed|deleted|dispatched|processed)\b", re.IGNORECASE
)


def _is_notice(mail: MailView) -> bool:
    return mail.content_type == "multipart/report"


def _address_header(
    messages: Sequence[ObservedMessage],
    ctx: JudgeContext,
    *,
    name: str,
    requirements: tuple[str, ...],
    what: str,
) -> Verdict:
    sender = ctx.mailbox.address
    expected = f"{name}: {sender} on every mail"
    mails = [m for m in (view(o) for o in messages) if not _is_notice(m)]
    if not mails:
        return none_seen(
            f"a mail asking for a {what}",
            messages,
            ctx,
            requirements=requirements,
            expected=expected,
            why_not="other than a notice" if messages else "",
        )

    def check(mail: MailView) -> list[Finding]:
        values = mail.values(name)
        if not values:
            return [
                Finding(
                    mail,
                    False,
                    f"{mail.label} asks for no {what} (no {name})",
                    f"no {name} in {mail.label}",
                )
            ]
        seen = f"{name}: {' | '.join(shown(v) for v in values)} in {mail.label}"
        if len(values) > 1:
            return [Finding(mail, False, f"{mail.label} carries {name} {len(values)} times", seen)]
        addrs = [a for _label, a in addresses(values[0])]
        if [a.lower() for a in addrs] != [sender.lower()]:
            return [
                Finding(
                    mail,
                    False,
                    f"{mail.label} has {name} {shown(values[0])!r} instead of the sender {sender}",
                    seen,
                )
            ]
        return [Finding(mail, True, f"{name}: {sender}", seen)]

    return conclude(
        judge_each(mails, check, needs_mime=False),
        requirements=requirements,
        expected=expected,
        passed=f"every mail asks for a {what} to {sender}",
    )


# ---- MSS-X1 ------------------------------------------------------------------------------
@guarded(REQ_DELIVERY)
def judge_delivery_notice(messages: Sequence[ObservedMessage], ctx: JudgeContext) -> Verdict:
    """MSS-X1: every mail asks for a delivery notice: ``Return-Receipt-To: <sender>``."""
    return _address_header(
        messages,
        ctx,
        name="Return-Receipt-To",
        requirements=REQ_DELIVERY,
        what="delivery notice",
    )


# ---- MSS-X2 ------------------------------------------------------------------------------
@guarded(REQ_READ_REQUEST)
def judge_read_notice_request(messages: Sequence[ObservedMessage], ctx: JudgeContext) -> Verdict:
    """MSS-X2 (request): every mail asks for a read notice: ``Disposition-Notification-To``."""
    return _address_header(
        messages,
        ctx,
        name="Disposition-Notification-To",
        requirements=REQ_READ_REQUEST,
        what="read notice",
    )


def _mdn_fields(part: Message) -> list[tuple[str, str]]:
    """The fields of a message/disposition-notification part (tolerant)."""
    payload = part.get_payload()
    if isinstance(payload, list):
        out: list[tuple[str, str]] = []
        for sub in payload:
            if isinstance(sub, Message):
                out.extend((str(k), str(v)) for k, v in sub.raw_items())
        return out
    text = payload if isinstance(payload, str) else ""
    fields: list[tuple[str, str]] = []
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and fields:
            fields[-1] = (fields[-1][0], fields[-1][1] + line)
            continue
        key, colon, value = line.partition(":")
        if colon and key.strip():
            fields.append((key.strip(), value))
    return fields


def _mdn_problem(mail: MailView, original: str) -> tuple[str | None, str]:
    """(why this mail is not an MDN for ``original`` or None, what was seen)."""
    root = mail.root
    assert root is not None
    ctype = root.get_content_type()
    if ctype != "multipart/report":
        return f"{mail.label} is {ctype}, not multipart/report", f"{ctype} in {mail.label}"
    report_type = str(root.get_param("report-type") or "")
    if report_type.lower() != "disposition-notification":
        return (
            f"{mail.label} is a multipart/report with report-type={report_type or '(none)'}, "
            "not disposition-notification",
            f"report-type={report_type or '(none)'} in {mail.label}",
        )
    parts = [
        p for p in children(root) if p.get_content_type() == "message/disposition-notification"
    ]
    if not parts:
        return (
            f"{mail.label} has no message/disposition-notification part",
            f"{mail.structure} in {mail.label}",
        )
    fields = {k.strip().lower(): v.strip() for k, v in _mdn_fields(parts[0])}
    omid = fields.get("original-message-id")
    disposition = fields.get("disposition")
    seen = f"Original-Message-ID: {shown(omid)}, Disposition: {shown(disposition)} in {mail.label}"
    if not omid:
        return f"the MDN {mail.label} has no Original-Message-ID", seen
    if normalise_msg_id(omid) != original:
        return (
            f"the MDN {mail.label} is for {shown(omid)}, not for the original {original}",
            seen,
        )
    if not disposition:
        return f"the MDN {mail.label} has no Disposition field", seen
    if not _DISPOSITION_RE.match(disposition):
        return f"the MDN {mail.label} has a malformed Disposition {shown(disposition)!r}", seen
    return None, seen


@guarded(REQ_MDN)
def judge_mdn(
    messages: Sequence[ObservedMessage], ctx: JudgeContext, *, original_message_id: str
) -> Verdict:
    """MSS-X2 (return): an RFC 8098 MDN for the original mail was sent."""
    original = normalise_msg_id(original_message_id)
    expected = (
        "multipart/report; report-type=disposition-notification with a "
        f"message/disposition-notification part: Original-Message-ID: {original} and a "
        "Disposition field"
    )
    if not messages:
        return none_seen(
            f"a read notice (MDN) for {original}",
            messages,
            ctx,
            requirements=REQ_MDN,
            expected=expected,
        )
    mails = [view(o) for o in messages]
    problems: list[tuple[MailView, str, str]] = []
    for mail in mails:
        if mail.mime_error:
            problems.append((mail, f"{mail.label} cannot be read as MIME", mail.mime_error))
            continue
        try:
            problem, seen = _mdn_problem(mail, original)
        except Exception as exc:
            problem, seen = f"{mail.label} could not be analysed ({exc})", f"broken {mail.label}"
        if problem is None:
            return Verdict.passed(
                f"{mail.label} is an RFC 8098 read notice for {original}",
                expected=expected,
                observed=seen,
                evidence=[Evidence("submission", mail.ref, f"MDN for {original}")],
                requirements=REQ_MDN,
            )
        problems.append((mail, problem, seen))
    reports = [p for p in problems if p[0].content_type == "multipart/report"] or problems
    return Verdict.failed(
        f"no conforming read notice (MDN) for {original}: "
        + join_limited(message for _m, message, _s in reports),
        expected=expected,
        observed=join_limited(seen for _m, _p, seen in reports),
        evidence=[Evidence("submission", m.ref, message) for m, message, _s in problems],
        requirements=REQ_MDN,
    )


# ---- MSS-X3 ------------------------------------------------------------------------------
@guarded(REQ_REPLY)
def judge_reply(
    messages: Sequence[ObservedMessage], ctx: JudgeContext, *, original_message_id: str
) -> Verdict:
    """MSS-X3: a reply carries ``In-Reply-To: <original>`` and References containing it."""
    original = normalise_msg_id(original_message_id)
    expected = f"In-Reply-To: {original} and References containing {original}"
    if not messages:
        return none_seen(
            f"a reply to {original}", messages, ctx, requirements=REQ_REPLY, expected=expected
        )
    mails = [view(o) for o in messages]
    problems: list[tuple[MailView, str, str]] = []
    for mail in mails:
        irt = mail.values("In-Reply-To")
        refs = mail.values("References")
        seen = (
            f"In-Reply-To: {shown(irt[0] if irt else None)}, "
            f"References: {shown(' '.join(refs) if refs else None)} in {mail.label}"
        )
        if not irt:
            problem = f"{mail.label} has no In-Reply-To"
        elif len(irt) > 1 or msg_ids(irt[0]) != [original]:
            problem = f"{mail.label} has In-Reply-To {shown(irt[0])!r}, not {original}"
        elif not refs:
            problem = f"{mail.label} has no References"
        elif original not in [i for r in refs for i in msg_ids(r)]:
            problem = f"the References of {mail.label} do not contain {original}"
        else:
            return Verdict.passed(
                f"{mail.label} replies to {original} (In-Reply-To and References)",
                expected=expected,
                observed=seen,
                evidence=[Evidence("submission", mail.ref, f"reply to {original}")],
                requirements=REQ_REPLY,
            )
        problems.append((mail, problem, seen))
    return Verdict.failed(
        f"no mail is threaded as a reply to {original}: "
        + join_limited(message for _m, message, _s in problems),
        expected=expected,
        observed=join_limited(seen for _m, _p, seen in problems),
        evidence=[Evidence("submission", m.ref, message) for m, message, _s in problems],
        requirements=REQ_REPLY,
    )


# ---- MSS-X4 ------------------------------------------------------------------------------
def _patient_domains(ctx: JudgeContext) -> tuple[str, ...]:
    return (PATIENT_DOMAIN, f"patient.{ctx.domain}".lower())


@guarded(REQ_PATIENT)
def judge_patient_addressing(messages: Sequence[ObservedMessage], ctx: JudgeContext) -> Verdict:
    """MSS-X4: a patient mail goes to <INS>@patient.mssante.fr, with a qualified INS and FIN."""
    domains = _patient_domains(ctx)
    expected = (
        f"To: <INS of the CDA>@{PATIENT_DOMAIN} only with a qualified INS, and X-MSS-MES: FIN"
    )
    mails = [view(o) for o in messages]
    relevant = [(m, [r for r in m.recipients() if r.rsplit("@", 1)[-1] in domains]) for m in mails]
    relevant = [(m, r) for m, r in relevant if r]
    if not relevant:
        return none_seen(
            f"a mail to a patient (<INS>@{PATIENT_DOMAIN})",
            messages,
            ctx,
            requirements=REQ_PATIENT,
            expected=expected,
            why_not=f"addressed to {' or '.join(domains)}",
        )
    patients = {m.obs.submission_id: r for m, r in relevant}

    def check(mail: MailView) -> list[Finding]:
        findings: list[Finding] = []
        rcpts = patients[mail.obs.submission_id]
        archives = xdm_archives(mail)
        problem = archive_problem(archives)
        headers = [h for _d, h in cda_headers(archives)]
        if not archives:
            findings.append(
                Finding(
                    mail,
                    False,
                    f"{mail.label} goes to a patient but carries no IHE_XDM.ZIP to take the INS "
                    "from",
                    f"To: {', '.join(rcpts)} without CDA in {mail.label}",
                )
            )
        elif problem or not headers:
            findings.append(
                Finding(
                    mail,
                    False,
                    f"the CDA of {mail.label} cannot be read: {problem or 'no CDA document'}",
                    f"unreadable CDA in {mail.label}",
                )
            )
        else:
            ins_values = {(h.ins_value or "").lower() for h in headers if h.ins_value}
            first = next((h for h in headers if h.ins_value), headers[0])
            if not all(ins_is_qualified(h) for h in headers):
                findings.append(
                    Finding(
                        mail,
                        False,
                        f"{mail.label} goes to a patient without a qualified INS in the CDA",
                        f"CDA: {describe_ins(first)} in {mail.label}",
                    )
                )
            for rcpt in rcpts:
                local = rcpt.rsplit("@", 1)[0]
                if local not in ins_values:
                    findings.append(
                        Finding(
                            mail,
                            False,
                            f"{mail.label} goes to {rcpt}, whose local part is not the INS of "
                            f"the CDA ({first.ins_value or 'none'})",
                            f"To: {rcpt}, CDA: {describe_ins(first)} in {mail.label}",
                        )
                    )
        mes = mail.values("X-MSS-MES")
        if not mes or mes[0].strip().upper() != "FIN":
            findings.append(
                Finding(
                    mail,
                    False,
                    f"{mail.label} goes to a patient without X-MSS-MES: FIN",
                    f"X-MSS-MES: {shown(mes[0] if mes else None)} in {mail.label}",
                )
            )
        if not any(not f.ok for f in findings):
            findings.append(
                Finding(
                    mail,
                    True,
                    "patient address = qualified INS, X-MSS-MES: FIN",
                    f"To: {', '.join(rcpts)}, X-MSS-MES: FIN in {mail.label}",
                )
            )
        return findings

    return conclude(
        judge_each([m for m, _r in relevant], check),
        requirements=REQ_PATIENT,
        expected=expected,
        passed="patient mails go to the qualified INS of the CDA with X-MSS-MES: FIN",
    )
