"""IMAP command syntax: tokens, lists, strings, literals and sequence sets.

The reader (``session.py``) hands us a command as segments: the text of each line
and the data of each literal in between. Values come back as

- ``str``   an atom (``FETCH``, ``\\Seen``, ``1:*``, ``BODY[HEADER.FIELDS (A B)]<0.9>``),
- ``bytes`` a quoted string or a literal,
- ``list``  a parenthesised list.

so ``NIL`` the atom and ``"NIL"`` the string stay distinct.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

Value = str | bytes | list["Value"]

LITERAL_AT_END = re.compile(rb"\{(\d{1,12})(\+?)\}\Z")
_TAG_RE = re.compile(r'[^\x00-\x20\x7f(){%*"\\\]+]+\Z')  # atom chars minus "+" (RFC 3501)
_ATOM_STOP = frozenset(b' ()"{\r\n')
MAX_LIST_DEPTH = 100  # deeper nesting is refused (it would exhaust the recursion limit)


class ParseError(Exception):
    """A command we cannot parse; ``str(exc)`` is the reason sent after ``BAD``."""


@dataclass(frozen=True)
class Literal:
    data: bytes


Segment = bytes | Literal


@dataclass
class Command:
    tag: str
    name: str
    args: list[Value]


def parse_command(segments: list[Segment]) -> Command:
    """Parse a whole command (tag, name, arguments)."""
    values = _Tokenizer(segments).parse_all()
    if not values or not isinstance(values[0], str):
        raise ParseError("missing tag")
    tag = values[0]
    if not _TAG_RE.match(tag):
        raise ParseError("invalid tag")
    if len(values) < 2 or not isinstance(values[1], str):
        raise ParseError("missing command")
    return Command(tag, values[1].upper(), values[2:])


def valid_tag(tag: str) -> bool:
    return bool(_TAG_RE.match(tag))


def peek_tag_and_name(line: bytes) -> tuple[str | None, str]:
    """Tag and command name from a command's first line, before its literals are read."""
    parts = line.split(b" ", 3)
    tag = parts[0].decode("latin-1") if parts and parts[0] else None
    name = parts[1].decode("latin-1").upper() if len(parts) > 1 else ""
    if name == "UID" and len(parts) > 2:
        name = "UID " + parts[2].decode("latin-1").upper()
    return tag, name


class _Tokenizer:
    def __init__(self, segments: list[Segment]) -> None:
        self.segments = segments
        self.index = 0
        self.pos = 0

    def _text(self) -> bytes | None:
        while self.index < len(self.segments):
            seg = self.segments[self.index]
            if isinstance(seg, Literal):
                return None
            if self.pos < len(seg):
                return seg
            self.index += 1
            self.pos = 0
        return None

    def parse_all(self) -> list[Value]:
        values = self._sequence(closing=False)
        if self.index < len(self.segments):
            raise ParseError("unexpected ')'")
        return values

    def _sequence(self, *, closing: bool, depth: int = 0) -> list[Value]:
        out: list[Value] = []
        while True:
            # skip spaces
            text = self._text()
            while text is not None and text[self.pos] == 0x20:
                self.pos += 1
                text = self._text()
            if self.index >= len(self.segments):
                if closing:
                    raise ParseError("missing ')'")
                return out
            seg = self.segments[self.index]
            if isinstance(seg, Literal):
                out.append(seg.data)
                self.index += 1
                self.pos = 0
                continue
            assert text is not None
            ch = text[self.pos]
            if ch == 0x28:  # (
                if depth >= MAX_LIST_DEPTH:
                    raise ParseError(f"lists nested more than {MAX_LIST_DEPTH} deep")
                self.pos += 1
                out.append(self._sequence(closing=True, depth=depth + 1))
            elif ch == 0x29:  # )
                if not closing:
                    raise ParseError("unexpected ')'")
                self.pos += 1
                return out
            elif ch == 0x22:  # "
                out.append(self._quoted(text))
            else:
                out.append(self._atom(text))

    def _quoted(self, text: bytes) -> bytes:
        i = self.pos + 1
        buf = bytearray()
        n = len(text)
        while i < n:
            c = text[i]
            if c == 0x5C:  # backslash
                if i + 1 >= n:
                    break
                buf.append(text[i + 1])
                i += 2
                continue
            if c == 0x22:
                self.pos = i + 1
                return bytes(buf)
            buf.append(c)
            i += 1
        raise ParseError("unterminated quoted string")

    def _atom(self, text: bytes) -> str:
        start = i = self.pos
        n = len(text)
        while i < n:
            c = text[i]
            if c == 0x5B:  # [ ... ]: section specs hold spaces and parentheses
                close = text.find(b"]", i)
                if close < 0:
                    raise ParseError("missing ']'")
                i = close + 1
                continue
            if c in _ATOM_STOP:
                break
            if c < 0x20 or c == 0x7F:
                raise ParseError("control character in command")
            i += 1
        if i == start:
            raise ParseError(f"unexpected character {chr(text[i])!r}")
        self.pos = i
        return text[start:i].decode("latin-1")


