"""Small HTTP(S) helpers on http.client: no proxy, and an explicit connect address.

The connect address matters for autoconfig: the client reaches ``$SEGUR_SIM_HOST``
but speaks to ``autoconfig.<domain>`` (SNI, Host header and certificate name), like
``curl --resolve``.
"""

from __future__ import annotations

import http.client
import socket
import ssl
from urllib.parse import urlencode, urlsplit


class _ResolvedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to ``host`` (SNI, Host, certificate check) over a socket to ``address``."""

    def __init__(
        self, host: str, port: int, *, address: str, context: ssl.SSLContext, timeout: float
    ) -> None:
        super().__init__(host, port, context=context, timeout=timeout)
        self._address = address
        self._ctx = context

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._ctx.wrap_socket(sock, server_hostname=self.host)


def request(
    method: str,
    url: str,
    *,
    context: ssl.SSLContext | None = None,
    form: dict[str, str] | None = None,
    connect_to: str | None = None,
    timeout: float = 15.0,
) -> tuple[int, dict[str, str], bytes]:
    """One request; returns (status, headers, body). ``form`` posts urlencoded data."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        if context is None:
            raise ValueError("an HTTPS request needs the client TLS context")
        port = parts.port or 443
        if connect_to:
            conn = _ResolvedHTTPSConnection(
                host, port, address=connect_to, context=context, timeout=timeout
            )
        else:
            conn = http.client.HTTPSConnection(host, port, context=context, timeout=timeout)
    else:
        conn = http.client.HTTPConnection(host, parts.port or 80, timeout=timeout)
    headers = {"User-Agent": "segur-sim-refclient (SIMULATION)", "Accept": "*/*"}
    body = None
    if form is not None:
        body = urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data
    finally:
        conn.close()


def http_get(url: str, *, timeout: float = 15.0) -> tuple[int, dict[str, str], bytes]:
    return request("GET", url, timeout=timeout)
