"""Selected-state commands: FETCH, SEARCH, STORE, COPY/MOVE, EXPUNGE, UID, IDLE, CLOSE."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from simulators.core.store.mail import MessageRow
from simulators.mss.imap import folders
from simulators.mss.imap.connection import (
    FETCH_CHUNK,
    WRITE_HIGH_WATER,
    Bad,
    ImapConnection,
    No,
)
from simulators.mss.imap.fetch import FetchAtt, parse_fetch_atts, render_fetch
from simulators.mss.imap.parser import (
    Command,
    atom,
    expand_uids,
    format_uid_set,
    parse_sequence_set,
)
from simulators.mss.imap.responses import (
    SYSTEM_FLAGS,
    format_flags,
    normalise_flag,
)
from simulators.mss.imap.search import BadCharset, SearchMessage, compile_search
from simulators.mss.mime import analyse_message, meta_is_current


class MessageCommands(ImapConnection):
    # ==== commands: selected ===========================================================
    async def cmd_check(self, cmd: Command) -> str:
        return "CHECK completed"

    async def cmd_close(self, cmd: Command) -> str:
        sel = self.selected
        assert sel is not None
        if not sel.readonly:
            await self.store.expunge(sel.folder.id)  # silently: no EXPUNGE responses
        self.selected = None
        self.pending = False
        return "CLOSE completed"

    async def cmd_unselect(self, cmd: Command) -> str:
        self.selected = None
        self.pending = False
        return "UNSELECT completed"

    async def cmd_expunge(self, cmd: Command) -> str:
        return await self._expunge(None)

    async def _expunge(self, only: list[int] | None) -> str:
        sel = self.selected
        assert sel is not None
        if sel.readonly:
            raise No("[READ-ONLY] mailbox selected with EXAMINE")
        gone = set(await self.store.expunge(sel.folder.id, only))
        self._forget(gone)
        return "EXPUNGE completed"

    def _forget(self, gone: set[int]) -> None:
        """Report and drop expunged UIDs from the snapshot (highest number first)."""
        sel = self.selected
        assert sel is not None
        if not gone:
            return
        for index in range(len(sel.uids) - 1, -1, -1):
            if sel.uids[index] in gone:
                self._send(f"* {index + 1} EXPUNGE\r\n")
        sel.uids = [u for u in sel.uids if u not in gone]
        for uid in gone:
            sel.flags.pop(uid, None)
            sel.recent.discard(uid)
        sel.changed()

    async def cmd_search(self, cmd: Command, *, uid: bool = False) -> str:
        sel = self.selected
        assert sel is not None
        try:
            program = compile_search(cmd.args, count=len(sel.uids), uids=sel.uids)
        except BadCharset:
            raise No("[BADCHARSET (UTF-8 US-ASCII)] unsupported charset") from None
        rows: dict[int, MessageRow] = {}
        if program.needs_rows:
            rows = {r.uid: r for r in self.store.fetch_rows(sel.folder.id, sel.uids)}
        found: list[int] = []
        new_meta: list[tuple[int, dict[str, Any]]] = []
        for index, u in enumerate(sel.uids):
            row = rows.get(u)
            if program.needs_rows and row is None:
                continue  # expunged meanwhile
            flags = row.flags if row is not None else sel.flags.get(u, frozenset())
            msg = SearchMessage(index + 1, u, flags, u in sel.recent, row)
            if row is not None:
                msg.raw_loader = _loader(self.store, row.blob_id)
                msg.meta = row.meta
                if not meta_is_current(row.meta):
                    msg.meta = analyse_message(msg.raw)
                    new_meta.append((row.id, msg.meta))
            if program.match(msg):
                found.append(u if uid else index + 1)
        self._save_meta_later(new_meta)
        self._send("* SEARCH" + "".join(f" {n}" for n in found) + "\r\n")
        return ("UID " if uid else "") + "SEARCH completed"

    async def cmd_fetch(self, cmd: Command, *, uid: bool = False) -> str:
        sel = self.selected
        assert sel is not None
        if len(cmd.args) < 2:
            raise Bad("FETCH takes a sequence set and attributes")
        targets = self._targets(cmd.args[0], uid=uid)
        atts = parse_fetch_atts(cmd.args[1:])
        if uid and not any(a.name == "UID" for a in atts):
            atts.insert(0, FetchAtt("UID"))
        await self._fetch(targets, atts)
        return ("UID " if uid else "") + "FETCH completed"

    async def _fetch(self, targets: list[tuple[int, int]], atts: list[FetchAtt]) -> None:
        sel = self.selected
        assert sel is not None
        needs_blob = any(a.needs_blob for a in atts)
        needs_meta = any(a.needs_meta for a in atts)
        sets_seen = not sel.readonly and any(a.sets_seen for a in atts)
        has_flags = any(a.name == "FLAGS" for a in atts)
        if all(a.name in ("FLAGS", "UID") for a in atts):
            # Flags only (a client's resync): the UID/flags listing, no rows, no metadata.
            current = dict(self.store.list_uids(sel.folder.id))
            lines: list[str] = []
            for seq, u in targets:
                flags = current.get(u)
                if flags is None:
                    continue
                sel.flags[u] = flags
                flag_text = format_flags(self._flags_shown(u, flags))
                items = [f"UID {u}" if a.name == "UID" else f"FLAGS {flag_text}" for a in atts]
                lines.append(f"* {seq} FETCH ({' '.join(items)})\r\n")
            self._send_block(lines, lines)
            return
        for start in range(0, len(targets), FETCH_CHUNK):
            chunk = targets[start : start + FETCH_CHUNK]
            rows = {r.uid: r for r in self.store.fetch_rows(sel.folder.id, [u for _, u in chunk])}
            newly_seen: set[int] = set()
            if sets_seen:
                unseen = [u for u, r in rows.items() if "\\Seen" not in r.flags]
                if unseen:
                    changed = await self.store.store_flags(sel.folder.id, unseen, "add", ["\\Seen"])
                    for u, new_flags in changed.items():
                        rows[u] = _with_flags(rows[u], new_flags)
                        sel.flags[u] = new_flags
                    newly_seen = set(changed)
            blobs: dict[int, bytes] = {}
            stale = [r for r in rows.values() if needs_meta and not meta_is_current(r.meta)]
            if needs_blob or stale:
                wanted = rows.values() if needs_blob else stale
                blobs = self._blobs(wanted)
            new_meta: list[tuple[int, dict[str, Any]]] = []
            for old in stale:
                meta = analyse_message(blobs[old.blob_id])
                rows[old.uid] = _with_meta(old, meta)
                new_meta.append((old.id, meta))
            self._save_meta_later(new_meta)
            lines = []
            shown_lines: list[str] = []
            for seq, u in chunk:
                row = rows.get(u)
                if row is None:
                    continue  # expunged by another session, not reported yet
                sel.flags[u] = row.flags
                row_atts = atts
                if u in newly_seen and not has_flags:
                    row_atts = [*atts, FetchAtt("FLAGS")]
                line, shown = render_fetch(
                    row_atts,
                    seq,
                    row,
                    self._flags_shown(u, row.flags),
                    row.meta,
                    blobs.get(row.blob_id),
                )
                lines.append(line)
                shown_lines.append(line if shown is None else shown)
            self._send_block(lines, shown_lines)
            if self._out_size > WRITE_HIGH_WATER:
                await self._flush()
                await self.writer.drain()

    async def cmd_store(self, cmd: Command, *, uid: bool = False) -> str:
        sel = self.selected
        assert sel is not None
        if len(cmd.args) != 3:
            raise Bad("STORE takes a sequence set, an item and flags")
        if sel.readonly:
            raise No("[READ-ONLY] mailbox selected with EXAMINE")
        targets = self._targets(cmd.args[0], uid=uid)
        item = atom(cmd.args[1], "STORE item").upper()
        silent = item.endswith(".SILENT")
        base = item[: -len(".SILENT")] if silent else item
        modes = {"FLAGS": "set", "+FLAGS": "add", "-FLAGS": "remove"}
        if base not in modes:
            raise Bad(f"unknown STORE item {item[:20]}")
        raw_flags = cmd.args[2] if isinstance(cmd.args[2], list) else [cmd.args[2]]
        flags = [normalise_flag(atom(f, "flag")) for f in raw_flags]
        flags = [f for f in flags if f != "\\Recent"]  # \Recent cannot be stored
        for flag in flags:
            if flag.startswith("\\") and flag not in SYSTEM_FLAGS:
                raise Bad(f"unknown system flag {flag[:20]}")
        changed = await self.store.store_flags(
            sel.folder.id, [u for _, u in targets], modes[base], flags
        )
        lines: list[str] = []
        for seq, u in targets:
            new = changed.get(u)
            if new is None:
                continue
            sel.flags[u] = new
            if not silent:
                shown = format_flags(self._flags_shown(u, new))
                uid_part = f" UID {u}" if uid else ""
                lines.append(f"* {seq} FETCH (FLAGS {shown}{uid_part})\r\n")
        self._send_block(lines, lines)
        return ("UID " if uid else "") + "STORE completed"

    async def cmd_copy(self, cmd: Command, *, uid: bool = False, move: bool = False) -> str:
        sel = self.selected
        assert sel is not None and self.mailbox is not None
        if len(cmd.args) != 2:
            raise Bad(f"{cmd.name} takes a sequence set and a mailbox")
        if move and sel.readonly:
            raise No("[READ-ONLY] mailbox selected with EXAMINE")
        targets = self._targets(cmd.args[0], uid=uid)
        name = folders.decode_name(cmd.args[1])
        dest = self.store.get_folder(self.mailbox.id, name)
        if dest is None:
            raise No(f"[TRYCREATE] no mailbox {name}")
        uids = [u for _, u in targets]
        if move:
            mapping = await self.store.move(sel.folder.id, uids, dest.id)
        else:
            mapping = await self.store.copy(sel.folder.id, uids, dest.id)
        verb = "MOVE" if move else "COPY"
        if not mapping:
            return f"{verb} completed (nothing to {verb.lower()})"
        code = (
            f"COPYUID {dest.uidvalidity} {format_uid_set([a for a, _ in mapping])} "
            f"{format_uid_set([b for _, b in mapping])}"
        )
        if dest.id == sel.folder.id:
            self.pending = True
        if move:
            self._send(f"* OK [{code}] Moved\r\n")
            self._forget({a for a, _ in mapping})
            return f"{'UID ' if uid else ''}MOVE completed"
        return f"[{code}] {'UID ' if uid else ''}COPY completed"

    async def cmd_move(self, cmd: Command, *, uid: bool = False) -> str:
        return await self.cmd_copy(cmd, uid=uid, move=True)

    async def cmd_uid(self, cmd: Command) -> str:
        if not cmd.args:
            raise Bad("UID needs a command")
        sub = atom(cmd.args[0], "UID command").upper()
        inner = Command(cmd.tag, sub, cmd.args[1:])
        if sub == "FETCH":
            return await self.cmd_fetch(inner, uid=True)
        if sub == "SEARCH":
            return await self.cmd_search(inner, uid=True)
        if sub == "STORE":
            return await self.cmd_store(inner, uid=True)
        if sub == "COPY":
            return await self.cmd_copy(inner, uid=True)
        if sub == "MOVE":
            return await self.cmd_copy(inner, uid=True, move=True)
        if sub == "EXPUNGE":
            if len(inner.args) != 1:
                raise Bad("UID EXPUNGE takes a UID set")
            sel = self.selected
            assert sel is not None
            uids = expand_uids(parse_sequence_set(atom(inner.args[0])), sel.uids)
            await self._expunge(uids)
            return "UID EXPUNGE completed"
        raise Bad(f"unknown UID command {sub[:20]}")

    async def cmd_idle(self, cmd: Command) -> str:
        self._send("+ idling\r\n")
        self.sync(allow_expunge=True)
        await self._flush()
        line_task = asyncio.ensure_future(self._read_line())
        try:
            while True:
                self.changed_event.clear()
                event_task = asyncio.ensure_future(self.changed_event.wait())
                done, _ = await asyncio.wait(
                    {line_task, event_task}, return_when=asyncio.FIRST_COMPLETED
                )
                if event_task not in done:
                    event_task.cancel()
                if line_task in done:
                    line = line_task.result()
                    self.record.client(line)
                    if line.strip().upper() != b"DONE":
                        raise Bad("IDLE ended by something other than DONE")
                    return "IDLE terminated"
                self.sync(allow_expunge=True)
                await self._flush()
        finally:
            if not line_task.done():
                line_task.cancel()
                with contextlib.suppress(BaseException):
                    await line_task


def _loader(store: Any, blob_id: int) -> Callable[[], bytes]:
    return lambda: bytes(store.blob(blob_id))


def _with_flags(row: MessageRow, flags: frozenset[str]) -> MessageRow:
    return MessageRow(
        row.id, row.folder_id, row.uid, row.blob_id, row.size, row.internal_date, flags, row.meta
    )


def _with_meta(row: MessageRow, meta: dict[str, Any]) -> MessageRow:
    return MessageRow(
        row.id, row.folder_id, row.uid, row.blob_id, row.size, row.internal_date, row.flags, meta
    )