# ---- argument helpers --------------------------------------------------------------------
def astring(value: Value, what: str = "argument") -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("latin-1")
    raise ParseError(f"{what}: expected a string, got a list")


def text_arg(value: Value, what: str = "argument") -> str:
    data = astring(value, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def atom(value: Value, what: str = "argument") -> str:
    if not isinstance(value, str):
        raise ParseError(f"{what}: expected an atom")
    return value


# ---- sequence sets -----------------------------------------------------------------------
SeqRange = tuple[int, int]  # inclusive; 0 stands for "*"


def parse_sequence_set(text: str) -> list[SeqRange]:
    if not text:
        raise ParseError("empty sequence set")
    ranges: list[SeqRange] = []
    for part in text.split(","):
        lo, sep, hi = part.partition(":")
        try:
            a = 0 if lo == "*" else int(lo)
            b = (0 if hi == "*" else int(hi)) if sep else a
        except ValueError:
            raise ParseError(f"invalid sequence set {text[:40]!r}") from None
        if (lo != "*" and a <= 0) or (sep and hi != "*" and b <= 0):
            raise ParseError("sequence numbers and UIDs start at 1")
        ranges.append((a, b))
    return ranges


def is_sequence_set(text: str) -> bool:
    try:
        parse_sequence_set(text)
    except ParseError:
        return False
    return True


def expand_seq(ranges: list[SeqRange], count: int) -> list[int]:
    """Message sequence numbers (1-based, sorted, unique). ``*`` is ``count``."""
    out: set[int] = set()
    for a, b in ranges:
        a = count if a == 0 else a
        b = count if b == 0 else b
        if a > b:
            a, b = b, a
        if b > count or a < 1:
            raise ParseError("no such message (sequence number out of range)")
        out.update(range(a, b + 1))
    return sorted(out)


def expand_uids(ranges: list[SeqRange], uids: list[int]) -> list[int]:
    """The UIDs of ``uids`` (sorted) in the set. ``n:*`` always includes the last UID."""
    if not uids:
        return []
    last = uids[-1]
    wanted: list[tuple[int, int]] = []
    for a, b in ranges:
        a = last if a == 0 else a
        b = last if b == 0 else b
        if a > b:
            a, b = b, a
        wanted.append((a, b))
    if len(wanted) == 1:
        a, b = wanted[0]
        if a <= uids[0] and b >= last:
            return list(uids)
        from bisect import bisect_left, bisect_right

        return uids[bisect_left(uids, a) : bisect_right(uids, b)]
    return [u for u in uids if any(a <= u <= b for a, b in wanted)]


def format_uid_set(uids: list[int]) -> str:
    """Compact ``1:3,7`` form (UIDPLUS answers)."""
    if not uids:
        return ""
    parts: list[str] = []
    start = prev = uids[0]
    for uid in uids[1:]:
        if uid == prev + 1:
            prev = uid
            continue
        parts.append(f"{start}:{prev}" if prev != start else str(start))
        start = prev = uid
    parts.append(f"{start}:{prev}" if prev != start else str(start))
    return ",".join(parts)
