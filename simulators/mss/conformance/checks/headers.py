"""MSS-08..MSS-11: the X-MSS headers and the message format.

Rules chosen where the requirements leave room:

- "Carrying CDA" means carrying an ``IHE_XDM.ZIP`` attachment; the CDA documents are
  the ``ClinicalDocument`` XML files of the archive (see ``mail_parts``).
- X-MSS-NIL must equal the declared reference exactly (surrounding spaces ignored)
  and appear once.
- X-MSS-CODECDA is compared as a set of codes: comma separated, order and spaces
  free; a code shared by several documents may be listed once or once per document.
- X-MSS-INS must be ``O`` when every CDA of the mail carries a qualified INS (INS OID
  ``.4.8``/``.4.9``/``.4.10``/``.4.11`` with birth name, first birth given name,
  birth date and sex), ``N`` otherwise.
- MESSAGE-FORMAT: a Message-ID ``<left@right>`` once; every body text part declares
  ``charset=utf-8`` (``us-ascii`` accepted) and decodes as such; the structure is
  ``text/plain``, or ``multipart/alternative(text/plain, text/html)`` (the HTML may be
  a ``multipart/related`` starting with text/html), alone or as the first part of a
  ``multipart/mixed`` whose other parts are attachments. ``multipart/report``
  (notices, RFC 8098) is accepted as is. Sender label: PER, the words of the
  mailbox's display name appear in the label in the same order (case, accents, ``_``,
  ``.`` or spaces free; "Docteur"/"Dr", "Professeur"/"Pr", "Monsieur"/"M."/"Mr" and
  "Madame"/"Mme" are the same title), as in ``[Title]_[First name]_[NAME]_[Entity]``;
  a display name that lacks a part (``dr.martin``) asks only for the parts it has.
  ORG/APP, the label
  equals or contains the mailbox's entity (same tolerance).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from email.message import Message

from simulators.core.store.mail import MailboxType
from simulators.core.verdict import Verdict
from simulators.interop.cda.header import CdaHeader
from simulators.mss.conformance.checks.mail_parts import (
    Finding,
    MailView,
    archive_problem,
    cda_headers,
    charset_problem,
    children,
    conclude,
    describe_ins,
    fold,
    guarded,
    ins_is_qualified,
    is_attachment_part,
    judge_each,
    msg_ids,
    none_seen,
    shown,
    view,
    xdm_archives,
)
from simulators.mss.conformance.observed import JudgeContext, ObservedMessage
from simulators.mss.conformance.registry import MessageJudge

REQ_NIL = ("ECO.2.4.3", "SC.MSS/CONF.16")
REQ_CODECDA = ("ECO.2.4.1", "SC.MSS/CONF.15")
REQ_INS = ("ECO.2.4.2", "SC.MSS/CONF.14")
REQ_FORMAT = ("ECO.2.2.1", "ECO.2.2.3", "ECO.2.2.4", "ECO.2.2.7")

_MESSAGE_ID_RE = re.compile(r"^<[^<>@\s]+@[^<>@\s]+>$")
_LABEL_SPLIT = re.compile(r"[\s_.,;]+")


def _single(mail: MailView, name: str, findings: list[Finding]) -> str | None:
    """The value of a header that must appear at most once (a finding when repeated)."""
    values = mail.values(name)
    if len(values) > 1:
        findings.append(
            Finding(
                mail,
                False,
                f"{mail.label} carries {name} {len(values)} times",
                f"{name}: {' | '.join(shown(v) for v in values)} in {mail.label}",
            )
        )
        return None
    return values[0] if values else None


# ---- MSS-08 X-MSS-NIL --------------------------------------------------------------------
@guarded(REQ_NIL)
def judge_nil(messages: Sequence[ObservedMessage], ctx: JudgeContext) -> Verdict:
    """MSS-08: every mail carries ``X-MSS-NIL`` equal to the declared product reference."""
    expected = f"X-MSS-NIL: {ctx.nil} on every mail"
    if not ctx.nil:
        return Verdict.error(
            "no product reference (NIL) was declared for the run", requirements=REQ_NIL
        )
    if not messages:
        return none_seen("a mail", messages, ctx, requirements=REQ_NIL, expected=expected)

    def check(mail: MailView) -> list[Finding]:
        findings: list[Finding] = []
        values = mail.values("X-MSS-NIL")
        if not values:
            return [
                Finding(
                    mail,
                    False,
                    f"{mail.label} has no X-MSS-NIL header",
                    f"no X-MSS-NIL in {mail.label}",
                )
            ]
        if len(values) > 1:
            _single(mail, "X-MSS-NIL", findings)
            return findings
        value = values[0].strip()
        if value != ctx.nil:
            return [
                Finding(
                    mail,
                    False,
                    f"{mail.label} has X-MSS-NIL {shown(value)!r} instead of {ctx.nil!r}",
                    f"X-MSS-NIL: {shown(value)} in {mail.label}",
                )
            ]
        return [Finding(mail, True, f"X-MSS-NIL: {value}", f"X-MSS-NIL: {value} in {mail.label}")]

    findings = judge_each([view(m) for m in messages], check, needs_mime=False)
    return conclude(
        findings,
        requirements=REQ_NIL,
        expected=expected,
        passed=f"every mail carries X-MSS-NIL: {ctx.nil}",
    )


# ---- shared: mails with and without CDA ---------------------------------------------------
def _split_by_cda(messages: Sequence[ObservedMessage]) -> tuple[list[MailView], list[MailView]]:
    mails = [view(m) for m in messages]
    with_cda = [m for m in mails if m.mime_error is None and m.xdm_leaves()]
    without = [m for m in mails if m not in with_cda]
    return with_cda, without


def _cda_of(mail: MailView) -> tuple[list[CdaHeader], list[str], Finding | None]:
    """The CDA headers of a mail's XDM archives (with their file names), or a failure."""
    archives = xdm_archives(mail)
    problem = archive_problem(archives)
    if problem:
        return (
            [],
            [],
            Finding(
                mail,
                False,
                f"the CDA documents of {mail.label} cannot be read: {problem}",
                f"unreadable IHE_XDM.ZIP in {mail.label}: {problem}",
            ),
        )
    docs = cda_headers(archives)
    if not docs:
        return (
            [],
            [],
            Finding(
                mail,
                False,
                f"the IHE_XDM.ZIP of {mail.label} holds no CDA document",
                f"no CDA document in the IHE_XDM.ZIP of {mail.label}",
            ),
        )
    return [h for _d, h in docs], [d.basename for d, _h in docs], None


