"""One SMTP listening socket (STARTTLS or implicit TLS) and its live sessions."""

from __future__ import annotations

import asyncio
import ssl
from typing import TYPE_CHECKING

from simulators.mss.smtp.handler import DeliveryHandler
from simulators.mss.smtp.server import MssSMTP, SmtpPolicy
from simulators.mss.tlsaccept import ImplicitTlsServer, record_refused_handshake

if TYPE_CHECKING:
    from simulators.mss.services import MssServices


class SmtpListener:
    def __init__(
        self,
        services: MssServices,
        *,
        endpoint: str,
        implicit_tls: bool,
        ssl_context: ssl.SSLContext,
    ) -> None:
        self.services = services
        self.endpoint = endpoint
        self.implicit_tls = implicit_tls
        self.ssl_context = ssl_context
        self.hostname = f"smtp.{services.domain}"
        self.handler = DeliveryHandler(services, self.hostname)
        self.sessions: set[MssSMTP] = set()
        self.server: asyncio.Server | ImplicitTlsServer | None = None
        auth = services.auth
        self.policy = SmtpPolicy(
            open_record=lambda peer: services.recorder.open_session("smtp", endpoint, peer),
            authenticate_xoauth2=auth.xoauth2,
            authenticate_plain=auth.plain,
            pause_before_failure=auth.pause_before_failure,
            auth_succeeded=auth.throttle.succeeded,
            on_session_start=self.sessions.add,
            on_session_end=self.sessions.discard,
        )

    def _protocol(self) -> MssSMTP:
        settings = self.services.settings
        return MssSMTP(
            self.handler,
            policy=self.policy,
            ssl_context=self.ssl_context,
            implicit_tls=self.implicit_tls,
            hostname=self.hostname,
            data_size_limit=settings.max_message_size,
            timeout=settings.smtp_timeout,
        )

    async def start(self, host: str, port: int) -> int:
        if self.implicit_tls:
            implicit = ImplicitTlsServer(
                self._protocol,
                lambda: self.ssl_context,
                on_handshake_failed=self._handshake_failed,
                handshake_timeout=float(self.services.settings.smtp_timeout),
            )
            self.server = implicit
            return await implicit.start(host, port)
        loop = asyncio.get_running_loop()
        server = await loop.create_server(self._protocol, host, port, reuse_address=True)
        self.server = server
        return int(server.sockets[0].getsockname()[1])

    def _handshake_failed(self, peer: tuple[object, ...] | None, exc: BaseException) -> None:
        record = self.services.recorder.open_session("smtp", self.endpoint, peer)
        record_refused_handshake(record, exc)

    async def stop(self) -> None:
        server = self.server
        if server is None:
            return
        if isinstance(server, ImplicitTlsServer):
            await server.close()
        else:
            server.close()
        for session in list(self.sessions):
            session.drop("server-shutdown")
        if isinstance(server, asyncio.Server):
            await server.wait_closed()

    def drop_sessions(self, mailbox_address: str | None = None, reason: str = "server-drop") -> int:
        """Close live sessions (of one mailbox, or all) from the server side."""
        count = 0
        for session in list(self.sessions):
            if mailbox_address is None or (
                session.mailbox is not None
                and session.mailbox.address.lower() == mailbox_address.lower()
            ):
                session.drop(reason)
                count += 1
        return count
