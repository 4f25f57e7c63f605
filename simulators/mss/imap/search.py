"""SEARCH: criteria parsed into predicates over one message at a time.

A compiled program says what it needs (flags only, rows with size/date/meta, or the
raw message for BODY/TEXT/HEADER) so the session loads just that, in bulk.
String matches are case-insensitive substrings on decoded values (RFC 2047 words,
transfer encodings and charsets of text parts are decoded first).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from simulators.core.store.mail import MessageRow
from simulators.mss.imap.parser import (
    ParseError,
    SeqRange,
    Value,
    astring,
    parse_sequence_set,
)
from simulators.mss.imap.responses import normalise_flag, parse_date
from simulators.mss.mime import body_text, decode_words, header_text

SUPPORTED_CHARSETS = ("UTF-8", "US-ASCII")


class BadCharset(Exception):
    pass


@dataclass
class SearchMessage:
    """One candidate. ``row``/``meta``/``raw`` are filled in as the program needs them."""

    seq: int
    uid: int
    flags: frozenset[str]
    recent: bool
    row: MessageRow | None = None
    meta: dict[str, Any] | None = None
    raw_loader: Callable[[], bytes] | None = None
    _raw: bytes | None = None
    _cache: dict[str, str] = field(default_factory=dict)

    @property
    def raw(self) -> bytes:
        if self._raw is None:
            assert self.raw_loader is not None
            self._raw = self.raw_loader()
        return self._raw

    def text(self, what: str) -> str:
        """Lower-cased searchable text: ``body``, ``header`` or a header name."""
        cached = self._cache.get(what)
        if cached is not None:
            return cached
        meta = self.meta or {}
        if what == "body":
            value = body_text(self.raw, meta)
        elif what == "header":
            value = header_text(self.raw, meta)
        else:
            value = meta.get("h", {}).get(what, "")
        value = value.casefold()
        self._cache[what] = value
        return value


Predicate = Callable[[SearchMessage], bool]


@dataclass
class SearchProgram:
    match: Predicate
    needs_rows: bool = False
    needs_raw: bool = False


class _Needs:
    def __init__(self) -> None:
        self.rows = False
        self.raw = False
        self.depth = 0  # nesting of NOT / OR / groups, bounded by MAX_KEY_DEPTH


MAX_KEY_DEPTH = 200


def compile_search(args: list[Value], *, count: int, uids: list[int]) -> SearchProgram:
    """``count``: messages in the snapshot (``*`` of sequence sets); ``uids``: its UIDs."""
    pos = 0
    if args and isinstance(args[0], str) and args[0].upper() == "CHARSET":
        if len(args) < 2:
            raise ParseError("CHARSET needs a name")
        charset = astring(args[1]).decode("latin-1").upper()
        if charset not in SUPPORTED_CHARSETS:
            raise BadCharset(charset)
        pos = 2
    needs = _Needs()
    ctx = _Context(args, pos, needs, count, uids[-1] if uids else 0)
    preds: list[Predicate] = []
    while ctx.pos < len(args):
        preds.append(ctx.key())
    if not preds:
        raise ParseError("SEARCH needs at least one criterion")
    return SearchProgram(_all(preds), needs.rows, needs.raw)


def _all(preds: list[Predicate]) -> Predicate:
    if len(preds) == 1:
        return preds[0]
    return lambda m: all(p(m) for p in preds)


def _in_ranges(ranges: list[SeqRange], star: int, *, uid: bool) -> Callable[[int], bool]:
    resolved: list[tuple[int, int]] = []
    for a, b in ranges:
        a = star if a == 0 else a
        b = star if b == 0 else b
        if a > b:
            a, b = b, a
        resolved.append((a, b))
    return lambda n: any(a <= n <= b for a, b in resolved)


def _day(stamp: float) -> tuple[int, int, int]:
    t = time.gmtime(stamp)
    return t.tm_year, t.tm_mon, t.tm_mday


def _sent_day(m: SearchMessage) -> tuple[int, int, int]:
    sent = (m.meta or {}).get("sent")
    if sent:
        y, mo, d = sent.split("-")
        return int(y), int(mo), int(d)
    assert m.row is not None
    return _day(m.row.internal_date)  # no usable Date header: as Dovecot, the internal date


class _Context:
    def __init__(
        self, args: list[Value], pos: int, needs: _Needs, count: int, last_uid: int
    ) -> None:
        self.args = args
        self.pos = pos
        self.needs = needs
        self.count = count
        self.last_uid = last_uid

    def _next(self, what: str) -> Value:
        if self.pos >= len(self.args):
            raise ParseError(f"SEARCH {what}: missing argument")
        value = self.args[self.pos]
        self.pos += 1
        return value

    def _string(self, what: str) -> str:
        data = astring(self._next(what), what)
        try:
            return data.decode("utf-8").casefold()
        except UnicodeDecodeError:
            return data.decode("latin-1").casefold()

    def _date(self, what: str) -> tuple[int, int, int]:
        value = self._next(what)
        try:
            return parse_date(astring(value).decode("latin-1"))
        except (ValueError, IndexError):
            raise ParseError(f"SEARCH {what}: invalid date (expected 1-Feb-2024)") from None

    def _number(self, what: str) -> int:
        value = self._next(what)
        if not isinstance(value, str) or not value.isdigit():
            raise ParseError(f"SEARCH {what}: expected a number")
        return int(value)

    def key(self) -> Predicate:
        self.needs.depth += 1
        try:
            if self.needs.depth > MAX_KEY_DEPTH:
                raise ParseError(f"SEARCH keys nested more than {MAX_KEY_DEPTH} deep")
            return self._key()
        finally:
            self.needs.depth -= 1

    def _key(self) -> Predicate:
        value = self._next("criterion")
        if isinstance(value, list):
            sub = _Context(value, 0, self.needs, self.count, self.last_uid)
            preds = []
            while sub.pos < len(value):
                preds.append(sub.key())
            if not preds:
                raise ParseError("empty SEARCH group")
            return _all(preds)
        if not isinstance(value, str):
            raise ParseError("SEARCH: expected a search key")
        key = value.upper()
        flag_keys: dict[str, tuple[str, bool]] = {
            "ANSWERED": ("\\Answered", True),
            "UNANSWERED": ("\\Answered", False),
            "DELETED": ("\\Deleted", True),
            "UNDELETED": ("\\Deleted", False),
            "DRAFT": ("\\Draft", True),
            "UNDRAFT": ("\\Draft", False),
            "FLAGGED": ("\\Flagged", True),
            "UNFLAGGED": ("\\Flagged", False),
            "SEEN": ("\\Seen", True),
            "UNSEEN": ("\\Seen", False),
        }
        if key in flag_keys:
            flag, present = flag_keys[key]
            return (lambda m: flag in m.flags) if present else (lambda m: flag not in m.flags)
        if key == "ALL":
            return lambda m: True
        if key in ("KEYWORD", "UNKEYWORD"):
            word = normalise_flag(astring(self._next(key)).decode("latin-1"))
            if key == "KEYWORD":
                return lambda m: word in m.flags
            return lambda m: word not in m.flags
        if key == "RECENT":
            return lambda m: m.recent
        if key == "OLD":
            return lambda m: not m.recent
        if key == "NEW":
            return lambda m: m.recent and "\\Seen" not in m.flags
        if key == "NOT":
            inner = self.key()
            return lambda m: not inner(m)
        if key == "OR":
            left, right = self.key(), self.key()
            return lambda m: left(m) or right(m)
        if key == "UID":
            ranges = parse_sequence_set(atom_text(self._next("UID")))
            inside = _in_ranges(ranges, self.last_uid, uid=True)
            return lambda m: inside(m.uid)
        if key in ("FROM", "TO", "CC", "BCC", "SUBJECT"):
            needle = self._string(key)
            name = key.lower()
            self.needs.rows = True
            return lambda m: needle in m.text(name)
        if key == "HEADER":
            field_name = astring(self._next("HEADER")).decode("latin-1").lower()
            needle = self._string("HEADER")
            self.needs.rows = self.needs.raw = True
            return lambda m: _header_contains(m, field_name, needle)
        if key in ("BODY", "TEXT"):
            needle = self._string(key)
            self.needs.rows = self.needs.raw = True
            if key == "BODY":
                return lambda m: needle in m.text("body")
            return lambda m: needle in m.text("header") or needle in m.text("body")
        if key in ("BEFORE", "ON", "SINCE"):
            day = self._date(key)
            self.needs.rows = True
            return _date_pred(key, day, lambda m: _day(_row(m).internal_date))
        if key in ("SENTBEFORE", "SENTON", "SENTSINCE"):
            day = self._date(key)
            self.needs.rows = True
            return _date_pred(key[4:], day, _sent_day)
        if key in ("LARGER", "SMALLER"):
            size = self._number(key)
            self.needs.rows = True
            if key == "LARGER":
                return lambda m: _row(m).size > size
            return lambda m: _row(m).size < size
        if key[:1].isdigit() or key[:1] == "*":
            ranges = parse_sequence_set(value)
            inside = _in_ranges(ranges, self.count, uid=False)
            return lambda m: inside(m.seq)
        raise ParseError(f"unknown SEARCH key {value[:30]}")


def atom_text(value: Value) -> str:
    if isinstance(value, list):
        raise ParseError("expected a sequence set")
    return value if isinstance(value, str) else value.decode("latin-1")


def _row(m: SearchMessage) -> MessageRow:
    assert m.row is not None
    return m.row


def _date_pred(
    kind: str, day: tuple[int, int, int], get: Callable[[SearchMessage], tuple[int, int, int]]
) -> Predicate:
    if kind == "BEFORE":
        return lambda m: get(m) < day
    if kind == "ON":
        return lambda m: get(m) == day
    return lambda m: get(m) >= day


def _header_contains(m: SearchMessage, name: str, needle: str) -> bool:
    meta = m.meta or {}
    start, end = meta["tree"]["h"]
    block = m.raw[start:end].decode("latin-1")
    found = False
    current: str | None = None
    values: list[str] = []
    for line in block.split("\n"):
        if line[:1] in (" ", "\t"):
            if current is not None:
                values[-1] += line.rstrip("\r")
            continue
        key, colon, value = line.partition(":")
        current = None
        if colon and key.strip().lower() == name:
            current = name
            values.append(value.rstrip("\r"))
            found = True
    if not found:
        return False
    if not needle:
        return True
    return any(needle in decode_words(v.strip()).casefold() for v in values)
