"""What every action shares: configuration, fault switch, TLS policy, PSC tokens,
mailbox identity, and the authentication back-off (CONF.08: no retry storm)."""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from functools import cached_property
from typing import TypeVar

from simulators.mss.refclient.config import ClientConfig
from simulators.mss.refclient.faults import FaultSwitch
from simulators.mss.refclient.identity import (
    ClientCertificate,
    MailboxInfo,
    fetch_mailbox_info,
    sender_label,
)
from simulators.mss.refclient.tls import ServerRefused, TlsPolicy
from simulators.mss.refclient.tokens import PscError, PscTokens, RefreshRefused
from simulators.mss.refclient.web import Session

log = logging.getLogger("refclient")
T = TypeVar("T")

# Exit codes (the runner keeps them as evidence; they do not decide verdicts)
EXIT_OK = 0
EXIT_FAILED = 1  # the action could not be done (nothing to reply to, mail refused...)
EXIT_SERVER_REFUSED = 2  # TLS parameters or server certificate refused: aborted
EXIT_AUTH_REFUSED = 3  # authentication refused, gave up after the back-off
EXIT_CONFIG = 4  # missing or malformed driver variables
EXIT_PSC = 5  # PSC token endpoint unusable

MAX_AUTH_ATTEMPTS = 3
STORM_ATTEMPTS = 20  # the retry-storm variant


class AuthRefused(Exception):
    """The server refused the authentication (a retry may help: new token, later)."""


class GiveUp(Exception):
    """Stop the action with an exit code and a message for the log."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


class RefClient:
    def __init__(self, cfg: ClientConfig, stop: threading.Event | None = None) -> None:
        self.cfg = cfg
        self.stop = stop or threading.Event()  # set: end keep-session-open now
        self.faults = FaultSwitch(cfg.fault)
        self.tls = TlsPolicy(cfg, self.faults)
        self.http = Session()  # PSC and the directory share one HTTPS connection
        self.tokens = PscTokens(cfg, self.https_context, self.http)
        self.certificate = ClientCertificate(cfg, self.faults, lambda: self.info.entity)
        self._https: ssl.SSLContext | None = None

    def close(self) -> None:
        self.http.close()
        self.certificate.close()

    # ---- TLS ------------------------------------------------------------------------
    def mail_contexts(self) -> list[ssl.SSLContext]:
        """Contexts for SMTP/IMAP: with the ORG AUTH_CLI certificate for APP mailboxes."""
        return self.tls.contexts(self.certificate.paths())

    def https_context(self) -> ssl.SSLContext:
        """HTTPS (PSC, directory, autoconfig): same trust and revocation rules."""
        if self._https is None:
            self._https = self.tls.strict()
        return self._https

    # ---- identity -------------------------------------------------------------------
    @cached_property
    def info(self) -> MailboxInfo:
        return fetch_mailbox_info(self.cfg, self.https_context, self.http)

    @property
    def label(self) -> str:
        return sender_label(self.info, self.cfg.bal_type)

    def bearer(self) -> str:
        try:
            return self.tokens.access_token()
        except RefreshRefused:
            raise
        except PscError as exc:
            raise GiveUp(str(exc), EXIT_PSC) from exc

    # ---- back-off -------------------------------------------------------------------
    def with_backoff(self, what: str, attempt: Callable[[], T]) -> T:
        """Run ``attempt`` (connect + authenticate); on refusal wait, with growing
        delays, at most MAX_AUTH_ATTEMPTS times. TLS refusals are never retried."""
        storm = self.faults.on("retry-storm")
        attempts = STORM_ATTEMPTS if storm else MAX_AUTH_ATTEMPTS
        delay = 0.0 if storm else self.cfg.backoff
        for number in range(1, attempts + 1):
            try:
                return attempt()
            except ServerRefused:
                raise
            except (AuthRefused, OSError) as exc:
                if number == attempts:
                    code = EXIT_AUTH_REFUSED if isinstance(exc, AuthRefused) else EXIT_FAILED
                    raise GiveUp(f"{what}: giving up after {number} attempts: {exc}", code) from exc
                log.warning("%s: attempt %d failed (%s); retry in %.1fs", what, number, exc, delay)
                time.sleep(delay)
                delay *= 2
                if isinstance(exc, AuthRefused) and not self.cfg.is_app:
                    self._fresh_token()
        raise AssertionError("unreachable")

    def _fresh_token(self) -> None:
        # The refused token may be stale: the next attempt gets a new one.
        try:
            self.tokens.refresh()
        except RefreshRefused as exc:
            raise GiveUp(f"PSC session ended ({exc}): not retrying", EXIT_AUTH_REFUSED) from exc
        except PscError as exc:
            raise GiveUp(str(exc), EXIT_PSC) from exc
