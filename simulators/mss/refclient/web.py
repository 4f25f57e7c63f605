"""Small HTTP(S) helpers on http.client: no proxy, and an explicit connect address.

The connect address matters for autoconfig: the client reaches ``$SEGUR_SIM_HOST``
but speaks to ``autoconfig.<domain>`` (SNI, Host header and certificate name), like
``curl --resolve``.

A :class:`Session` keeps one connection per server open between requests (HTTP/1.1
keep-alive), as browsers and HTTP libraries do: the PSC token endpoint and the mailbox
directory share one TLS handshake.
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


Response = tuple[int, dict[str, str], bytes]
_Key = tuple[str, str, int, str | None]


def _connection(
    url: str, context: ssl.SSLContext | None, connect_to: str | None, timeout: float
) -> tuple[_Key, str, http.client.HTTPConnection]:
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
        port = parts.port or 80
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    return (parts.scheme, host, port, connect_to), path, conn


def _exchange(
    conn: http.client.HTTPConnection, method: str, path: str, form: dict[str, str] | None
) -> tuple[Response, bool]:
    """One request on ``conn``: the response, and whether the connection may be reused."""
    headers = {"User-Agent": "segur-sim-refclient (SIMULATION)", "Accept": "*/*"}
    body = None
    if form is not None:
        body = urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    result = (response.status, {k.lower(): v for k, v in response.getheaders()}, data)
    return result, not response.will_close


def request(
    method: str,
    url: str,
    *,
    context: ssl.SSLContext | None = None,
    form: dict[str, str] | None = None,
    connect_to: str | None = None,
    timeout: float = 15.0,
) -> Response:
    """One request on a new connection; returns (status, headers, body). ``form`` posts
    urlencoded data."""
    _key, path, conn = _connection(url, context, connect_to, timeout)
    try:
        return _exchange(conn, method, path, form)[0]
    finally:
        conn.close()


class Session:
    """Requests that reuse one open connection per server (closed by :meth:`close`)."""

    def __init__(self) -> None:
        self._open: dict[_Key, http.client.HTTPConnection] = {}

    def request(
        self,
        method: str,
        url: str,
        *,
        context: ssl.SSLContext | None = None,
        form: dict[str, str] | None = None,
        connect_to: str | None = None,
        timeout: float = 15.0,
    ) -> Response:
        key, path, fresh = _connection(url, context, connect_to, timeout)
        kept = self._open.pop(key, None)
        if kept is not None:
            fresh.close()
            try:
                result, reusable = _exchange(kept, method, path, form)
            except (OSError, http.client.HTTPException):
                # the server closed the idle connection: once more on a new one
                kept.close()
                key, path, fresh = _connection(url, context, connect_to, timeout)
            else:
                self._keep(key, kept, reusable)
                return result
        try:
            result, reusable = _exchange(fresh, method, path, form)
        except BaseException:
            fresh.close()
            raise
        self._keep(key, fresh, reusable)
        return result

    def _keep(self, key: _Key, conn: http.client.HTTPConnection, reusable: bool) -> None:
        if reusable:
            self._open[key] = conn
        else:
            conn.close()

    def close(self) -> None:
        for conn in self._open.values():
            conn.close()
        self._open.clear()


def http_get(url: str, *, timeout: float = 15.0) -> tuple[int, dict[str, str], bytes]:
    return request("GET", url, timeout=timeout)
