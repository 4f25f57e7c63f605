"""The IMAP listeners (STARTTLS on 143, implicit TLS on 993) and their live sessions.

Why our own server rather than pymap: pymap is dormant, about 12x slower than
Dovecot on our scripted session, treats a loopback client as secure (it offers AUTH
before STARTTLS on 127.0.0.1, hiding exactly the clear-text logins we must catch),
drops custom keywords such as ``$MSSanteRead`` and has no implicit-TLS listener.

Every listener of one :class:`MssServices` shares an :class:`ImapSessionRegistry`,
so the fault hooks (``drop_sessions``) reach the sessions of both ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from simulators.core.store.mail import FolderStatus
from simulators.mss.imap.connection import LINE_LIMIT, ImapConnection
from simulators.mss.imap.session import ImapSession
from simulators.mss.tlsaccept import ImplicitTlsServer, record_refused_handshake

if TYPE_CHECKING:
    from simulators.mss.services import MssServices

log = logging.getLogger("segur_sim.imap")

_REGISTRIES: weakref.WeakKeyDictionary[object, ImapSessionRegistry] = weakref.WeakKeyDictionary()


class ImapSessionRegistry:
    """Live sessions of all IMAP listeners of one store, plus shared folder state.

    ``\\Recent`` is approximated in memory: the first read-write session that sees a
    message (SELECT, or a new message arriving while selected) gets it as recent;
    after a restart every message counts as not yet seen by a session.
    """

    def __init__(self) -> None:
        self.sessions: set[ImapConnection] = set()
        self._recent_floor: dict[int, int] = {}  # folder id -> first UID nobody saw
        self._unsubscribe: Callable[[], None] | None = None
        self._users = 0

    @classmethod
    def for_services(cls, services: MssServices) -> ImapSessionRegistry:
        registry = _REGISTRIES.get(services.store)
        if registry is None:
            registry = cls()
            _REGISTRIES[services.store] = registry
        return registry

    # ---- change notifications (IDLE, unsolicited EXISTS/EXPUNGE) ----------------------
    def attach(self, services: MssServices) -> None:
        self._users += 1
        if self._unsubscribe is None:
            self._unsubscribe = services.store.subscribe(self._on_change)

    def detach(self) -> None:
        self._users -= 1
        if self._users <= 0 and self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def _on_change(self, folder_id: int) -> None:
        for session in list(self.sessions):
            selected = session.selected
            if selected is not None and selected.folder.id == folder_id:
                session.notify_change()

    # ---- \Recent -------------------------------------------------------------------
    def claim_recent(self, folder_id: int, uids: list[int]) -> list[int]:
        floor = self._recent_floor.get(folder_id, 0)
        claimed = [u for u in uids if u >= floor]
        if uids:
            self._recent_floor[folder_id] = max(floor, uids[-1] + 1)
        return claimed

    def recent_count(self, folder_id: int, status: FolderStatus) -> int:
        floor = self._recent_floor.get(folder_id, 0)
        if floor == 0:
            return status.messages
        return max(0, min(status.messages, status.uidnext - floor))

    # ---- sessions ------------------------------------------------------------------
    def add(self, session: ImapConnection) -> None:
        self.sessions.add(session)

    def discard(self, session: ImapConnection) -> None:
        self.sessions.discard(session)


class ImapServer:
    """One IMAP listening socket. ``start()`` returns the bound port."""

    def __init__(
        self, services: MssServices, *, registry: ImapSessionRegistry | None = None
    ) -> None:
        self.services = services
        self.registry = registry or ImapSessionRegistry.for_services(services)
        self.implicit_tls = False
        self.ssl_context: ssl.SSLContext | None = None
        self.endpoint_name = "imap"
        self.server: asyncio.Server | None = None
        self.implicit: ImplicitTlsServer | None = None
        self.port: int | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._mine: set[ImapConnection] = set()

    async def start(
        self,
        host: str,
        port: int,
        *,
        implicit_tls: bool,
        ssl_context: ssl.SSLContext,
        endpoint_name: str = "imap",
    ) -> int:
        self.implicit_tls = implicit_tls
        self.ssl_context = ssl_context
        self.endpoint_name = endpoint_name
        if implicit_tls:
            self.implicit = ImplicitTlsServer(
                self._stream_protocol,
                self._current_context,
                on_handshake_failed=self._handshake_failed,
                handshake_timeout=min(float(self.services.settings.imap_idle_timeout), 300.0),
            )
            self.port = await self.implicit.start(host, port)
        else:
            self.server = await asyncio.start_server(
                self._handle, host, port, limit=LINE_LIMIT * 2, reuse_address=True
            )
            self.port = int(self.server.sockets[0].getsockname()[1])
        self.registry.attach(self.services)
        return self.port

    def _current_context(self) -> ssl.SSLContext:
        assert self.ssl_context is not None
        return self.ssl_context

    def _stream_protocol(self) -> asyncio.StreamReaderProtocol:
        # What asyncio.start_server builds for each connection.
        return asyncio.StreamReaderProtocol(
            asyncio.StreamReader(limit=LINE_LIMIT * 2), self._handle
        )

    def _handshake_failed(self, peer: tuple[object, ...] | None, exc: BaseException) -> None:
        record = self.services.recorder.open_session("imap", self.endpoint_name, peer)
        record_refused_handshake(record, exc)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        session: ImapSession | None = None
        try:
            session = ImapSession(self, reader, writer)
            self.registry.add(session)
            self._mine.add(session)
            await session.run()
        except asyncio.CancelledError:
            pass  # server shutdown; streams would log a cancelled handler as an error
        except Exception:
            log.exception("IMAP connection handler failed")
            with contextlib.suppress(Exception):
                writer.close()
        finally:
            if session is not None:
                self._mine.discard(session)
                self.registry.discard(session)
            if task is not None:
                self._tasks.discard(task)

    async def stop(self) -> None:
        if self.server is None and self.implicit is None:
            return
        if self.implicit is not None:
            await self.implicit.close()
        if self.server is not None:
            self.server.close()
        for session in list(self._mine):
            await session.drop("server-shutdown")
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        for task in list(self._tasks):
            task.cancel()
        if self.server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 5)
        self.registry.detach()
        self.server = None
        self.implicit = None

    # ---- fault hooks (MOTCO2: the operator closes the session) --------------------------
    def active_sessions(self) -> list[ImapConnection]:
        """Live sessions of every IMAP listener sharing this server's registry."""
        return [s for s in self.registry.sessions if not s.closed]

    async def drop_sessions(
        self, mailbox_address: str | None = None, reason: str = "server-drop"
    ) -> int:
        """Send ``* BYE`` and close the sessions of one mailbox (or all); returns how many."""
        count = 0
        wanted = mailbox_address.lower() if mailbox_address else None
        for session in self.active_sessions():
            if wanted is not None and (
                session.mailbox is None or session.mailbox.address.lower() != wanted
            ):
                continue
            await session.drop(reason)
            count += 1
        return count