def _absent_check(name: str, mail: MailView) -> list[Finding]:
    values = mail.values(name)
    if values:
        return [
            Finding(
                mail,
                False,
                f"{mail.label} carries no CDA but has {name}: {shown(values[0])}",
                f"{name}: {shown(values[0])} in {mail.label} (no IHE_XDM.ZIP)",
            )
        ]
    return [Finding(mail, True, f"no {name} (no CDA)", f"no {name} in {mail.label}")]


# ---- MSS-09 X-MSS-CODECDA ----------------------------------------------------------------
def _absent_without_cda(header: str, requirements: tuple[str, ...]) -> MessageJudge:
    """The "absent without CDA" half of MSS-09 and MSS-10: the same rule, another header."""
    expected = f"no {header} header on a mail without CDA"

    @guarded(requirements)
    def judge(messages: Sequence[ObservedMessage], ctx: JudgeContext) -> Verdict:
        _with, without = _split_by_cda(messages)
        if not without:
            return none_seen(
                "a mail without CDA",
                messages,
                ctx,
                requirements=requirements,
                expected=expected,
                why_not="without an IHE_XDM.ZIP attachment",
            )
        return conclude(
            judge_each(without, lambda mail: _absent_check(header, mail)),
            requirements=requirements,
            expected=expected,
            passed=f"no {header} on mails without CDA",
        )

    return judge


