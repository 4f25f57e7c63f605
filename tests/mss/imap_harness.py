"""A running IMAP server (both listeners) in a background event loop, for blocking clients.

One harness per test module keeps the (slow) PKI generation out of each test; every
test takes its own mailboxes from it.
"""

from __future__ import annotations

import asyncio
import base64
import imaplib
import itertools
import ssl
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from simulators.core.pki import ClientCredentials
from simulators.core.recorder import WireSession
from simulators.core.store.mail import Mailbox, MailboxType, NewSubmission
from simulators.mss.imap import ImapServer
from simulators.mss.services import MssServices

T = TypeVar("T")
DOMAIN = "mssante.localhost"
_names = itertools.count(1)


@dataclass
class PerMailbox:
    mailbox: Mailbox
    token: str

    @property
    def address(self) -> str:
        return self.mailbox.address

    def xoauth2(self, token: str | None = None) -> bytes:
        return f"user={self.address}\x01auth=Bearer {token or self.token}\x01\x01".encode()


@dataclass
class AppMailbox:
    mailbox: Mailbox
    creds: ClientCredentials

    @property
    def address(self) -> str:
        return self.mailbox.address


class ImapHarness:
    def __init__(self, root: Path, **overrides: Any) -> None:
        overrides.setdefault("port_base", 0)
        overrides.setdefault("auth_failure_delay", 0.01)
        overrides.setdefault("auth_failure_delay_max", 0.05)
        self.services = MssServices.open(root, **overrides)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.starttls_server = ImapServer(self.services)
        self.imaps_server = ImapServer(self.services)
        ctx = self.services.pki.server_ssl_context()
        self.starttls_port = self.call(
            self.starttls_server.start(
                "127.0.0.1", 0, implicit_tls=False, ssl_context=ctx, endpoint_name="imap_starttls"
            )
        )
        self.imaps_port = self.call(
            self.imaps_server.start(
                "127.0.0.1", 0, implicit_tls=True, ssl_context=ctx, endpoint_name="imaps"
            )
        )

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.call(self.starttls_server.stop())
        self.call(self.imaps_server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.services.close()

    # ---- mailboxes and messages ------------------------------------------------------
    def per(self, local: str | None = None) -> PerMailbox:
        box = self.services.store.create_mailbox(
            f"{local or 'dr.per' + str(next(_names))}@{DOMAIN}", MailboxType.PER
        )
        return PerMailbox(box, self.services.psc.issue(box).access_token)

    def app(self, local: str | None = None, kind: str = "valid") -> AppMailbox:
        address = f"{local or 'labo' + str(next(_names))}@{DOMAIN}"
        store = self.services.store
        box = store.get_mailbox(address) or store.create_mailbox(
            address, MailboxType.APP, entity="LABO SIMU"
        )
        return AppMailbox(box, self.services.pki.client_credentials(address, box.entity, kind))

    def deliver(self, address: str, raw: bytes, *, meta: dict[str, Any] | None = None) -> None:
        sub = NewSubmission(None, None, "sender@example.org", [address], raw, meta)
        self.call(self.services.store.accept_submission(sub))

    # ---- clients -----------------------------------------------------------------------
    def client_context(self, creds: ClientCredentials | None = None) -> ssl.SSLContext:
        return self.services.pki.client_ssl_context(creds)

    def imap_starttls(self, creds: ClientCredentials | None = None) -> imaplib.IMAP4:
        client = imaplib.IMAP4("127.0.0.1", self.starttls_port, timeout=10)
        client.starttls(self.client_context(creds))
        return client

    def imaps(self, creds: ClientCredentials | None = None) -> imaplib.IMAP4_SSL:
        return imaplib.IMAP4_SSL(
            "127.0.0.1", self.imaps_port, ssl_context=self.client_context(creds), timeout=10
        )

    def login_per(self, box: PerMailbox) -> imaplib.IMAP4:
        client = self.imap_starttls()
        client.authenticate("XOAUTH2", lambda _challenge: box.xoauth2())
        return client

    def login_app(self, box: AppMailbox) -> imaplib.IMAP4_SSL:
        client = self.imaps(box.creds)
        client.login(box.address, "x")
        return client

    # ---- recorder ----------------------------------------------------------------------
    def sessions(self, endpoint: str | None = None) -> list[WireSession]:
        self.services.recorder.flush()
        return self.services.recorder.sessions(protocol="imap", endpoint=endpoint)

    def session_of(self, address: str) -> WireSession:
        found = [s for s in self.sessions() if s.get("auth_user") == address]
        assert found, f"no recorded IMAP session for {address}"
        return found[-1]

    def transcript(self, session: WireSession) -> str:
        return self.services.recorder.transcript(session.id)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def harness_fixture(tmp_path_factory: Any, **overrides: Any) -> Iterator[ImapHarness]:
    harness = ImapHarness(tmp_path_factory.mktemp("imap"), **overrides)
    try:
        yield harness
    finally:
        harness.close()


class RawClient:
    """A line-level IMAP client over a real socket, for what imaplib cannot send."""

    def __init__(self, port: int, *, context: ssl.SSLContext | None = None) -> None:
        import socket

        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock: socket.socket = (
            context.wrap_socket(sock, server_hostname="127.0.0.1") if context else sock
        )
        self.file = self.sock.makefile("rb")
        self.greeting = self.readline()
        self._tags = itertools.count(1)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def readline(self) -> bytes:
        line = self.file.readline()
        if not line:
            raise ConnectionError("server closed the connection")
        return line

    def read_until_tag(self, tag: str) -> list[bytes]:
        lines = []
        while True:
            line = self.readline()
            lines.append(line)
            if line.startswith(tag.encode() + b" "):
                return lines

    def command(self, text: str) -> list[bytes]:
        tag = f"r{next(self._tags)}"
        self.send(f"{tag} {text}\r\n".encode())
        return self.read_until_tag(tag)

    def starttls(self, context: ssl.SSLContext) -> None:
        lines = self.command("STARTTLS")
        assert b" OK " in lines[-1], lines
        self.file.close()
        self.sock = context.wrap_socket(self.sock, server_hostname="127.0.0.1")
        self.file = self.sock.makefile("rb")

    def close(self) -> None:
        import contextlib

        with contextlib.suppress(OSError):
            self.file.close()
            self.sock.close()
