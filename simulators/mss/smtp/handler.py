"""What the simulated operator does with a submission: checks, then durable storage."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from typing import TYPE_CHECKING, Any

from simulators.core.store.mail import NewSubmission
from simulators.mss.smtp.engine import SmtpEnvelope as Envelope
from simulators.mss.smtp.engine import SmtpSession as Session
from simulators.mss.smtp.server import MssSMTP

if TYPE_CHECKING:
    from simulators.mss.services import MssServices

log = logging.getLogger("segur_sim.smtp")

MAX_RECIPIENTS = 100
# Below this size the MIME analysis (tens of microseconds) costs less than a hop to a
# worker thread and back; above it, it runs in a thread so the loop keeps serving.
INLINE_ANALYSIS_BYTES = 32 * 1024


def _analyse(raw: bytes) -> dict[str, Any] | None:
    """Envelope/body structure for IMAP, computed once at storage time."""
    try:
        from simulators.mss.mime import analyse_message
    except ImportError:  # the IMAP side computes it lazily then
        return None
    try:
        return analyse_message(raw)
    except Exception:
        log.exception("analyse_message failed; IMAP will compute the metadata lazily")
        return None


_date_cache: tuple[int, str] = (0, "")


def _rfc5322_now() -> str:
    """``formatdate`` for the Received header, computed once per second."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, email.utils.formatdate(now, localtime=False))
    return _date_cache[1]


def _valid_utf8(address: str) -> bool:
    """Non-UTF-8 octets arrive as lone surrogates, which nothing can encode."""
    try:
        address.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class DeliveryHandler:
    """The engine's handler: MAIL and RCPT decide at once, DATA stores durably."""

    def __init__(self, services: MssServices, hostname: str) -> None:
        self.services = services
        self.hostname = hostname

    def handle_MAIL(
        self,
        server: MssSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if not _valid_utf8(address):
            return "553 5.1.7 Sender address is not valid UTF-8"
        mailbox = server.mailbox
        if mailbox is not None and address.lower() != mailbox.address.lower():
            return (
                f"553 5.7.1 Sender <{address}> is not the authenticated mailbox <{mailbox.address}>"
            )
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        # A message is likely to follow: the store's group commit may wait for it.
        envelope.hold(self.services.store.expect_write())
        return "250 2.1.0 Sender OK"

    def handle_RCPT(
        self,
        server: MssSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        if not _valid_utf8(address):
            return "553 5.1.3 Recipient address is not valid UTF-8"
        if "@" not in address:
            return f"550 5.1.3 <{address}>: not a mailbox address"
        domain = address.rsplit("@", 1)[1]
        store = self.services.store
        if store.is_local_domain(domain) and not store.mailbox_exists(address):
            return f"550 5.1.1 <{address}>: no such test mailbox in {domain}"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Recipient OK"

    async def handle_DATA(self, server: MssSMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.content or b""
        received = self._received_header(server, session)
        raw = received + content
        if len(raw) <= INLINE_ANALYSIS_BYTES:
            meta = _analyse(raw)
        else:
            meta = await asyncio.get_running_loop().run_in_executor(None, _analyse, raw)
        record = server.record
        envelope.release()  # our write is queued next: the batch need not wait for it
        submission = await self.services.store.accept_submission(
            NewSubmission(
                session_id=record.id if record else None,
                mailbox_id=server.mailbox.id if server.mailbox else None,
                mail_from=envelope.mail_from or "",
                rcpt_to=list(envelope.rcpt_tos),
                raw=raw,
                meta=meta,
            )
        )
        if record is not None:
            record.note(
                f"stored submission {submission.id}: {len(submission.local_rcpts)} local, "
                f"{len(submission.outbound_rcpts)} outbound recipient(s)"
            )
        return f"250 2.0.0 OK: queued as {submission.id}"

    def _received_header(self, server: MssSMTP, session: Session) -> bytes:
        peer = session.peer[0] if session.peer else "unknown"
        tls = ""
        obj = server._ssl_object()
        if obj is not None:
            tls = f"\r\n\t(using {obj.version()} with cipher {(obj.cipher() or ('?',))[0]})"
        who = f"\r\n\t(authenticated as {server.mailbox.address})" if server.mailbox else ""
        line = (
            f"Received: from {session.host_name or 'unknown'} ([{peer}])\r\n"
            f"\tby {self.hostname} (segur-sim SIMULATION) with ESMTPSA{tls}{who};\r\n"
            f"\t{_rfc5322_now()}\r\n"
        )
        return line.encode("utf-8", "replace")

    async def handle_exception(self, error: Exception) -> str:
        # Storage or unexpected failures: a temporary error, so nothing is lost silently.
        log.warning("SMTP session error: %r", error)
        return f"451 4.3.0 Local error in the simulator ({type(error).__name__}); try again"