def _no_mail_with_cda(
    messages: Sequence[ObservedMessage],
    ctx: JudgeContext,
    requirements: tuple[str, ...],
    expected: str,
) -> Verdict:
    """The verdict of a with-CDA rule when no mail carried a CDA (MSS-09, MSS-10)."""
    return none_seen(
        "a mail carrying an IHE_XDM.ZIP with a CDA document",
        messages,
        ctx,
        requirements=requirements,
        expected=expected,
        why_not="with an IHE_XDM.ZIP attachment",
    )


def _codes(value: str) -> list[str]:
    return [c.strip() for c in value.split(",") if c.strip()]


@guarded(REQ_CODECDA)
def judge_codecda_with_cda(messages: Sequence[ObservedMessage], ctx: JudgeContext) -> Verdict:
    """MSS-09, mails with CDA: X-MSS-CODECDA lists the ``code`` of each CDA of the XDM."""
    expected = "X-MSS-CODECDA: the CDA header code of each CDA of the IHE_XDM.ZIP, comma separated"
    with_cda, _without = _split_by_cda(messages)
    if not with_cda:
        return _no_mail_with_cda(messages, ctx, REQ_CODECDA, expected)

    def check(mail: MailView) -> list[Finding]:
        headers, names, failure = _cda_of(mail)
        if failure:
            return [failure]
        findings: list[Finding] = []
        no_code = [n for n, h in zip(names, headers, strict=True) if not h.document_code]
        if no_code:
            return [
                Finding(
                    mail,
                    False,
                    f"the CDA {', '.join(no_code)} of {mail.label} has no "
                    "code: X-MSS-CODECDA cannot be checked",
                    f"CDA without code in {mail.label}",
                )
            ]
        want = [h.document_code or "" for h in headers]
        want_text = ",".join(want)
        value = _single(mail, "X-MSS-CODECDA", findings)
        if findings:
            return findings
        if value is None:
            return [
                Finding(
                    mail,
                    False,
                    f"{mail.label} carries CDA ({want_text}) but no X-MSS-CODECDA header",
                    f"no X-MSS-CODECDA in {mail.label} (CDA codes: {want_text})",
                )
            ]
        got = _codes(value)
        if set(got) != set(want) or not got:
            return [
                Finding(
                    mail,
                    False,
                    f"{mail.label} has X-MSS-CODECDA {shown(value)!r}; "
                    f"its CDA codes are {want_text}",
                    f"X-MSS-CODECDA: {shown(value)} in {mail.label} (CDA codes: {want_text})",
                )
            ]
        return [
            Finding(
                mail,
                True,
                f"X-MSS-CODECDA: {value.strip()}",
                f"X-MSS-CODECDA: {shown(value)} in {mail.label}",
            )
        ]

    return conclude(
        judge_each(with_cda, check),
        requirements=REQ_CODECDA,
        expected=expected,
        passed="X-MSS-CODECDA lists the CDA codes of every mail carrying CDA",
    )


judge_codecda_without_cda = _absent_without_cda("X-MSS-CODECDA", REQ_CODECDA)
"""MSS-09, mails without CDA: no X-MSS-CODECDA header."""


