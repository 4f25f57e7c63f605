"""Helpers of the robustness suite: a live ``segur-sim serve`` subprocess and wire clients.

The server helper lives in ``bench/_server.py`` (shared with the benchmarks); this
module puts ``bench/`` on ``sys.path`` and re-exports it.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import ssl
import struct
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from _server import (  # noqa: E402
    DOMAIN,
    AppCredentials,
    PerCredentials,
    ServerProcess,
    app_mailbox,
    per_mailbox,
    prepare_data_dir,
    read_proc_status,
)

__all__ = [
    "DOMAIN",
    "AppCredentials",
    "ImapWire",
    "LiveServer",
    "PerCredentials",
    "RssSampler",
    "ServerProcess",
    "SmtpWire",
    "app_mailbox",
    "examples",
    "per_mailbox",
    "prepare_data_dir",
]


def examples(default: int) -> int:
    """Hypothesis example count: ``default`` in CI, ``SEGUR_SIM_FUZZ_EXAMPLES`` by hand."""
    value = os.environ.get("SEGUR_SIM_FUZZ_EXAMPLES", "").strip()
    return int(value) if value else default


# ---- the server ---------------------------------------------------------------------------
@dataclass
class LiveServer:
    server: ServerProcess
    data_dir: Path

    def port(self, name: str) -> int:
        return self.server.port(name)

    def context(self, app: AppCredentials | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.server.ca_bundle)
        if app is not None:
            ctx.load_cert_chain(app.cert, app.key)
        return ctx

    def per(self, local: str) -> PerCredentials:
        return per_mailbox(self.data_dir, f"{local}@{DOMAIN}")

    def app(self, local: str, *, entity: str = "LABO SIMU", kind: str = "valid") -> AppCredentials:
        return app_mailbox(self.data_dir, f"{local}@{DOMAIN}", entity=entity, kind=kind)

    def smtp(self, endpoint: str = "smtps", app: AppCredentials | None = None) -> SmtpWire:
        """A session on ``endpoint``, TLS done (STARTTLS if needed), after EHLO."""
        wire = SmtpWire.connect(
            self.port(endpoint), self.context(app) if endpoint == "smtps" else None
        )
        wire.ehlo()
        if endpoint == "smtp_starttls":
            wire.starttls(self.context(app))
            wire.ehlo()
        return wire

    def imap(self, endpoint: str = "imaps", app: AppCredentials | None = None) -> ImapWire:
        """A session on ``endpoint`` with TLS done (STARTTLS if needed)."""
        if endpoint == "imaps":
            return ImapWire(self.port("imaps"), self.context(app))
        wire = ImapWire(self.port("imap_starttls"), None)
        wire.starttls(self.context(app))
        return wire

    def tracebacks(self) -> list[str]:
        """Tracebacks the server wrote on stderr (there should be none)."""
        text = self.server.stderr_text()
        return [chunk[:2000] for chunk in text.split("Traceback (most recent call last)")[1:]]


@contextlib.contextmanager
def live_server(root: Path, **settings: object) -> Iterator[LiveServer]:
    data_dir = prepare_data_dir(root / "data", **settings)  # type: ignore[arg-type]
    server = ServerProcess(data_dir, stderr_path=root / "serve.log", ready_timeout=90)
    server.start()
    try:
        yield LiveServer(server, data_dir)
    finally:
        server.stop()


class RssSampler:
    """Samples a process's VmRSS every few milliseconds in a thread; keeps the maximum."""

    def __init__(self, pid: int, interval: float = 0.005) -> None:
        self.pid = pid
        self.interval = interval
        self.baseline = read_proc_status(pid)["VmRSS"]
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, KeyError):
                self.peak = max(self.peak, read_proc_status(self.pid)["VmRSS"])
            time.sleep(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.baseline) / 1024


