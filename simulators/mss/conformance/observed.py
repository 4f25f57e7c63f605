"""What the checks look at: messages the software under test submitted, in a window."""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass, field
from email.message import EmailMessage
from functools import cached_property

from simulators.core.store.mail import Mailbox


@dataclass(frozen=True)
class JudgeContext:
    """The run parameters a check judges against."""

    mailbox: Mailbox  # the BAL under test
    nil: str  # the product reference declared for the run (X-MSS-NIL)
    domain: str  # the simulated MSSanté domain
    since: float = 0.0  # the observation window (epoch seconds)
    until: float = float("inf")


@dataclass(frozen=True)
class ObservedMessage:
    """One mail the SMTP server accepted (250) from the software under test."""

    submission_id: int
    session_id: str | None
    received_at: float
    mail_from: str
    rcpt_to: tuple[str, ...]
    raw: bytes = field(repr=False)

    @cached_property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed

    @property
    def ref(self) -> str:
        """The evidence reference of this message."""
        return f"submission-{self.submission_id}"

    @property
    def label(self) -> str:
        """How a failure message names this mail: its Message-ID or its submission."""
        mid = self.message.get("Message-ID")
        return f"mail {mid}" if mid else f"mail #{self.submission_id} (no Message-ID)"
