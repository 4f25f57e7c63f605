"""``keep-session-open`` (CONF.10, CONF.11): an IMAP and an SMTP session kept alive
until SIGTERM.

- Every ``keepalive`` seconds: IMAP NOOP and SMTP NOOP.
- The PSC access token is refreshed when half of its life is gone.
- The server closes a session while PSC still works: refresh (a fresh access token,
  and proof the PSC session is alive), then reconnect, without human action.
- The refresh is refused (``invalid_grant``): LOGOUT and QUIT, exit 0, no reconnection.

SIGTERM (per-step driver) or a stop message (``--serve``, ``client.stop``) ends it.
"""

from __future__ import annotations

import imaplib
import logging
import signal
import smtplib
import time
from types import FrameType

from simulators.mss.refclient import imap as imap_client
from simulators.mss.refclient import smtp as smtp_client
from simulators.mss.refclient.client import EXIT_FAILED, EXIT_OK, RefClient
from simulators.mss.refclient.tokens import PscError, RefreshRefused

log = logging.getLogger("refclient")


class SessionKeeper:
    def __init__(self, client: RefClient) -> None:
        self.client = client
        self.imap: imaplib.IMAP4 | None = None
        self.smtp: smtplib.SMTP | None = None

    @property
    def stopping(self) -> bool:
        return self.client.stop.is_set()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: closing the sessions", signum)
        self.client.stop.set()

    def run(self) -> int:
        previous = [
            signal.signal(signal.SIGTERM, self._on_signal),
            signal.signal(signal.SIGINT, self._on_signal),
        ]
        try:
            self._open_missing()
            return self._loop()
        finally:
            self.close()
            for sig, handler in zip((signal.SIGTERM, signal.SIGINT), previous, strict=True):
                if handler is not None:
                    signal.signal(sig, handler)

    # ---- loop -----------------------------------------------------------------------
    def _loop(self) -> int:
        period = self.client.cfg.keepalive
        while not self._sleep(period):
            if not self.client.cfg.is_app and not self._token_still_valid():
                return EXIT_OK
            dropped = self._noop()
            if not dropped:
                continue
            if self.client.faults.on("no-reconnect"):
                log.warning("%s closed by the server: not reconnecting", " and ".join(dropped))
                return EXIT_FAILED
            log.info("%s closed by the server: reconnecting", " and ".join(dropped))
            if not self.client.cfg.is_app:
                try:
                    self.client.tokens.refresh()  # a fresh token for the new sessions
                except RefreshRefused as exc:
                    log.info("PSC session ended (%s): not reconnecting", exc)
                    return EXIT_OK
            self._open_missing()
        return EXIT_OK

    def _sleep(self, seconds: float) -> bool:
        """Sleep in small steps so SIGTERM is handled at once; True when stopping."""
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            self.client.stop.wait(min(0.05, max(0.0, deadline - time.monotonic())))
        return self.stopping

    def _token_still_valid(self) -> bool:
        """Refresh when due. False when the PSC session ended and we must stop."""
        tokens = self.client.tokens
        if not tokens.due():
            return True
        try:
            tokens.refresh()
            return True
        except RefreshRefused as exc:
            if self.client.faults.on("ignore-revocation"):
                # MSS-18 fault: keep the sessions, log in again behind the user's back,
                # and go on reconnecting whenever the server closes a session.
                log.warning("refresh refused (%s): ignored, keeping the sessions", exc)
                tokens.login()
                return True
            log.info("refresh refused (%s): closing the IMAP and SMTP sessions", exc)
            return False
        except PscError as exc:
            log.warning("PSC unreachable (%s): keeping the sessions, retrying later", exc)
            return True

    def _noop(self) -> list[str]:
        """NOOP both sessions; the names of those the server closed."""
        dropped = []
        if self.imap is not None:
            try:
                typ, _ = self.imap.noop()
                if typ != "OK":
                    raise imaplib.IMAP4.abort(f"NOOP answered {typ}")
            except (imaplib.IMAP4.error, OSError) as exc:
                log.info("IMAP session lost: %s", exc)
                imap_client.logout_quietly(self.imap)
                self.imap = None
                dropped.append("IMAP")
        if self.smtp is not None:
            try:
                code, _ = self.smtp.noop()
                if code != 250:
                    raise smtplib.SMTPServerDisconnected(f"NOOP answered {code}")
            except (smtplib.SMTPException, OSError) as exc:
                log.info("SMTP session lost: %s", exc)
                smtp_client.quit_quietly(self.smtp)
                self.smtp = None
                dropped.append("SMTP")
        return dropped

    # ---- sessions -------------------------------------------------------------------
    def _open_missing(self) -> None:
        if self.imap is None:
            self.imap = imap_client.open_session(self.client)
            self.imap.select("INBOX")
        if self.smtp is None:
            self.smtp = smtp_client.open_session(self.client)
        log.info("IMAP and SMTP sessions open")

    def close(self) -> None:
        if self.imap is not None:
            imap_client.logout_quietly(self.imap)  # LOGOUT
            self.imap = None
        if self.smtp is not None:
            smtp_client.quit_quietly(self.smtp)  # QUIT
            self.smtp = None


def run(client: RefClient) -> int:
    try:
        return SessionKeeper(client).run()
    except RefreshRefused as exc:  # refused while (re)opening: nothing left to close
        log.info("PSC session ended (%s)", exc)
        return EXIT_OK
