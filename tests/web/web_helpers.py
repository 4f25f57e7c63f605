"""Helpers of the web tests (a uniquely named module: test dirs are on sys.path)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from simulators.mss.services import MssServices
from simulators.web.app import create_app

REPO = Path(__file__).resolve().parents[2]
CDA_FIXTURE = REPO / "fixtures" / "cda" / "segur-sim_CR-BIO_2024.01.xml"
DOMAIN = "mssante.localhost"
CONSOLE_URL = "https://127.0.0.1:10443/"
_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def fake_endpoints() -> dict[str, Any]:
    return {"console_url": CONSOLE_URL, "domain": DOMAIN, "endpoints": {}}


def build_app(services: MssServices, **kwargs: Any) -> FastAPI:
    return create_app(services, fake_endpoints, **kwargs)


class Console:
    """A TestClient on the HTTPS scheme that knows the console's CSRF token."""

    def __init__(self, app: FastAPI) -> None:
        self.http = TestClient(app, base_url="https://testserver")
        self._token: str | None = None

    @property
    def token(self) -> str:
        if self._token is None:
            page = self.http.get("/mailboxes")
            match = _TOKEN.search(page.text)
            assert match, "no CSRF token on the console page"
            self._token = match.group(1)
        return self._token

    def post_form(self, url: str, data: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        fields = {"csrf_token": self.token, **(data or {})}
        return self.http.post(url, data=fields, **kwargs)