# ---- MSS-10 X-MSS-INS --------------------------------------------------------------------
@guarded(REQ_INS)
def judge_ins_with_cda(messages: Sequence[ObservedMessage], ctx: JudgeContext) -> Verdict:
    """MSS-10, mails with CDA: X-MSS-INS is O with a qualified INS in the CDA, N otherwise."""
    expected = "X-MSS-INS: O when the CDA carries a qualified INS, N otherwise"
    with_cda, _without = _split_by_cda(messages)
    if not with_cda:
        return _no_mail_with_cda(messages, ctx, REQ_INS, expected)

    def check(mail: MailView) -> list[Finding]:
        headers, _names, failure = _cda_of(mail)
        if failure:
            return [failure]
        qualified = all(ins_is_qualified(h) for h in headers)
        want = "O" if qualified else "N"
        why = "a qualified INS" if qualified else "no qualified INS"
        ins = next((h for h in headers if h.ins_value), headers[0])
        cda_text = describe_ins(ins)
        findings: list[Finding] = []
        value = _single(mail, "X-MSS-INS", findings)
        if findings:
            return findings
        if value is None:
            return [
                Finding(
                    mail,
                    False,
                    f"{mail.label} carries CDA but no X-MSS-INS header "
                    f"(expected {want}: the CDA carries {why})",
                    f"no X-MSS-INS in {mail.label} (CDA: {cda_text})",
                )
            ]
        if value.strip() != want:
            return [
                Finding(
                    mail,
                    False,
                    f"{mail.label} has X-MSS-INS {shown(value)!r}, expected "
                    f"{want!r}: the CDA carries {why}",
                    f"X-MSS-INS: {shown(value)} in {mail.label} (CDA: {cda_text})",
                )
            ]
        return [
            Finding(
                mail,
                True,
                f"X-MSS-INS: {want}",
                f"X-MSS-INS: {want} in {mail.label} (CDA: {cda_text})",
            )
        ]

    return conclude(
        judge_each(with_cda, check),
        requirements=REQ_INS,
        expected=expected,
        passed="X-MSS-INS matches the INS of the CDA on every mail carrying CDA",
    )


judge_ins_without_cda = _absent_without_cda("X-MSS-INS", REQ_INS)
"""MSS-10, mails without CDA: no X-MSS-INS header."""


# ---- MSS-11 MESSAGE-FORMAT ---------------------------------------------------------------
def _alternative_problem(part: Message) -> str | None:
    kids = children(part)
    types = [k.get_content_type() for k in kids]
    if not kids:
        return "multipart/alternative without readable parts (missing boundary?)"
    if types[0] != "text/plain":
        return f"multipart/alternative starts with {types[0]}, not text/plain"
    if len(kids) != 2:
        return f"multipart/alternative holds {', '.join(types)}; expected text/plain then text/html"
    second = kids[1]
    if types[1] == "text/html":
        return None
    if types[1] == "multipart/related":
        inner = children(second)
        if inner and inner[0].get_content_type() == "text/html":
            return None
    return f"the second part of multipart/alternative is {types[1]}, not text/html"


def structure_problem(root: Message) -> str | None:
    """Why the Content-Type structure is not an allowed one, or None."""
    ctype = root.get_content_type()
    if ctype == "text/plain":
        return None
    if ctype == "multipart/alternative":
        return _alternative_problem(root)
    if ctype == "multipart/report":
        return None
    if ctype == "multipart/mixed":
        kids = children(root)
        if not kids:
            return "multipart/mixed without readable parts (missing boundary?)"
        first = kids[0]
        ftype = first.get_content_type()
        if ftype == "text/plain" and not is_attachment_part(first):
            return None
        if ftype == "multipart/alternative":
            return _alternative_problem(first)
        if ftype == "text/html":
            return "the body is text/html only (no text/plain part)"
        return f"the first part of multipart/mixed is {ftype}, not the text body"
    if ctype == "text/html":
        return "the body is text/html only (no text/plain part)"
    return f"the top-level Content-Type is {ctype}"


# titles written in full or abbreviated are the same word for the label comparison
_TITLE_ALIASES = {"docteur": "dr", "professeur": "pr", "monsieur": "m", "mr": "m", "madame": "mme"}


def _label_words(text: str) -> list[str]:
    words = [w for w in _LABEL_SPLIT.split(fold(text)) if w]
    return [_TITLE_ALIASES.get(w, w) for w in words]


def _is_subsequence(needle: list[str], hay: list[str]) -> bool:
    it = iter(hay)
    return all(any(w == h for h in it) for w in needle)


