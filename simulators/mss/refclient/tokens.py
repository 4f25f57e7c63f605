"""PSC tokens of a PER/ORG mailbox, as the LPS holds them: in memory only.

CONF.28: the access token is never stored permanently, so nothing here touches the
disk. The access token is refreshed (grant_type=refresh_token) once half of its
lifetime has passed; a refused refresh (``invalid_grant``) means the PSC session is
over, which keep-session-open turns into closing its mail sessions (CONF.10).
"""

from __future__ import annotations

import json
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

from simulators.mss.refclient.config import ClientConfig
from simulators.mss.refclient.web import Session, request

log = logging.getLogger("refclient")


class PscError(Exception):
    """The token endpoint could not be used (network, TLS, unexpected answer)."""


class RefreshRefused(PscError):
    """The refresh token no longer works (``invalid_grant``): the PSC session ended."""


@dataclass
class _Tokens:
    access: str
    refresh: str | None
    expires_in: float
    obtained: float  # time.monotonic()


class PscTokens:
    def __init__(
        self,
        cfg: ClientConfig,
        context: Callable[[], ssl.SSLContext],
        session: Session | None = None,
    ) -> None:
        self.cfg = cfg
        self._context = context
        self._request = session.request if session is not None else request
        self._tokens: _Tokens | None = None

    def _post(self, form: dict[str, str]) -> dict[str, object]:
        if not self.cfg.psc_token_endpoint:
            raise PscError("no PSC token endpoint (SEGUR_SIM_PSC_TOKEN_ENDPOINT)")
        try:
            status, _h, body = self._request(
                "POST",
                self.cfg.psc_token_endpoint,
                context=self._context(),
                form=form,
                timeout=self.cfg.timeout,
            )
        except (OSError, ssl.SSLError) as exc:
            raise PscError(f"PSC token endpoint unreachable: {exc}") from exc
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise PscError(f"PSC answered HTTP {status} without JSON") from exc
        if status != 200 or not isinstance(data, dict) or "access_token" not in data:
            error = data.get("error") if isinstance(data, dict) else None
            text = data.get("error_description") if isinstance(data, dict) else None
            if error == "invalid_grant" and form.get("grant_type") == "refresh_token":
                raise RefreshRefused(f"refresh refused: {text or error}")
            raise PscError(f"PSC refused the request (HTTP {status}): {error}: {text}")
        return data

    def _keep(self, data: dict[str, object]) -> None:
        refresh = data.get("refresh_token")
        old = self._tokens.refresh if self._tokens else None
        self._tokens = _Tokens(
            access=str(data["access_token"]),
            refresh=str(refresh) if refresh else old,
            expires_in=float(str(data.get("expires_in", 300))),
            obtained=time.monotonic(),
        )

    def login(self) -> None:
        """The CPS/e-CPS login stand-in: the simulator's test-login grant."""
        self._keep(
            self._post({"grant_type": self.cfg.psc_test_login_grant, "mailbox": self.cfg.bal})
        )
        log.info("PSC: logged in as %s (token valid %ds)", self.cfg.bal, self.expires_in)

    def refresh(self) -> None:
        if self._tokens is None or not self._tokens.refresh:
            self.login()
            return
        self._keep(
            self._post({"grant_type": "refresh_token", "refresh_token": self._tokens.refresh})
        )
        log.info("PSC: access token refreshed")

    @property
    def expires_in(self) -> int:
        return int(self._tokens.expires_in) if self._tokens else 0

    def age(self) -> float:
        return time.monotonic() - self._tokens.obtained if self._tokens else float("inf")

    def due(self) -> bool:
        """Half of the lifetime gone (or the optional SEGUR_SIM_REFCLIENT_REFRESH_EVERY)."""
        if self._tokens is None:
            return True
        limit = self._tokens.expires_in / 2
        if self.cfg.refresh_every is not None:
            limit = min(limit, self.cfg.refresh_every)
        return self.age() >= limit

    def access_token(self) -> str:
        """A usable access token: logs in the first time, refreshes when due."""
        if self._tokens is None:
            self.login()
        elif self.due():
            self.refresh()
        assert self._tokens is not None
        return self._tokens.access

    def current(self) -> str | None:
        """The token held now, even if old (the ignore-revocation variant reuses it)."""
        return self._tokens.access if self._tokens else None
