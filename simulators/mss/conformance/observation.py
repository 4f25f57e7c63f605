"""What one step of a run saw: recorder sessions, submitted mail and HTTP requests.

Everything is read back from the store (the recorder's rows and the submissions), in
the step's time window, so a verdict can always point at stored evidence.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from simulators.core.recorder import WireEvent, WireSession
from simulators.core.store.mail import Submission
from simulators.mss.conformance.catalogue import Step, UnitTest
from simulators.mss.conformance.observed import JudgeContext, ObservedMessage
from simulators.mss.services import MssServices

MAIL_PROTOCOLS = ("smtp", "imap")


@dataclass
class StepObservation:
    services: MssServices
    ctx: JudgeContext
    test: UnitTest
    step: Step
    submission_floor: int  # submissions with a larger ID belong to this step
    settle: float = 2.0  # seconds without activity before a person-driven step is judged
    marks: dict[str, Any] = field(default_factory=dict)  # what the runner did, and when
    client_exited: bool = False
    _messages: list[ObservedMessage] | None = None

    # ---- sessions -------------------------------------------------------------------------
    def sessions(self, protocol: str | None = None) -> list[WireSession]:
        """Sessions of the window. Sessions authenticated as another mailbox are left out;
        sessions that never authenticated count: they are the client's attempts."""
        bal = self.ctx.mailbox.address.lower()
        found = []
        for s in self.services.recorder.sessions(since=self.ctx.since, protocol=protocol):
            if s.started_at > self.ctx.until:
                continue
            if protocol is None and s.protocol not in MAIL_PROTOCOLS:
                continue
            user = s.get("auth_user")
            if user and str(user).lower() != bal:
                continue
            found.append(s)
        return found

    def http(self, path: str) -> list[WireSession]:
        return [
            s
            for s in self.services.recorder.sessions(since=self.ctx.since, protocol="http")
            if s.get("path") == path and s.started_at <= self.ctx.until
        ]

    def events(self, session: WireSession) -> list[WireEvent]:
        return self.services.recorder.events(session.id)

    def client_commands(self, session: WireSession) -> list[tuple[float, str]]:
        """The verbs the client sent, upper-cased, with their time (IMAP tags removed)."""
        verbs = []
        for ev in self.events(session):
            if ev.direction != "C" or not ev.data.strip():
                continue
            words = ev.data.split()
            if session.protocol == "imap" and len(words) > 1:
                verbs.append((ev.ts, words[1].upper()))
            else:
                verbs.append((ev.ts, words[0].upper()))
        return verbs

    def last_activity(self) -> float:
        latest = self.ctx.since
        for s in self.services.recorder.sessions(since=self.ctx.since):
            latest = max(latest, s.started_at, s.ended_at or s.started_at)
        for sub in self.submissions():
            latest = max(latest, sub.received_at)
        return latest

    def quiet(self) -> bool:
        return time.time() - self.last_activity() >= self.settle

    # ---- mail -----------------------------------------------------------------------------
    def submissions(self) -> list[Submission]:
        """Submission rows of the window (no message bytes: the waiting loop polls this)."""
        return [
            sub
            for sub in self.services.store.list_submissions(
                mailbox_id=self.ctx.mailbox.id, since_id=self.submission_floor
            )
            if sub.received_at <= self.ctx.until
        ]

    def messages(self) -> list[ObservedMessage]:
        """Mail the mailbox under test submitted in this step (cached once judged)."""
        if self._messages is not None:
            return self._messages
        store = self.services.store
        return [
            ObservedMessage(
                sub.id,
                sub.session_id,
                sub.received_at,
                sub.mail_from,
                tuple(sub.rcpt_to),
                store.blob(sub.blob_id),
            )
            for sub in self.submissions()
        ]

    def freeze(self) -> None:
        """End of the window: cache what was seen so that the judgement is stable."""
        self.ctx = JudgeContext(
            self.ctx.mailbox, self.ctx.nil, self.ctx.domain, self.ctx.since, time.time()
        )
        self._messages = None
        self._messages = self.messages()
