"""MSS-A4 APP-REPLY-TO: an APP mail names a human reply address and says it is automatic.

Rules chosen where the requirements leave room:

- ``Reply-To`` appears once and holds at least one address; every address must be a
  PER or ORG mailbox. With a ``mailbox_type`` lookup (address -> ``"PER"``, ``"ORG"``,
  ``"APP"`` or None when unknown) an unknown or APP address fails; without one, any
  address other than the APP mailbox under test is accepted. The APP mailbox itself
  always fails.
- The automatic-mail footer is searched in the body text (text/plain parts, and
  text/html parts as text; not in attachments), anywhere in it, ignoring case,
  accents and spacing. Accepted wordings (see ``FOOTER_PATTERNS``):
  French: "généré(e) automatiquement", "envoyé(e)/émis(e)/produit(e)/créé(e)/édité(e)
  automatiquement", the same verbs "de manière/de façon automatique", "(message |
  mail | courriel | e-mail | courrier) (électronique) automatique", "message
  automatisé"; English: "automatically generated/sent/created/produced",
  "generated/sent/created/produced automatically", "auto-generated", "automatic/
  automated (message | mail | e-mail | email | notification)".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from simulators.core.verdict import Verdict
from simulators.mss.conformance.checks.mail_parts import (
    Finding,
    MailView,
    addresses,
    body_text,
    conclude,
    fold,
    guarded,
    judge_each,
    none_seen,
    shown,
    view,
)
from simulators.mss.conformance.observed import JudgeContext, ObservedMessage

REQ_APP = ("SC.MSS/va1.09",)

_VERBS_FR = r"(?:genere|envoye|emis|produit|cree|edite)e?s?"
_VERBS_EN = r"(?:generated|sent|created|produced)"
FOOTER_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(rf"\b{_VERBS_FR} automatiquement\b"),
    re.compile(rf"\b{_VERBS_FR} de (?:maniere|facon) automatique\b"),
    re.compile(
        r"\b(?:message|mail|courriel|e-mail|email|courrier) (?:electronique )?automati(?:que|se)\b"
    ),
    re.compile(rf"\bautomatically {_VERBS_EN}\b"),
    re.compile(rf"\b{_VERBS_EN} automatically\b"),
    re.compile(r"\bauto-? ?generated\b"),
    re.compile(r"\bautomat(?:ic|ed) (?:message|mail|e-mail|email|notification)\b"),
)
FOOTER_EXPECTED = (
    "a footer saying the mail was generated automatically (e.g. 'Ce message a été "
    "généré automatiquement' or 'This message was automatically generated')"
)


def footer_found(text: str) -> str | None:
    """The accepted automatic-mail phrase found in the text, or None."""
    folded = fold(text)
    for pattern in FOOTER_PATTERNS:
        match = pattern.search(folded)
        if match:
            return match.group(0)
    return None


@guarded(REQ_APP)
def judge_app_reply_to(
    messages: Sequence[ObservedMessage],
    ctx: JudgeContext,
    *,
    mailbox_type: Callable[[str], str | None] | None = None,
) -> Verdict:
    """MSS-A4: Reply-To to a PER/ORG mailbox (not the APP one) and the automatic footer."""
    own = ctx.mailbox.address.lower()
    expected = f"Reply-To: a PER or ORG mailbox (not {ctx.mailbox.address}); " + FOOTER_EXPECTED
    if not messages:
        return none_seen("an APP mail", messages, ctx, requirements=REQ_APP, expected=expected)

    def reply_to_problem(addr: str) -> str | None:
        if addr.lower() == own:
            return f"Reply-To is the APP mailbox {ctx.mailbox.address} itself"
        if mailbox_type is None:
            return None
        try:
            kind = mailbox_type(addr)
        except Exception as exc:
            return f"the type of Reply-To {addr} cannot be looked up ({exc})"
        kind_text = str(kind).upper() if kind is not None else None
        if kind_text in ("PER", "ORG"):
            return None
        if kind_text is None:
            return f"Reply-To {addr} is not a known PER or ORG mailbox"
        return f"Reply-To {addr} is a {kind_text} mailbox, not a PER or ORG one"

    def check(mail: MailView) -> list[Finding]:
        findings: list[Finding] = []
        values = mail.values("Reply-To")
        if not values:
            findings.append(
                Finding(
                    mail, False, f"{mail.label} has no Reply-To", f"no Reply-To in {mail.label}"
                )
            )
        elif len(values) > 1:
            findings.append(
                Finding(
                    mail,
                    False,
                    f"{mail.label} carries Reply-To {len(values)} times",
                    f"Reply-To: {' | '.join(shown(v) for v in values)} in {mail.label}",
                )
            )
        else:
            addrs = [a for _label, a in addresses(values[0])]
            if not addrs:
                findings.append(
                    Finding(
                        mail,
                        False,
                        f"{mail.label} has a Reply-To without a readable address",
                        f"Reply-To: {shown(values[0])} in {mail.label}",
                    )
                )
            for addr in addrs:
                problem = reply_to_problem(addr)
                if problem:
                    findings.append(
                        Finding(
                            mail,
                            False,
                            f"in {mail.label}: {problem}",
                            f"Reply-To: {shown(values[0])} in {mail.label}",
                        )
                    )
        phrase = footer_found(body_text(mail))
        if phrase is None:
            findings.append(
                Finding(
                    mail,
                    False,
                    f"the body of {mail.label} has no footer saying the mail was generated "
                    "automatically",
                    f"no automatic-mail footer in the body of {mail.label}",
                )
            )
        if not any(not f.ok for f in findings):
            findings.append(
                Finding(
                    mail,
                    True,
                    "Reply-To and automatic-mail footer",
                    f"Reply-To: {shown(values[0])}, footer '{phrase}' in {mail.label}",
                )
            )
        return findings

    return conclude(
        judge_each([view(m) for m in messages], check),
        requirements=REQ_APP,
        expected=expected,
        passed="every APP mail has a PER/ORG Reply-To and the automatic-mail footer",
    )
