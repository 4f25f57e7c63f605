"""One IMAP connection: input, output, TLS, timers, dispatch and mailbox updates.

The commands live in ``cmd_auth.py``, ``cmd_mailbox.py`` and ``cmd_message.py``;
``session.py`` assembles them into :class:`ImapSession`.

Design notes:

- Input is read in 64 KB chunks into our own buffer; lines and literals are cut from
  it, so limits (line length, literal size) are enforced before anything is kept.
- Output is built as latin-1 text and written once per command (one TLS record run
  instead of one per FETCH item); long FETCHes are written in chunks.
- The selected folder is a per-session snapshot (UID list + flags). Changes made by
  others arrive through ``MailStore.subscribe`` and are reported only where RFC 3501
  7.4.1 allows: EXPUNGE never during FETCH/STORE/SEARCH, EXISTS at command end,
  everything during IDLE and NOOP.
- Loopback is NOT treated as secure: before TLS on the STARTTLS port there is no
  AUTH= capability and AUTHENTICATE/LOGIN get ``NO [PRIVACYREQUIRED]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from simulators.core.store.mail import Folder, Mailbox, MailStoreError, MessageRow
from simulators.mss.auth import TlsInfo
from simulators.mss.imap.parser import (
    LITERAL_AT_END,
    Command,
    Literal,
    ParseError,
    Segment,
    Value,
    atom,
    expand_seq,
    expand_uids,
    parse_command,
    parse_sequence_set,
    peek_tag_and_name,
    valid_tag,
)
from simulators.mss.imap.responses import (
    capabilities,
    format_flags,
)
from simulators.mss.tlsinfo import peer_cert_der, record_tls, record_tls_failure

if TYPE_CHECKING:
    from simulators.core.recorder import SessionRecord
    from simulators.mss.imap.server import ImapServer

log = logging.getLogger("segur_sim.imap")

LINE_LIMIT = 64 * 1024  # longest command line we accept
LITERAL_LIMIT = 64 * 1024  # literals outside APPEND (mailbox names, search strings...)
MAX_LITERALS = 64  # literals in one command
FETCH_CHUNK = 250  # messages rendered per write during a big FETCH
WRITE_HIGH_WATER = 1 << 20
RECORD_LITERAL_INLINE = 200  # client literals up to this size are recorded as text
# Commands during which EXPUNGE responses are forbidden (RFC 3501 7.4.1).
_NO_EXPUNGE = frozenset({"FETCH", "STORE", "SEARCH"})


class SessionClosed(Exception):
    """The connection is gone (client drop, server drop, timeout)."""


class LineTooLong(Exception):
    pass


class No(Exception):
    """A tagged ``NO``: ``str(exc)`` is the text, with its response code if any."""


class Bad(Exception):
    """A tagged ``BAD``."""


@dataclass
class Selected:
    folder: Folder
    readonly: bool
    uids: list[int]
    flags: dict[int, frozenset[str]]
    recent: set[int] = field(default_factory=set)
    _seq_of: dict[int, int] | None = None

    def seq_of(self, uid: int) -> int | None:
        if self._seq_of is None:
            self._seq_of = {u: i + 1 for i, u in enumerate(self.uids)}
        return self._seq_of.get(uid)

    def changed(self) -> None:
        self._seq_of = None


Handler = Callable[[Any, Command], Awaitable[str]]


class ImapConnection:
    """State and plumbing of one connection; the command mixins build on it."""

    # name -> (handler, required state); filled in by ImapSession
    commands: ClassVar[dict[str, tuple[Handler, str]]] = {}

    def __init__(
        self,
        server: ImapServer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.server = server
        self.services = server.services
        self.store = server.services.store
        self.auth = server.services.auth
        self.reader = reader
        self.writer = writer
        self.implicit_tls = server.implicit_tls
        peer = writer.get_extra_info("peername")
        self.peer: tuple[Any, ...] | None = tuple(peer) if peer else None
        self.client_addr: str | None = str(peer[0]) if peer else None
        self.record: SessionRecord = server.services.recorder.open_session(
            "imap", server.endpoint_name, self.peer
        )
        self.tls = False
        self.mailbox: Mailbox | None = None
        self.token_session: str | None = None
        self.selected: Selected | None = None
        self.pending = False  # the selected folder changed since the last report
        self.changed_event = asyncio.Event()
        self.close_reason: str | None = None
        self.closed = False
        self._buf = bytearray()
        self._out: list[str] = []
        self._out_size = 0
        self._meta_tasks: set[asyncio.Task[None]] = set()
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.last_activity = loop.time()
        self._timer: asyncio.TimerHandle | None = None
        settings = server.services.settings
        self.idle_timeout = float(settings.imap_idle_timeout)
        self.max_message_size = int(settings.max_message_size)

    # ---- lifecycle --------------------------------------------------------------------
    async def run(self) -> None:
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._arm_timer()
        try:
            if self.implicit_tls and not await self._start_tls(starttls=False):
                return
            caps = self._capabilities()
            self._send(f"* OK [CAPABILITY {caps}] segur-sim IMAP ready (SIMULATION)\r\n")
            await self._flush()
            while not self.closed:
                await self._one_command()
        except SessionClosed:
            pass
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            self._set_reason("client-dropped")
        except asyncio.CancelledError:
            self._set_reason("server-shutdown")
            raise
        except Exception as exc:
            log.exception("IMAP session failed")
            self.record.note(f"internal error, session closed: {exc!r}")
            self._set_reason("server-error")
        finally:
            self._finish()

    def _finish(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.closed = True
        self._set_reason("client-dropped")
        self.record.close(self.close_reason or "client-dropped")
        self.server.registry.discard(self)
        with contextlib.suppress(Exception):
            self.writer.close()

    def _set_reason(self, reason: str) -> None:
        if self.close_reason is None:
            self.close_reason = reason
            self.record.set(close_reason=reason)

    def _arm_timer(self) -> None:
        timeout = self.idle_timeout if self.mailbox is not None else min(self.idle_timeout, 300)
        due = self.last_activity + timeout
        self._timer = self._loop.call_at(due, self._check_timeout)

    def _check_timeout(self) -> None:
        if self.closed:
            return
        timeout = self.idle_timeout if self.mailbox is not None else min(self.idle_timeout, 300)
        if self._loop.time() - self.last_activity < timeout:
            self._arm_timer()
            return
        self._set_reason("timeout")
        self.record.note(f"idle for {timeout:.0f} s: autologout")
        self._bye("Autologout; idle for too long")

    async def drop(self, reason: str = "server-drop") -> None:
        """Close from the server side with ``* BYE`` (the MOTCO2 "session closed" fault)."""
        if self.closed:
            return
        self._set_reason(reason)
        self.record.note(f"session closed by the server: {reason}")
        self._bye("Session closed by the server (simulated)")

    def _bye(self, text: str) -> None:
        self.closed = True
        line = f"* BYE {text}\r\n"
        self.record.server(line)
        pending = "".join(self._out)  # e.g. the BAD that explains the BYE
        self._out.clear()
        with contextlib.suppress(Exception):
            if not self.writer.is_closing():
                self.writer.write((pending + line).encode("latin-1"))
        with contextlib.suppress(Exception):
            self.writer.close()
        # Wake a pending read now rather than after the TLS close_notify exchange.
        self.reader.feed_eof()

    # ---- input ------------------------------------------------------------------------
    async def _fill(self) -> None:
        if self.closed:
            raise SessionClosed
        data = await self.reader.read(65536)
        if not data:
            if self.closed:
                raise SessionClosed
            raise ConnectionResetError("client closed the connection")
        self._buf += data
        self.last_activity = self._loop.time()

    async def _read_line(self) -> bytes:
        """One line without its CRLF. A line over LINE_LIMIT is discarded whole."""
        scan = 0
        while True:
            index = self._buf.find(b"\n", scan)
            if index >= 0:
                if index > LINE_LIMIT:
                    del self._buf[: index + 1]
                    raise LineTooLong
                line = bytes(self._buf[:index])
                del self._buf[: index + 1]
                return line[:-1] if line.endswith(b"\r") else line
            if len(self._buf) > LINE_LIMIT:
                await self._discard_line()
                raise LineTooLong
            scan = len(self._buf)
            await self._fill()

    async def _discard_line(self) -> None:
        self._buf.clear()
        while True:
            await self._fill()
            index = self._buf.find(b"\n")
            if index >= 0:
                del self._buf[: index + 1]
                return
            self._buf.clear()

    async def _read_exact(self, size: int) -> bytes:
        while len(self._buf) < size:
            await self._fill()
        data = bytes(self._buf[:size])
        del self._buf[:size]
        return data

    async def _read_command(self) -> list[Segment] | None:
        """A whole command with its literals, or None if it was refused while reading."""
        line = await self._read_line()
        tag, name = peek_tag_and_name(line)
        self._record_client_line(line, name)
        segments: list[Segment] = []
        budget = self.max_message_size if name == "APPEND" else LITERAL_LIMIT
        total = 0
        while True:
            match = LITERAL_AT_END.search(line)
            if match is None:
                segments.append(line)
                return segments
            size = int(match.group(1))
            sync = not match.group(2)
            segments.append(line[: match.start()])
            total += size
            if total > budget or len(segments) > MAX_LITERALS:
                if not (tag and valid_tag(tag)):
                    tag = "*"  # never echo a "+" tag: it would read as a continuation
                too_big = (
                    f"[TOOBIG] literal of {size} octets refused "
                    f"(limit {budget} octets for {name or 'this command'})"
                )
                if sync:
                    # The client sends nothing more for this command after our answer.
                    self._tagged(tag, "NO" if name == "APPEND" else "BAD", too_big)
                    await self._flush()
                    return None
                # LITERAL+: the data is already on its way and we will not read it.
                self._tagged(tag, "BAD", too_big)
                self._set_reason("server-drop")
                self._bye("Too much data in a non-synchronising literal")
                raise SessionClosed
            if sync:
                self._send("+ Ready for literal data\r\n")
                await self._flush()
            data = await self._read_exact(size)
            segments.append(Literal(data))
            if name == "APPEND" or size > RECORD_LITERAL_INLINE:
                self.record.client(f"<literal, {size} bytes>")
            elif name not in ("LOGIN", "AUTHENTICATE"):
                self.record.client(data)
            line = await self._read_line()
            if name not in ("LOGIN", "AUTHENTICATE"):
                self.record.client(line)

    def _record_client_line(self, line: bytes, name: str) -> None:
        if name == "AUTHENTICATE":
            parts = line.split(b" ")
            shown = b" ".join(parts[:3])
            if len(parts) > 3:
                shown += b" <redacted %d bytes>" % len(b" ".join(parts[3:]))
            self.record.client(shown)
            if not self.tls:
                self.record.set(auth_before_tls=True)
        elif name == "LOGIN":
            parts = line.split(b" ")
            self.record.client(b" ".join(parts[:3]) + b" <redacted password>")
            if not self.tls:
                self.record.set(auth_before_tls=True)
        else:
            self.record.client(line)

    # ---- output -----------------------------------------------------------------------
    def _send(self, text: str, shown: str | None = None) -> None:
        """Queue response text (latin-1, CRLF included); ``shown`` is what gets recorded."""
        self._out.append(text)
        self._out_size += len(text)
        self._record_server(text if shown is None else shown)

    def _record_server(self, shown: str) -> None:
        if not shown.isascii():  # latin-1 octets: show 8-bit UTF-8 as text in the record
            shown = shown.encode("latin-1", "replace").decode("utf-8", "replace")
        self.record.server(shown)

    def _send_block(self, lines: list[str], shown: list[str]) -> None:
        """Many response lines (a FETCH) recorded as one event: one line per message."""
        if not lines:
            return
        self._out.extend(lines)
        self._out_size += sum(map(len, lines))
        self._record_server("\n".join(line.rstrip("\r\n") for line in shown))

    def _tagged(self, tag: str, status: str, text: str) -> None:
        self._send(f"{tag} {status} {wire_text(text)}\r\n")

    async def _flush(self) -> None:
        if not self._out:
            return
        data = "".join(self._out).encode("latin-1")
        self._out.clear()
        self._out_size = 0
        if self.closed or self.writer.is_closing():
            raise SessionClosed
        self.writer.write(data)
        transport = self.writer.transport
        if transport.get_write_buffer_size() > WRITE_HIGH_WATER:
            await self.writer.drain()

    # ---- TLS --------------------------------------------------------------------------
    async def _start_tls(self, *, starttls: bool) -> bool:
        """STARTTLS; on the implicit-TLS port the listener already did the handshake."""
        if starttls:
            try:
                assert self.server.ssl_context is not None
                await self.writer.start_tls(self.server.ssl_context)
            except (TimeoutError, ssl.SSLError, OSError, ConnectionError) as exc:
                record_tls_failure(self.record, exc)
                self._set_reason("tls-handshake-failed")
                return False
        self.tls = True
        ssl_object = self.writer.get_extra_info("ssl_object")
        record_tls(self.record, ssl_object, starttls=starttls)
        return True

    def _tls_info(self) -> TlsInfo:
        ssl_object = self.writer.get_extra_info("ssl_object") if self.tls else None
        return TlsInfo(active=self.tls, peer_cert_der=peer_cert_der(ssl_object))

    def _capabilities(self) -> str:
        return capabilities(
            tls=self.tls,
            authenticated=self.mailbox is not None,
            starttls_available=not self.implicit_tls,
        )

    # ---- dispatch ---------------------------------------------------------------------
    async def _one_command(self) -> None:
        try:
            segments = await self._read_command()
        except LineTooLong:
            self._send(f"* BAD command line over {LINE_LIMIT} octets, ignored\r\n")
            await self._flush()
            return
        if segments is None:
            return
        self.last_activity = self._loop.time()
        try:
            cmd = parse_command(segments)
        except ParseError as exc:
            first = segments[0] if segments and isinstance(segments[0], bytes) else b""
            tag = first.split(b" ", 1)[0].decode("latin-1")
            if not valid_tag(tag):
                tag = "*"
            self._tagged(tag, "BAD", f"syntax error: {exc}")
            await self._flush()
            return
        entry = self.commands.get(cmd.name)
        if entry is None:
            self._tagged(cmd.tag, "BAD", f"unknown command {cmd.name[:30]}")
            await self._flush()
            return
        handler, state = entry
        if state == "auth" and self.mailbox is None:
            self._tagged(cmd.tag, "BAD", f"{cmd.name} needs an authenticated session")
            await self._flush()
            return
        if state == "selected" and self.selected is None:
            self._tagged(cmd.tag, "BAD", f"{cmd.name} needs a selected mailbox (SELECT first)")
            await self._flush()
            return
        try:
            text = await handler(self, cmd)
        except ParseError as exc:
            self._tagged(cmd.tag, "BAD", str(exc))
        except Bad as exc:
            self._tagged(cmd.tag, "BAD", str(exc))
        except No as exc:
            self._report_changes(cmd)
            self._tagged(cmd.tag, "NO", str(exc))
        except MailStoreError as exc:
            self._report_changes(cmd)
            self._tagged(cmd.tag, "NO", str(exc))
        except LineTooLong:  # a SASL response or an IDLE line over the limit
            self._tagged(cmd.tag, "BAD", f"line over {LINE_LIMIT} octets, ignored")
        except (SessionClosed, ConnectionError, asyncio.CancelledError):
            raise
        except Exception as exc:
            log.exception("IMAP command %s failed", cmd.name)
            self.record.note(f"internal error in {cmd.name}: {exc!r}")
            self._tagged(cmd.tag, "NO", f"[SERVERBUG] internal error: {type(exc).__name__}")
        else:
            if text:  # an empty text: the handler already answered (LOGOUT)
                self._report_changes(cmd)
                self._tagged(cmd.tag, "OK", text)
        if not self.closed:
            await self._flush()

    def _report_changes(self, cmd: Command) -> None:
        # UID FETCH/STORE/SEARCH may report EXPUNGE: they carry UIDs, not numbers.
        self.sync(allow_expunge=cmd.name not in _NO_EXPUNGE)

    # ---- selected-folder updates -----------------------------------------------------
    def notify_change(self) -> None:
        """Called by the server when the selected folder changed (any session)."""
        self.pending = True
        self.changed_event.set()

    def sync(self, *, allow_expunge: bool) -> None:
        sel = self.selected
        if sel is None or not self.pending:
            return
        current = self.store.list_uids(sel.folder.id)
        now = dict(current)
        self.pending = False
        if allow_expunge:
            gone = False
            for index in range(len(sel.uids) - 1, -1, -1):
                uid = sel.uids[index]
                if uid not in now:
                    self._send(f"* {index + 1} EXPUNGE\r\n")
                    sel.flags.pop(uid, None)
                    sel.recent.discard(uid)
                    gone = True
            if gone:
                sel.uids = [u for u in sel.uids if u in now]
                sel.changed()
        elif any(u not in now for u in sel.uids):
            self.pending = True  # report the expunges at the next allowed point
        last = sel.uids[-1] if sel.uids else 0
        added = [uid for uid, _flags in current if uid > last]
        if added:
            sel.uids.extend(added)
            sel.changed()
            for uid in added:
                sel.flags[uid] = now[uid]
            if not sel.readonly:
                sel.recent.update(self.server.registry.claim_recent(sel.folder.id, added))
            self._send(f"* {len(sel.uids)} EXISTS\r\n")
            self._send(f"* {len(sel.recent)} RECENT\r\n")
        added_set = set(added)
        for index, uid in enumerate(sel.uids):
            flags = now.get(uid)
            if flags is None or uid in added_set:
                continue
            if sel.flags.get(uid) != flags:
                sel.flags[uid] = flags
                shown = flags | {"\\Recent"} if uid in sel.recent else flags
                self._send(f"* {index + 1} FETCH (FLAGS {format_flags(shown)})\r\n")

    # ---- helpers ----------------------------------------------------------------------
    def _folder(self, name: str) -> Folder:
        assert self.mailbox is not None
        folder = self.store.get_folder(self.mailbox.id, name)
        if folder is None:
            raise No(f"[NONEXISTENT] no mailbox {name}")
        return folder

    def _targets(self, set_text: Value, *, uid: bool) -> list[tuple[int, int]]:
        """(seq, uid) pairs of a sequence or UID set, from the session's snapshot."""
        sel = self.selected
        assert sel is not None
        ranges = parse_sequence_set(atom(set_text, "sequence set"))
        if uid:
            uids = expand_uids(ranges, sel.uids)
            seq_of = sel.seq_of
            return [(seq_of(u) or 0, u) for u in uids]
        if not sel.uids:
            if all(a == 0 or b == 0 for a, b in ranges):
                return []
            raise Bad("no such message: the mailbox is empty")
        seqs = expand_seq(ranges, len(sel.uids))
        return [(s, sel.uids[s - 1]) for s in seqs]

    def _flags_shown(self, uid: int, flags: frozenset[str]) -> frozenset[str]:
        sel = self.selected
        if sel is not None and uid in sel.recent:
            return flags | {"\\Recent"}
        return flags

    def _save_meta_later(self, rows_meta: list[tuple[int, dict[str, Any]]]) -> None:
        if not rows_meta:
            return

        async def save() -> None:
            try:
                await asyncio.gather(*(self.store.set_meta(mid, m) for mid, m in rows_meta))
            except Exception:
                log.exception("saving message metadata failed")

        task = asyncio.get_running_loop().create_task(save())
        self._meta_tasks.add(task)
        task.add_done_callback(self._meta_tasks.discard)

    def _blobs(self, rows: Iterable[MessageRow]) -> dict[int, bytes]:
        """Raw messages by blob id, in bulk when the store offers it."""
        ids = list({r.blob_id for r in rows})
        bulk = getattr(self.store, "blobs", None)
        if callable(bulk):
            result: dict[int, bytes] = bulk(ids)
            return result
        return {blob_id: self.store.blob(blob_id) for blob_id in ids}


def one_arg(cmd: Command, what: str) -> Value:
    if len(cmd.args) != 1:
        raise Bad(f"{cmd.name} takes one {what}")
    return cmd.args[0]


_NON_LATIN = re.compile(r"[^\x00-\xff]")


def wire_text(text: str) -> str:
    """Status text to latin-1 octets: anything beyond goes out as its UTF-8 bytes."""
    if text.isascii() or not _NON_LATIN.search(text):
        return text.replace("\r", " ").replace("\n", " ")
    return text.encode("utf-8").decode("latin-1").replace("\r", " ").replace("\n", " ")
