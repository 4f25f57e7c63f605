"""Implicit-TLS listeners (SMTPS 465, IMAPS 993) that see every handshake, failed ones too.

``loop.create_server(ssl=...)`` would do the handshake, but a failed one is invisible to
the application: the conformance tests must record a client that refuses our certificate
or offers only TLS 1.1. Upgrading a plain connection from inside the protocol
(``start_tls`` after accept) sees failures but races the client's ClientHello against the
protocol's first read, which some event loops (uvloop) lose. So we accept ourselves and
hand each socket to ``loop.connect_accepted_socket(ssl=...)``: the loop's own TLS
transport, no race, and the handshake error comes back to us with the peer address.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from simulators.mss.tlsinfo import record_tls_failure

if TYPE_CHECKING:
    from simulators.core.recorder import SessionRecord

log = logging.getLogger("segur_sim.tls")

HandshakeFailed = Callable[[tuple[Any, ...] | None, BaseException], None]


def set_nodelay(sock: socket.socket | None) -> None:
    """Replies go out at once (Nagle would hold a command's answer ~40 ms on loopback)."""
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def record_refused_handshake(record: SessionRecord, exc: BaseException) -> None:
    """Close ``record`` as a session whose TLS handshake failed, saying why."""
    record_tls_failure(record, exc)
    record.set(close_reason="tls-handshake-failed")
    record.close("tls-handshake-failed")


class ImplicitTlsServer:
    """Accept connections and run the TLS handshake before the protocol sees any byte.

    ``ssl_context`` is asked for each connection: the conformance runner switches the
    server's certificate and TLS versions between steps (``set_tls_profile``).
    """

    def __init__(
        self,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        ssl_context: Callable[[], ssl.SSLContext],
        *,
        on_handshake_failed: HandshakeFailed,
        handshake_timeout: float = 30.0,
        backlog: int = 512,
    ) -> None:
        self.protocol_factory = protocol_factory
        self.ssl_context = ssl_context
        self.on_handshake_failed = on_handshake_failed
        self.handshake_timeout = handshake_timeout
        self.backlog = backlog
        self.sockets: list[socket.socket] = []
        self._accepting: asyncio.Task[None] | None = None
        self._handshakes: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> int:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((host, port))
            listener.listen(self.backlog)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        self.sockets = [listener]
        self._accepting = asyncio.get_running_loop().create_task(self._accept_loop(listener))
        return int(listener.getsockname()[1])

    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, peer = await loop.sock_accept(listener)
            except asyncio.CancelledError:
                raise
            except OSError as exc:  # EMFILE and the like: keep serving the others
                log.warning("accept failed: %s", exc)
                await asyncio.sleep(0.05)
                continue
            task = loop.create_task(self._handshake(conn, peer))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    async def _handshake(self, conn: socket.socket, peer: Any) -> None:
        set_nodelay(conn)
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(
                self.protocol_factory,
                conn,
                ssl=self.ssl_context(),
                ssl_handshake_timeout=self.handshake_timeout,
            )
        except asyncio.CancelledError:
            conn.close()
            raise
        except Exception as exc:  # ssl.SSLError, reset, timeout: all are the client's
            conn.close()
            self.on_handshake_failed(tuple(peer) if peer else None, exc)

    async def close(self) -> None:
        """Stop accepting; abandon handshakes still in progress."""
        tasks = [t for t in (self._accepting, *self._handshakes) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for listener in self.sockets:
            listener.close()
        self.sockets = []