def label_problem(label: str | None, ctx: JudgeContext) -> tuple[str | None, str]:
    """(why the From display label is wrong or None, the expected label text)."""
    box = ctx.mailbox
    if box.type is MailboxType.PER or str(box.type) == "PER":
        words = _label_words(box.display_name)
        example = "_".join(box.display_name.split()) + f"_{box.entity}"
        want = (
            f"a From label with {' '.join(box.display_name.split())} in this order, "
            f"as [Title]_[First name]_[NAME]_[Entity] (e.g. {example!r})"
        )
        if not label or not label.strip():
            return "the From header has no display label", want
        if not _is_subsequence(words, _label_words(label)):
            return (
                f"the From label {label!r} does not contain the display name "
                f"{box.display_name!r} in the [Title]_[First name]_[NAME]_[Entity] order"
            ), want
        return None, want
    want = f"a From label equal to or containing the entity {box.entity!r}"
    if not label or not label.strip():
        return "the From header has no display label", want
    if fold(box.entity) not in fold(label):
        return f"the From label {label!r} does not contain the entity {box.entity!r}", want
    return None, want


@guarded(REQ_FORMAT)
def judge_message_format(messages: Sequence[ObservedMessage], ctx: JudgeContext) -> Verdict:
    """MSS-11: Message-ID, UTF-8 text, allowed Content-Type structure, sender label."""
    _problem, want_label = label_problem(None, ctx)
    expected = (
        "a well-formed Message-ID; text parts in UTF-8 with a declared charset; "
        "text/plain or multipart/alternative(text/plain, text/html), optionally in "
        f"multipart/mixed; {want_label}"
    )
    if not messages:
        return none_seen("a mail", messages, ctx, requirements=REQ_FORMAT, expected=expected)

    def check(mail: MailView) -> list[Finding]:
        assert mail.root is not None
        findings: list[Finding] = []
        # Message-ID (ECO 2.2.1)
        mids = mail.values("Message-ID")
        if not mids:
            findings.append(
                Finding(
                    mail, False, f"{mail.label} has no Message-ID", f"no Message-ID in {mail.label}"
                )
            )
        elif len(mids) > 1:
            _single(mail, "Message-ID", findings)
        elif not _MESSAGE_ID_RE.match(mids[0].strip()) or len(msg_ids(mids[0])) != 1:
            findings.append(
                Finding(
                    mail,
                    False,
                    f"{mail.label} has a malformed Message-ID {shown(mids[0])!r} "
                    "(expected <left@right>)",
                    f"Message-ID: {shown(mids[0])} in {mail.label}",
                )
            )
        # charsets (ECO 2.2.3)
        texts = mail.body_texts()
        for leaf in texts:
            problem = charset_problem(leaf)
            if problem:
                findings.append(
                    Finding(
                        mail,
                        False,
                        f"in {mail.label}: {problem}",
                        f"{leaf.content_type}; charset={leaf.charset or '(none)'} in {mail.label}",
                    )
                )
        # structure (ECO 2.2.4)
        problem = structure_problem(mail.root)
        if problem:
            findings.append(
                Finding(
                    mail, False, f"in {mail.label}: {problem}", f"{mail.structure} in {mail.label}"
                )
            )
        # sender label (ECO 2.2.7)
        label, address = mail.sender()
        if address is None:
            findings.append(
                Finding(
                    mail,
                    False,
                    f"{mail.label} has no readable From header",
                    f"From: {shown(mail.value('From'))} in {mail.label}",
                )
            )
        else:
            problem, _want = label_problem(label, ctx)
            if problem:
                findings.append(
                    Finding(
                        mail,
                        False,
                        f"in {mail.label}: {problem}",
                        f"From: {label or ''} <{address}> in {mail.label}",
                    )
                )
        if not any(not f.ok for f in findings):
            findings.append(
                Finding(
                    mail,
                    True,
                    "Message-ID, UTF-8, structure and label",
                    f"{mail.structure}, From label {label!r} in {mail.label}",
                )
            )
        return findings

    return conclude(
        judge_each([view(m) for m in messages], check),
        requirements=REQ_FORMAT,
        expected=expected,
        passed="every mail has a Message-ID, UTF-8 text, an allowed structure and sender label",
    )
