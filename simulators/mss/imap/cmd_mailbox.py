"""Authenticated-state commands: folders (SELECT, LIST, CREATE...), STATUS, APPEND."""

from __future__ import annotations

import asyncio

from simulators.mss.imap import folders
from simulators.mss.imap.connection import (
    Bad,
    ImapConnection,
    No,
    Selected,
    one_arg,
)
from simulators.mss.imap.parser import (
    Command,
    atom,
)
from simulators.mss.imap.responses import (
    SYSTEM_FLAGS,
    normalise_flag,
    parse_date_time,
)
from simulators.mss.mime import analyse_message


class MailboxCommands(ImapConnection):
    # ==== commands: authenticated ======================================================
    async def cmd_enable(self, cmd: Command) -> str:
        if not cmd.args:
            raise Bad("ENABLE needs at least one capability")
        self._send("* ENABLED\r\n")  # nothing we could enable is advertised
        return "ENABLE completed"

    async def cmd_namespace(self, cmd: Command) -> str:
        self._send('* NAMESPACE (("" "/")) NIL NIL\r\n')
        return "NAMESPACE completed"

    async def cmd_select(self, cmd: Command) -> str:
        return await self._select(cmd, readonly=cmd.name == "EXAMINE")

    async def _select(self, cmd: Command, *, readonly: bool) -> str:
        if len(cmd.args) < 1:
            raise Bad(f"{cmd.name} needs a mailbox name")
        self.selected = None  # RFC 3501: a failed SELECT leaves no mailbox selected
        self.pending = False
        folder = self._folder(folders.decode_name(cmd.args[0]))
        listing = self.store.list_uids(folder.id)
        fresh = self.store.folder_by_id(folder.id) or folder
        uids = [uid for uid, _ in listing]
        flags = dict(listing)
        sel = Selected(fresh, readonly, uids, flags)
        if not readonly:
            sel.recent = set(self.server.registry.claim_recent(folder.id, uids))
        keywords: set[str] = set()
        for value in flags.values():
            keywords.update(value)
        keywords.difference_update(SYSTEM_FLAGS)
        keywords.discard("\\Recent")
        flag_list = " ".join((*SYSTEM_FLAGS, *sorted(keywords)))
        self._send(f"* FLAGS ({flag_list})\r\n")
        if readonly:
            self._send("* OK [PERMANENTFLAGS ()] Read-only mailbox\r\n")
        else:
            self._send(
                f"* OK [PERMANENTFLAGS ({' '.join(SYSTEM_FLAGS)} \\*)] Flags and keywords kept\r\n"
            )
        self._send(f"* {len(uids)} EXISTS\r\n")
        self._send(f"* {len(sel.recent)} RECENT\r\n")
        first_unseen = next(
            (i + 1 for i, uid in enumerate(uids) if "\\Seen" not in flags[uid]), None
        )
        if first_unseen is not None:
            self._send(f"* OK [UNSEEN {first_unseen}] First unseen\r\n")
        self._send(f"* OK [UIDVALIDITY {fresh.uidvalidity}] UIDs valid\r\n")
        self._send(f"* OK [UIDNEXT {fresh.uidnext}] Predicted next UID\r\n")
        self.selected = sel
        mode = "READ-ONLY" if readonly else "READ-WRITE"
        return f"[{mode}] {cmd.name} completed"

    async def cmd_create(self, cmd: Command) -> str:
        name = folders.decode_name(one_arg(cmd, "mailbox name")).rstrip("/")
        if not name or name.upper() == "INBOX":
            raise No("[ALREADYEXISTS] INBOX always exists")
        assert self.mailbox is not None
        if self.store.get_folder(self.mailbox.id, name) is not None:
            raise No(f"[ALREADYEXISTS] mailbox {name} already exists")
        await self.store.create_folder(self.mailbox.id, name)
        return "CREATE completed"

    async def cmd_delete(self, cmd: Command) -> str:
        name = folders.decode_name(one_arg(cmd, "mailbox name"))
        assert self.mailbox is not None
        if name.upper() == "INBOX":
            raise No("INBOX cannot be deleted")
        folder = self._folder(name)
        await self.store.delete_folder(self.mailbox.id, folder.name)
        if self.selected is not None and self.selected.folder.id == folder.id:
            self.selected = None
        return "DELETE completed"

    async def cmd_rename(self, cmd: Command) -> str:
        if len(cmd.args) != 2:
            raise Bad("RENAME takes two mailbox names")
        old = folders.decode_name(cmd.args[0])
        new = folders.decode_name(cmd.args[1]).rstrip("/")
        assert self.mailbox is not None
        folder = self._folder(old)
        if self.store.get_folder(self.mailbox.id, new) is not None:
            raise No(f"[ALREADYEXISTS] mailbox {new} already exists")
        await self.store.rename_folder(self.mailbox.id, folder.name, new)
        return "RENAME completed"

    async def cmd_subscribe(self, cmd: Command) -> str:
        name = folders.decode_name(one_arg(cmd, "mailbox name"))
        assert self.mailbox is not None
        folder = self._folder(name)
        await self.store.set_subscribed(self.mailbox.id, folder.name, cmd.name == "SUBSCRIBE")
        return f"{cmd.name} completed"

    async def cmd_list(self, cmd: Command) -> str:
        assert self.mailbox is not None
        args = list(cmd.args)
        if args and isinstance(args[0], list):  # LIST-EXTENDED selection options: ignored
            args = args[1:]
        if len(args) < 2:
            raise Bad(f"{cmd.name} takes a reference and a mailbox pattern")
        reference = folders.decode_name(args[0])
        patterns = args[1] if isinstance(args[1], list) else [args[1]]
        names = [folders.decode_name(p) for p in patterns]
        lsub = cmd.name == "LSUB"
        all_folders = self.store.list_folders(self.mailbox.id)
        for line in folders.list_lines(all_folders, reference, names, lsub=lsub):
            self._send(line)
        return f"{cmd.name} completed"

    async def cmd_status(self, cmd: Command) -> str:
        if len(cmd.args) != 2 or not isinstance(cmd.args[1], list):
            raise Bad("STATUS takes a mailbox name and a list of items")
        folder = self._folder(folders.decode_name(cmd.args[0]))
        status = self.store.folder_status(folder.id)
        items: list[str] = []
        for item in cmd.args[1]:
            key = atom(item, "status item").upper()
            if key == "MESSAGES":
                items.append(f"MESSAGES {status.messages}")
            elif key == "UNSEEN":
                items.append(f"UNSEEN {status.unseen}")
            elif key == "UIDNEXT":
                items.append(f"UIDNEXT {status.uidnext}")
            elif key == "UIDVALIDITY":
                items.append(f"UIDVALIDITY {status.uidvalidity}")
            elif key == "RECENT":
                items.append(f"RECENT {self.server.registry.recent_count(folder.id, status)}")
            else:
                raise Bad(f"unknown STATUS item {key[:20]}")
        self._send(f"* STATUS {folders.encode_name(folder.name)} ({' '.join(items)})\r\n")
        return "STATUS completed"

    async def cmd_append(self, cmd: Command) -> str:
        args = cmd.args
        if len(args) < 2:
            raise Bad("APPEND takes a mailbox, optional flags and date, and a message literal")
        name = folders.decode_name(args[0])
        message = args[-1]
        if not isinstance(message, bytes):
            raise Bad("APPEND: the message must be a literal")
        flags: list[str] = []
        when: float | None = None
        for extra in args[1:-1]:
            if isinstance(extra, list):
                flags = [normalise_flag(atom(f, "flag")) for f in extra]
            elif isinstance(extra, bytes):
                try:
                    when = parse_date_time(extra.decode("latin-1"))
                except (ValueError, IndexError):
                    raise Bad("APPEND: invalid date-time") from None
            else:
                raise Bad(f"APPEND: unexpected {extra[:20]}")
        assert self.mailbox is not None
        folder = self.store.get_folder(self.mailbox.id, name)
        if folder is None:
            raise No(f"[TRYCREATE] no mailbox {name}")
        if len(message) > self.max_message_size:
            raise No("[TOOBIG] message over the size limit")
        # in a thread: a pathological message must not stall the other sessions
        meta = await asyncio.get_running_loop().run_in_executor(None, analyse_message, message)
        uid = await self.store.append(
            folder.id, message, [f for f in flags if f != "\\Recent"], when, meta
        )
        if self.selected is not None and self.selected.folder.id == folder.id:
            self.pending = True
        return f"[APPENDUID {folder.uidvalidity} {uid}] APPEND completed"
