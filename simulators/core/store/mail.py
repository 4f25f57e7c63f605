"""Mailboxes, folders, messages and flags, plus every mail a client submitted.

``MailStore`` is the interface the SMTP and IMAP servers use; ``SqliteMailStore``
is the embedded implementation. Raw messages live in ``blobs`` so that a message
listing never reads message bodies, and a submission delivered to several local
mailboxes is written once.

Writes go through :meth:`Database.write`, which returns only after the commit:
that is what makes a ``250`` durable.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from simulators.core.store.database import Database, Expected, Schema, register_schema

DEFAULT_FOLDERS = ("INBOX", "Sent", "Drafts", "Trash")
KNOWN_MAILBOX_TTL = 2.0  # seconds an existing mailbox is trusted at RCPT without a read

SCHEMA = Schema(
    "mail",
    (
        """
        CREATE TABLE mailboxes (
            id INTEGER PRIMARY KEY,
            address TEXT NOT NULL UNIQUE COLLATE NOCASE,
            type TEXT NOT NULL CHECK (type IN ('PER', 'ORG', 'APP')),
            display_name TEXT NOT NULL,
            entity TEXT NOT NULL,
            created_at REAL NOT NULL
        );
        CREATE TABLE folders (
            id INTEGER PRIMARY KEY,
            mailbox_id INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            uidvalidity INTEGER NOT NULL,
            uidnext INTEGER NOT NULL DEFAULT 1,
            subscribed INTEGER NOT NULL DEFAULT 1,
            UNIQUE (mailbox_id, name)
        );
        CREATE TABLE blobs (
            id INTEGER PRIMARY KEY,
            data BLOB NOT NULL
        );
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            folder_id INTEGER NOT NULL REFERENCES folders(id) ON DELETE CASCADE,
            uid INTEGER NOT NULL,
            blob_id INTEGER NOT NULL REFERENCES blobs(id),
            size INTEGER NOT NULL,
            internal_date REAL NOT NULL,
            flags TEXT NOT NULL DEFAULT '',
            meta TEXT,
            submission_id INTEGER,
            UNIQUE (folder_id, uid)
        );
        CREATE TABLE submissions (
            id INTEGER PRIMARY KEY,
            received_at REAL NOT NULL,
            session_id TEXT,
            mailbox_id INTEGER REFERENCES mailboxes(id) ON DELETE SET NULL,
            mail_from TEXT NOT NULL,
            rcpt_to TEXT NOT NULL,
            local_rcpts TEXT NOT NULL,
            outbound_rcpts TEXT NOT NULL,
            blob_id INTEGER NOT NULL REFERENCES blobs(id),
            size INTEGER NOT NULL
        );
        CREATE INDEX submissions_by_mailbox ON submissions(mailbox_id, id)
        """,
    ),
)
register_schema(SCHEMA)


class MailboxType(StrEnum):
    PER = "PER"  # personal: one professional, authenticates with PSC (XOAUTH2)
    ORG = "ORG"  # organisational: a service, authenticates with PSC (XOAUTH2)
    APP = "APP"  # applicative: software, mTLS ORG AUTH_CLI certificate + SASL PLAIN


class MailStoreError(Exception):
    """A request the store refuses (unknown mailbox, duplicate folder...)."""


@dataclass(frozen=True)
class Mailbox:
    id: int
    address: str
    type: MailboxType
    display_name: str
    entity: str
    created_at: float

    @property
    def domain(self) -> str:
        return self.address.rsplit("@", 1)[1]

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "address": self.address,
            "type": self.type.value,
            "display_name": self.display_name,
            "entity": self.entity,
            "created_at": self.created_at,
        }


@dataclass(frozen=True)
class Folder:
    id: int
    mailbox_id: int
    name: str
    uidvalidity: int
    uidnext: int
    subscribed: bool


@dataclass(frozen=True)
class MessageRow:
    id: int
    folder_id: int
    uid: int
    blob_id: int
    size: int
    internal_date: float
    flags: frozenset[str]
    meta: dict[str, Any] | None


@dataclass(frozen=True)
class Submission:
    """One mail accepted by the SMTP server (``250``)."""

    id: int
    received_at: float
    session_id: str | None
    mailbox_id: int | None
    mail_from: str
    rcpt_to: tuple[str, ...]
    local_rcpts: tuple[str, ...]
    outbound_rcpts: tuple[str, ...]
    blob_id: int
    size: int


@dataclass
class NewSubmission:
    session_id: str | None
    mailbox_id: int | None
    mail_from: str
    rcpt_to: Sequence[str]
    raw: bytes
    meta: dict[str, Any] | None = None
    received_at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class FolderStatus:
    messages: int
    unseen: int
    uidnext: int
    uidvalidity: int


class MailStore(Protocol):
    """What the mail servers need. A PostgreSQL store would implement the same."""

    # mailboxes
    def create_mailbox(
        self,
        address: str,
        type: MailboxType,
        display_name: str | None = None,
        entity: str | None = None,
    ) -> Mailbox: ...
    def get_mailbox(self, address: str) -> Mailbox | None: ...
    def get_mailbox_by_id(self, mailbox_id: int) -> Mailbox | None: ...
    def mailbox_exists(self, address: str) -> bool: ...
    def list_mailboxes(self) -> list[Mailbox]: ...
    def is_local_domain(self, domain: str) -> bool: ...

    # submissions (SMTP)
    def expect_write(self) -> Expected:
        """Announce a submission to come (group commit may wait for it); release it."""
        ...

    async def accept_submission(self, sub: NewSubmission) -> Submission: ...
    def list_submissions(
        self, *, mailbox_id: int | None = None, since_id: int = 0, outbound_only: bool = False
    ) -> list[Submission]: ...
    def blob(self, blob_id: int) -> bytes: ...

    # folders (IMAP)
    def list_folders(self, mailbox_id: int) -> list[Folder]: ...
    def get_folder(self, mailbox_id: int, name: str) -> Folder | None: ...
    def folder_by_id(self, folder_id: int) -> Folder | None: ...
    async def create_folder(self, mailbox_id: int, name: str) -> Folder: ...
    async def delete_folder(self, mailbox_id: int, name: str) -> None: ...
    async def rename_folder(self, mailbox_id: int, old: str, new: str) -> None: ...
    async def set_subscribed(self, mailbox_id: int, name: str, subscribed: bool) -> None: ...
    def folder_status(self, folder_id: int) -> FolderStatus: ...

    # messages (IMAP)
    def list_uids(self, folder_id: int) -> list[tuple[int, frozenset[str]]]: ...
    def fetch_rows(self, folder_id: int, uids: Iterable[int]) -> list[MessageRow]: ...
    async def append(
        self,
        folder_id: int,
        raw: bytes,
        flags: Iterable[str] = (),
        internal_date: float | None = None,
        meta: dict[str, Any] | None = None,
    ) -> int: ...
    async def set_meta(self, message_id: int, meta: dict[str, Any]) -> None: ...
    async def store_flags(
        self, folder_id: int, uids: Iterable[int], mode: str, flags: Iterable[str]
    ) -> dict[int, frozenset[str]]: ...
    async def copy(
        self, folder_id: int, uids: Iterable[int], dest_folder_id: int
    ) -> list[tuple[int, int]]: ...
    async def move(
        self, folder_id: int, uids: Iterable[int], dest_folder_id: int
    ) -> list[tuple[int, int]]: ...
    async def expunge(self, folder_id: int, uids: Iterable[int] | None = None) -> list[int]: ...

    # change notification (IDLE)
    def subscribe(self, callback: Callable[[int], None]) -> Callable[[], None]: ...


def _flags_text(flags: Iterable[str]) -> str:
    return " ".join(sorted(set(flags)))


def _flags_set(text: str) -> frozenset[str]:
    return frozenset(text.split()) if text else frozenset()


def _row_mailbox(row: sqlite3.Row) -> Mailbox:
    return Mailbox(
        row["id"],
        row["address"],
        MailboxType(row["type"]),
        row["display_name"],
        row["entity"],
        row["created_at"],
    )


def _row_folder(row: sqlite3.Row) -> Folder:
    return Folder(
        row["id"],
        row["mailbox_id"],
        row["name"],
        row["uidvalidity"],
        row["uidnext"],
        bool(row["subscribed"]),
    )


def _row_submission(row: sqlite3.Row) -> Submission:
    return Submission(
        row["id"],
        row["received_at"],
        row["session_id"],
        row["mailbox_id"],
        row["mail_from"],
        tuple(json.loads(row["rcpt_to"])),
        tuple(json.loads(row["local_rcpts"])),
        tuple(json.loads(row["outbound_rcpts"])),
        row["blob_id"],
        row["size"],
    )


def _uidvalidity() -> int:
    return int(time.time()) & 0x7FFFFFFF


class SqliteMailStore:
    """The embedded :class:`MailStore`."""

    def __init__(self, db: Database, local_domains: Iterable[str]) -> None:
        self.db = db
        db.ensure_schema(SCHEMA)
        self.local_domains = {d.lower() for d in local_domains}
        self._listeners: list[tuple[asyncio.AbstractEventLoop | None, Callable[[int], None]]] = []
        # Folders changed by the batch being written (writer thread only).
        self._touched: set[int] = set()
        self._known: dict[str, float] = {}  # address -> when it was last seen to exist

    # ---- mailboxes -----------------------------------------------------------------
    def create_mailbox(
        self,
        address: str,
        type: MailboxType,
        display_name: str | None = None,
        entity: str | None = None,
    ) -> Mailbox:
        address = address.strip()
        if address.count("@") != 1 or not all(address.split("@")):
            raise MailStoreError(f"not a mailbox address: {address!r}")
        domain = address.rsplit("@", 1)[1].lower()
        if not self.is_local_domain(domain):
            raise MailStoreError(
                f"{address}: the domain {domain} is not simulated here "
                f"(local domains: {', '.join(sorted(self.local_domains))})"
            )
        type = MailboxType(type)
        entity = entity or "ETABLISSEMENT SIMULATION"
        display_name = display_name or (
            address.split("@")[0] if type is MailboxType.PER else entity
        )

        def job(conn: sqlite3.Connection) -> int:
            try:
                cur = conn.execute(
                    "INSERT INTO mailboxes(address, type, display_name, entity, created_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (address, type.value, display_name, entity, time.time()),
                )
            except sqlite3.IntegrityError as exc:
                raise MailStoreError(f"mailbox {address} already exists") from exc
            mailbox_id = cur.lastrowid
            assert mailbox_id is not None
            for name in DEFAULT_FOLDERS:
                conn.execute(
                    "INSERT INTO folders(mailbox_id, name, uidvalidity) VALUES (?, ?, ?)",
                    (mailbox_id, name, _uidvalidity()),
                )
            return mailbox_id

        mailbox_id = self.db.write_sync(job)
        mailbox = self.get_mailbox_by_id(mailbox_id)
        assert mailbox is not None
        return mailbox

    def get_mailbox(self, address: str) -> Mailbox | None:
        row = self.db.read_one("SELECT * FROM mailboxes WHERE address = ?", (address.strip(),))
        return _row_mailbox(row) if row else None

    def get_mailbox_by_id(self, mailbox_id: int) -> Mailbox | None:
        row = self.db.read_one("SELECT * FROM mailboxes WHERE id = ?", (mailbox_id,))
        return _row_mailbox(row) if row else None

    def mailbox_exists(self, address: str) -> bool:
        """For RCPT: a read per recipient was 8 % of the SMTP loop's time under load.

        Only "exists" is remembered, for ``KNOWN_MAILBOX_TTL`` seconds: a mailbox
        created by another process is seen at once, one deleted by another process
        may still be accepted at RCPT for that long (the write job then finds it gone).
        """
        key = address.strip()
        now = time.monotonic()
        seen = self._known.get(key)
        if seen is not None and now - seen < KNOWN_MAILBOX_TTL:
            return True
        if self.db.read_one("SELECT 1 FROM mailboxes WHERE address = ?", (key,)):
            if len(self._known) > 10_000:
                self._known.clear()
            self._known[key] = now
            return True
        self._known.pop(key, None)
        return False

    def list_mailboxes(self) -> list[Mailbox]:
        return [_row_mailbox(r) for r in self.db.read("SELECT * FROM mailboxes ORDER BY address")]

    def is_local_domain(self, domain: str) -> bool:
        return domain.lower() in self.local_domains

    # ---- submissions ---------------------------------------------------------------
    def expect_write(self) -> Expected:
        return self.db.expect()

    async def accept_submission(self, sub: NewSubmission) -> Submission:
        """Store the submission and deliver it to local recipients, in one commit.

        Recipients are resolved inside the write job: it costs the event loop no read,
        and a mailbox deleted since RCPT is seen as gone.
        """
        meta_text = json.dumps(sub.meta) if sub.meta is not None else None
        touched: list[int] = []

        def job(conn: sqlite3.Connection) -> Submission:
            local: list[tuple[str, int]] = []  # (recipient, INBOX folder id)
            outbound: list[str] = []
            for rcpt in sub.rcpt_to:
                row = conn.execute(
                    "SELECT f.id FROM mailboxes m JOIN folders f ON f.mailbox_id = m.id"
                    " WHERE m.address = ? AND f.name = 'INBOX'",
                    (rcpt.strip(),),
                ).fetchone()
                if row is not None:
                    local.append((rcpt, row[0]))
                else:
                    outbound.append(rcpt)
            blob_id = conn.execute("INSERT INTO blobs(data) VALUES (?)", (sub.raw,)).lastrowid
            assert blob_id is not None
            cur = conn.execute(
                "INSERT INTO submissions(received_at, session_id, mailbox_id, mail_from, rcpt_to,"
                " local_rcpts, outbound_rcpts, blob_id, size) VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    sub.received_at,
                    sub.session_id,
                    sub.mailbox_id,
                    sub.mail_from,
                    json.dumps(list(sub.rcpt_to)),
                    json.dumps([r for r, _ in local]),
                    json.dumps(outbound),
                    blob_id,
                    len(sub.raw),
                ),
            )
            submission_id = cur.lastrowid
            assert submission_id is not None
            for folder_id in dict.fromkeys(f for _r, f in local):
                uid = self._next_uid(conn, folder_id)
                conn.execute(
                    "INSERT INTO messages(folder_id, uid, blob_id, size, internal_date, flags,"
                    " meta, submission_id) VALUES (?, ?, ?, ?, ?, '', ?, ?)",
                    (
                        folder_id,
                        uid,
                        blob_id,
                        len(sub.raw),
                        sub.received_at,
                        meta_text,
                        submission_id,
                    ),
                )
                touched.append(folder_id)
            self._notify_after_commit(touched)
            return Submission(
                submission_id,
                sub.received_at,
                sub.session_id,
                sub.mailbox_id,
                sub.mail_from,
                tuple(sub.rcpt_to),
                tuple(r for r, _ in local),
                tuple(outbound),
                blob_id,
                len(sub.raw),
            )

        return await self.db.write(job)

    def list_submissions(
        self, *, mailbox_id: int | None = None, since_id: int = 0, outbound_only: bool = False
    ) -> list[Submission]:
        sql = "SELECT * FROM submissions WHERE id > ?"
        params: list[Any] = [since_id]
        if mailbox_id is not None:
            sql += " AND mailbox_id = ?"
            params.append(mailbox_id)
        if outbound_only:
            sql += " AND outbound_rcpts != '[]'"
        return [_row_submission(r) for r in self.db.read(sql + " ORDER BY id", params)]

    def get_submission(self, submission_id: int) -> Submission | None:
        row = self.db.read_one("SELECT * FROM submissions WHERE id = ?", (submission_id,))
        return _row_submission(row) if row else None

    def blob(self, blob_id: int) -> bytes:
        row = self.db.read_one("SELECT data FROM blobs WHERE id = ?", (blob_id,))
        if row is None:
            raise MailStoreError(f"no stored message body {blob_id}")
        return bytes(row[0])

    # ---- folders -------------------------------------------------------------------
    def list_folders(self, mailbox_id: int) -> list[Folder]:
        rows = self.db.read(
            "SELECT * FROM folders WHERE mailbox_id = ? ORDER BY name", (mailbox_id,)
        )
        return [_row_folder(r) for r in rows]

    def get_folder(self, mailbox_id: int, name: str) -> Folder | None:
        if name.upper() == "INBOX":
            name = "INBOX"
        row = self.db.read_one(
            "SELECT * FROM folders WHERE mailbox_id = ? AND name = ?", (mailbox_id, name)
        )
        return _row_folder(row) if row else None

    def folder_by_id(self, folder_id: int) -> Folder | None:
        row = self.db.read_one("SELECT * FROM folders WHERE id = ?", (folder_id,))
        return _row_folder(row) if row else None

    async def create_folder(self, mailbox_id: int, name: str) -> Folder:
        if name.upper() == "INBOX":
            raise MailStoreError("INBOX already exists")

        def job(conn: sqlite3.Connection) -> int:
            try:
                cur = conn.execute(
                    "INSERT INTO folders(mailbox_id, name, uidvalidity) VALUES (?, ?, ?)",
                    (mailbox_id, name, _uidvalidity()),
                )
            except sqlite3.IntegrityError as exc:
                raise MailStoreError(f"folder {name} already exists") from exc
            assert cur.lastrowid is not None
            return cur.lastrowid

        folder = self.folder_by_id(await self.db.write(job))
        assert folder is not None
        return folder

    async def delete_folder(self, mailbox_id: int, name: str) -> None:
        if name.upper() == "INBOX":
            raise MailStoreError("INBOX cannot be deleted")

        def job(conn: sqlite3.Connection) -> None:
            cur = conn.execute(
                "DELETE FROM folders WHERE mailbox_id = ? AND name = ?", (mailbox_id, name)
            )
            if cur.rowcount == 0:
                raise MailStoreError(f"no folder {name}")

        await self.db.write(job)

    async def rename_folder(self, mailbox_id: int, old: str, new: str) -> None:
        if new.upper() == "INBOX":
            raise MailStoreError("cannot rename to INBOX")

        def job(conn: sqlite3.Connection) -> None:
            if old.upper() == "INBOX":
                # RFC 3501: renaming INBOX moves its messages to a new folder.
                src = conn.execute(
                    "SELECT id FROM folders WHERE mailbox_id = ? AND name = 'INBOX'", (mailbox_id,)
                ).fetchone()
                try:
                    cur = conn.execute(
                        "INSERT INTO folders(mailbox_id, name, uidvalidity, uidnext) "
                        "SELECT mailbox_id, ?, ?, uidnext FROM folders WHERE id = ?",
                        (new, _uidvalidity(), src[0]),
                    )
                except sqlite3.IntegrityError as exc:
                    raise MailStoreError(f"folder {new} already exists") from exc
                conn.execute(
                    "UPDATE messages SET folder_id = ? WHERE folder_id = ?", (cur.lastrowid, src[0])
                )
                return
            try:
                cur = conn.execute(
                    "UPDATE folders SET name = ? WHERE mailbox_id = ? AND name = ?",
                    (new, mailbox_id, old),
                )
            except sqlite3.IntegrityError as exc:
                raise MailStoreError(f"folder {new} already exists") from exc
            if cur.rowcount == 0:
                raise MailStoreError(f"no folder {old}")

        await self.db.write(job)

    async def set_subscribed(self, mailbox_id: int, name: str, subscribed: bool) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE folders SET subscribed = ? WHERE mailbox_id = ? AND name = ?",
                (int(subscribed), mailbox_id, name),
            )

        await self.db.write(job)

    def folder_status(self, folder_id: int) -> FolderStatus:
        row = self.db.read_one(
            "SELECT f.uidnext, f.uidvalidity, "
            " (SELECT count(*) FROM messages WHERE folder_id = f.id) AS n, "
            " (SELECT count(*) FROM messages WHERE folder_id = f.id "
            "   AND ' ' || flags || ' ' NOT LIKE '% \\Seen %') AS unseen "
            "FROM folders f WHERE f.id = ?",
            (folder_id,),
        )
        if row is None:
            raise MailStoreError(f"no folder {folder_id}")
        return FolderStatus(row["n"], row["unseen"], row["uidnext"], row["uidvalidity"])

    # ---- messages ------------------------------------------------------------------
    def list_uids(self, folder_id: int) -> list[tuple[int, frozenset[str]]]:
        rows = self.db.reader.execute(
            "SELECT uid, flags FROM messages WHERE folder_id = ? ORDER BY uid", (folder_id,)
        ).fetchall()
        return [(r[0], _flags_set(r[1])) for r in rows]

    def fetch_rows(self, folder_id: int, uids: Iterable[int]) -> list[MessageRow]:
        wanted = sorted(set(uids))
        if not wanted:
            return []
        rows: list[sqlite3.Row] = []
        # Chunked IN lists: SQLite's parameter limit is 32766 in recent versions.
        for start in range(0, len(wanted), 900):
            chunk = wanted[start : start + 900]
            marks = ",".join("?" * len(chunk))
            rows.extend(
                self.db.reader.execute(
                    "SELECT id, folder_id, uid, blob_id, size, internal_date, flags, meta "
                    f"FROM messages WHERE folder_id = ? AND uid IN ({marks}) ORDER BY uid",
                    (folder_id, *chunk),
                ).fetchall()
            )
        return [
            MessageRow(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                r[5],
                _flags_set(r[6]),
                json.loads(r[7]) if r[7] else None,
            )
            for r in rows
        ]

    async def append(
        self,
        folder_id: int,
        raw: bytes,
        flags: Iterable[str] = (),
        internal_date: float | None = None,
        meta: dict[str, Any] | None = None,
    ) -> int:
        flags_text = _flags_text(flags)
        when = internal_date if internal_date is not None else time.time()
        meta_text = json.dumps(meta) if meta is not None else None

        def job(conn: sqlite3.Connection) -> int:
            blob_id = conn.execute("INSERT INTO blobs(data) VALUES (?)", (raw,)).lastrowid
            uid = self._next_uid(conn, folder_id)
            conn.execute(
                "INSERT INTO messages(folder_id, uid, blob_id, size, internal_date, flags, meta)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (folder_id, uid, blob_id, len(raw), when, flags_text, meta_text),
            )
            self._notify_after_commit([folder_id])
            return uid

        return await self.db.write(job)

    async def set_meta(self, message_id: int, meta: dict[str, Any]) -> None:
        text = json.dumps(meta)
        await self.db.write(
            lambda conn: conn.execute(
                "UPDATE messages SET meta = ? WHERE id = ?", (text, message_id)
            )
        )

    async def store_flags(
        self, folder_id: int, uids: Iterable[int], mode: str, flags: Iterable[str]
    ) -> dict[int, frozenset[str]]:
        """``mode`` is ``set``, ``add`` or ``remove``. Returns the new flags per UID."""
        if mode not in {"set", "add", "remove"}:
            raise ValueError(mode)
        change = set(flags)
        wanted = sorted(set(uids))

        def job(conn: sqlite3.Connection) -> dict[int, frozenset[str]]:
            result: dict[int, frozenset[str]] = {}
            for start in range(0, len(wanted), 900):
                chunk = wanted[start : start + 900]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT id, uid, flags FROM messages WHERE folder_id = ? AND uid IN ({marks})",
                    (folder_id, *chunk),
                ).fetchall()
                updates = []
                for message_id, uid, text in rows:
                    current = set(_flags_set(text))
                    new = (
                        change
                        if mode == "set"
                        else (current | change if mode == "add" else current - change)
                    )
                    if new != current:
                        updates.append((_flags_text(new), message_id))
                    result[uid] = frozenset(new)
                conn.executemany("UPDATE messages SET flags = ? WHERE id = ?", updates)
            self._notify_after_commit([folder_id])
            return result

        return await self.db.write(job)

    async def copy(
        self, folder_id: int, uids: Iterable[int], dest_folder_id: int
    ) -> list[tuple[int, int]]:
        return await self._copy(folder_id, uids, dest_folder_id, move=False)

    async def move(
        self, folder_id: int, uids: Iterable[int], dest_folder_id: int
    ) -> list[tuple[int, int]]:
        return await self._copy(folder_id, uids, dest_folder_id, move=True)

    async def _copy(
        self, folder_id: int, uids: Iterable[int], dest_folder_id: int, *, move: bool
    ) -> list[tuple[int, int]]:
        wanted = sorted(set(uids))

        def job(conn: sqlite3.Connection) -> list[tuple[int, int]]:
            mapping: list[tuple[int, int]] = []
            for uid in wanted:
                row = conn.execute(
                    "SELECT id, blob_id, size, internal_date, flags, meta, submission_id "
                    "FROM messages WHERE folder_id = ? AND uid = ?",
                    (folder_id, uid),
                ).fetchone()
                if row is None:
                    continue
                new_uid = self._next_uid(conn, dest_folder_id)
                conn.execute(
                    "INSERT INTO messages(folder_id, uid, blob_id, size, internal_date, flags,"
                    " meta, submission_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (dest_folder_id, new_uid, row[1], row[2], row[3], row[4], row[5], row[6]),
                )
                if move:
                    conn.execute("DELETE FROM messages WHERE id = ?", (row[0],))
                mapping.append((uid, new_uid))
            self._notify_after_commit([folder_id, dest_folder_id])
            return mapping

        return await self.db.write(job)

    async def expunge(self, folder_id: int, uids: Iterable[int] | None = None) -> list[int]:
        """Remove messages flagged ``\\Deleted`` (restricted to ``uids`` if given)."""
        restrict = None if uids is None else set(uids)

        def job(conn: sqlite3.Connection) -> list[int]:
            rows = conn.execute(
                "SELECT id, uid FROM messages WHERE folder_id = ? "
                "AND ' ' || flags || ' ' LIKE '% \\Deleted %' ORDER BY uid",
                (folder_id,),
            ).fetchall()
            gone = [(mid, uid) for mid, uid in rows if restrict is None or uid in restrict]
            conn.executemany("DELETE FROM messages WHERE id = ?", [(mid,) for mid, _ in gone])
            self._notify_after_commit([folder_id])
            return [uid for _mid, uid in gone]

        return await self.db.write(job)

    # ---- internals -----------------------------------------------------------------
    @staticmethod
    def _next_uid(conn: sqlite3.Connection, folder_id: int) -> int:
        row = conn.execute(
            "UPDATE folders SET uidnext = uidnext + 1 WHERE id = ? RETURNING uidnext - 1",
            (folder_id,),
        ).fetchone()
        if row is None:
            raise MailStoreError(f"no folder {folder_id}")
        return int(row[0])

    def subscribe(self, callback: Callable[[int], None]) -> Callable[[], None]:
        """Call ``callback(folder_id)`` on the caller's event loop after a change commits."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        entry = (loop, callback)
        self._listeners.append(entry)

        def unsubscribe() -> None:
            if entry in self._listeners:
                self._listeners.remove(entry)

        return unsubscribe

    def _notify_after_commit(self, folder_ids: list[int]) -> None:
        # Called inside write jobs (writer thread). The folders of a whole batch are
        # announced together after its commit: one hop into each loop, not one per mail.
        if not self._listeners or not folder_ids:
            return
        self._touched.update(folder_ids)
        self.db.on_commit(self._fire_touched)  # once per batch: on_commit deduplicates

    def _fire_touched(self) -> None:
        ids, self._touched = sorted(self._touched), set()
        for loop, callback in list(self._listeners):
            if loop is None:
                _call_each(callback, ids)
            elif not loop.is_closed():
                loop.call_soon_threadsafe(_call_each, callback, ids)

    # ---- mailbox deletion (segur-sim bal delete, DELETE /api/mss/mailboxes/{address}) ----
    def delete_mailbox(self, mailbox_id: int) -> MailboxDeletion | None:
        """Remove a mailbox with its folders, messages and flags, in one commit.

        Rows that point at the mailbox from elsewhere follow the schema: its PSC
        identity and refresh tokens go with it (``ON DELETE CASCADE``); its submissions
        stay, with no owner (``ON DELETE SET NULL``): they are the mail as the client
        sent it, the evidence of past verdicts. A message body is dropped only when no
        other message and no submission still uses it. ``None`` if it did not exist.
        """

        def job(conn: sqlite3.Connection) -> MailboxDeletion | None:
            row = conn.execute("SELECT * FROM mailboxes WHERE id = ?", (mailbox_id,)).fetchone()
            if row is None:
                return None
            box = _row_mailbox(row)
            folders = conn.execute(
                "SELECT COUNT(*) FROM folders WHERE mailbox_id = ?", (mailbox_id,)
            ).fetchone()[0]
            blob_ids = [
                r[0]
                for r in conn.execute(
                    "SELECT DISTINCT m.blob_id FROM messages m JOIN folders f"
                    " ON f.id = m.folder_id WHERE f.mailbox_id = ?",
                    (mailbox_id,),
                ).fetchall()
            ]
            messages = conn.execute(
                "SELECT COUNT(*) FROM messages m JOIN folders f ON f.id = m.folder_id"
                " WHERE f.mailbox_id = ?",
                (mailbox_id,),
            ).fetchone()[0]
            kept = conn.execute(
                "SELECT COUNT(*) FROM submissions WHERE mailbox_id = ?", (mailbox_id,)
            ).fetchone()[0]
            conn.execute(
                "DELETE FROM messages WHERE folder_id IN"
                " (SELECT id FROM folders WHERE mailbox_id = ?)",
                (mailbox_id,),
            )
            conn.execute("DELETE FROM mailboxes WHERE id = ?", (mailbox_id,))
            freed = 0
            for blob_id in blob_ids:
                freed += conn.execute(
                    "DELETE FROM blobs WHERE id = ?"
                    " AND NOT EXISTS (SELECT 1 FROM messages WHERE blob_id = ?)"
                    " AND NOT EXISTS (SELECT 1 FROM submissions WHERE blob_id = ?)",
                    (blob_id, blob_id, blob_id),
                ).rowcount
            return MailboxDeletion(box, int(folders), int(messages), freed, int(kept))

        deletion = self.db.write_sync(job)
        self._known.clear()
        return deletion


@dataclass(frozen=True)
class MailboxDeletion:
    """What :meth:`SqliteMailStore.delete_mailbox` removed, and what it kept."""

    mailbox: Mailbox
    folders: int
    messages: int
    bodies_freed: int  # stored message bodies no other message or submission used
    submissions_kept: int  # mail this address submitted, kept as evidence (no owner now)


def _call_each(callback: Callable[[int], None], folder_ids: list[int]) -> None:
    for folder_id in folder_ids:
        callback(folder_id)