# ---- SMTP on the wire -------------------------------------------------------------------------
class SmtpWire:
    """Line-level SMTP: send anything, read each reply with a deadline."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.file = sock.makefile("rb")
        self.greeting = self.reply()

    @classmethod
    def connect(cls, port: int, context: ssl.SSLContext | None, timeout: float = 15) -> SmtpWire:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if context is not None:
            sock = context.wrap_socket(sock, server_hostname="127.0.0.1")
        return cls(sock)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> tuple[int, bytes]:
        """One (possibly multi-line) reply: its code and its text. Raises on EOF."""
        text = b""
        while True:
            line = self.file.readline(1 << 16)
            if not line:
                raise ConnectionError(f"server closed the connection (after {text!r})")
            text += line
            if not re.match(rb"\d{3}[ -]", line):
                raise AssertionError(f"not an SMTP reply line: {line!r}")
            if line[3:4] != b"-":
                return int(line[:3]), text

    def cmd(self, line: bytes | str) -> tuple[int, bytes]:
        data = line.encode() if isinstance(line, str) else line
        self.send(data + b"\r\n")
        return self.reply()

    def ehlo(self, name: str = "lps.example") -> bytes:
        code, text = self.cmd(f"EHLO {name}")
        assert code == 250, text
        return text

    def starttls(self, context: ssl.SSLContext) -> None:
        code, text = self.cmd("STARTTLS")
        assert code == 220, text
        self.file.close()
        self.sock = context.wrap_socket(self.sock, server_hostname="127.0.0.1")
        self.file = self.sock.makefile("rb")

    def auth(self, per: PerCredentials) -> None:
        code, text = self.cmd("AUTH XOAUTH2 " + per.xoauth2())
        assert code == 235, text

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
            self.sock.close()

    def abort(self) -> None:
        """Vanish without QUIT: RST, as a crashed client would."""
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close()


# ---- IMAP on the wire -------------------------------------------------------------------------
_LITERAL_END = re.compile(rb"\{(\d+)\}\r\n\Z")


class ImapWire:
    """Line-level IMAP that reads server literals, so a body line never looks like a tag."""

    def __init__(self, port: int, context: ssl.SSLContext | None, timeout: float = 15) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock: socket.socket = (
            context.wrap_socket(sock, server_hostname="127.0.0.1") if context else sock
        )
        self.file = self.sock.makefile("rb")
        self.tags = 0
        self.greeting = self.response_line()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response_line(self) -> bytes:
        """One response line with any literal it announces read in (``{n}`` + n octets)."""
        out = b""
        while True:
            line = self.file.readline()
            if not line:
                raise ConnectionError(f"server closed the connection (after {out[:200]!r})")
            out += line
            match = _LITERAL_END.search(line)
            if match is None:
                return out
            out += self.file.read(int(match.group(1)))

    def next_tag(self) -> str:
        self.tags += 1
        return f"w{self.tags}"

    def until_tagged(self, tag: str) -> list[bytes]:
        lines = []
        while True:
            line = self.response_line()
            lines.append(line)
            if line.startswith(tag.encode() + b" "):
                return lines

    def command(self, text: str | bytes) -> list[bytes]:
        tag = self.next_tag()
        data = text.encode() if isinstance(text, str) else text
        self.send(tag.encode() + b" " + data + b"\r\n")
        return self.until_tagged(tag)

    def ok(self, text: str | bytes) -> list[bytes]:
        lines = self.command(text)
        assert b" OK" in lines[-1][:20], lines[-3:]
        return lines

    def starttls(self, context: ssl.SSLContext) -> None:
        self.ok("STARTTLS")
        self.file.close()
        self.sock = context.wrap_socket(self.sock, server_hostname="127.0.0.1")
        self.file = self.sock.makefile("rb")

    def login_per(self, per: PerCredentials) -> None:
        self.ok("AUTHENTICATE XOAUTH2 " + per.xoauth2())

    def append(self, message: bytes, folder: str = "INBOX") -> bytes:
        """APPEND with a synchronising literal; returns the tagged answer."""
        tag = self.next_tag()
        self.send(f"{tag} APPEND {folder} {{{len(message)}}}\r\n".encode())
        go = self.response_line()
        assert go.startswith(b"+"), go
        self.send(message + b"\r\n")
        return self.until_tagged(tag)[-1]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
            self.sock.close()

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close()


def message_ids_in_inbox(live: LiveServer, per: PerCredentials) -> list[bytes]:
    """Message-IDs of the INBOX, read over IMAP (what a client would see)."""
    wire = live.imap()
    wire.login_per(per)
    wire.ok("EXAMINE INBOX")
    lines = wire.ok("UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
    wire.close()
    return re.findall(rb"Message-ID:\s*<([^>]+)>", b"".join(lines), re.I)
