"""FETCH: attribute parsing, section extraction by byte offsets, response rendering.

ENVELOPE, BODY and BODYSTRUCTURE come pre-formatted from the message's ``meta``
(see ``simulators/mss/mime.py``); a section fetch is a slice of the raw message at
the offsets stored in ``meta["tree"]``. Nothing is re-parsed per FETCH except the
header lines of a ``HEADER.FIELDS`` request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from simulators.core.store.mail import MessageRow
from simulators.mss.imap.parser import ParseError, Value
from simulators.mss.imap.responses import format_flags, internal_date

_SIMPLE = frozenset(
    {
        "FLAGS",
        "UID",
        "INTERNALDATE",
        "RFC822.SIZE",
        "ENVELOPE",
        "BODYSTRUCTURE",
        "BODY",
        "RFC822",
        "RFC822.HEADER",
        "RFC822.TEXT",
    }
)
_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_SECTION_ATT = re.compile(
    r"(BODY|BODY\.PEEK|BINARY|BINARY\.PEEK)\[([^\]]*)\](?:<(\d+)(?:\.(\d+))?>)?\Z", re.I
)
_SECTION_TEXTS = frozenset({"", "HEADER", "TEXT", "MIME", "HEADER.FIELDS", "HEADER.FIELDS.NOT"})
_HEADER_LINE = re.compile(rb"^([^:\s]+)[ \t]*:", re.M)


@dataclass(frozen=True)
class Section:
    parts: tuple[int, ...]
    text: str  # "", HEADER, TEXT, MIME, HEADER.FIELDS, HEADER.FIELDS.NOT
    fields: tuple[str, ...] = ()

    def label(self) -> str:
        out = ".".join(str(p) for p in self.parts)
        if self.text:
            out = f"{out}.{self.text}" if out else self.text
        if self.fields:
            out += " (" + " ".join(self.fields) + ")"
        return out


@dataclass(frozen=True)
class FetchAtt:
    name: str  # FLAGS, UID, ..., or SECTION for BODY[...]
    section: Section | None = None
    peek: bool = True
    partial: tuple[int, int | None] | None = None

    @property
    def needs_blob(self) -> bool:
        return self.name in ("SECTION", "RFC822", "RFC822.HEADER", "RFC822.TEXT")

    @property
    def needs_meta(self) -> bool:
        return self.name in (
            "ENVELOPE",
            "BODYSTRUCTURE",
            "BODY",
            "SECTION",
            "RFC822.HEADER",
            "RFC822.TEXT",
        )

    @property
    def sets_seen(self) -> bool:
        return self.name in ("RFC822", "RFC822.TEXT") or (self.name == "SECTION" and not self.peek)


def parse_fetch_atts(args: list[Value]) -> list[FetchAtt]:
    if len(args) != 1:
        raise ParseError("FETCH takes a sequence set and one attribute or a list")
    arg = args[0]
    items: list[Value] = arg if isinstance(arg, list) else [arg]
    if not items:
        raise ParseError("empty FETCH attribute list")
    atts: list[FetchAtt] = []
    for item in items:
        if not isinstance(item, str):
            raise ParseError("FETCH attributes are atoms")
        upper = item.upper()
        if upper in _MACROS and not isinstance(arg, list):
            atts.extend(FetchAtt(name) for name in _MACROS[upper])
        elif upper in _SIMPLE:
            atts.append(FetchAtt(upper))
        else:
            atts.append(_section_att(item))
    return atts


def _section_att(item: str) -> FetchAtt:
    match = _SECTION_ATT.match(item)
    if match is None:
        raise ParseError(f"unknown FETCH attribute {item[:40]}")
    kind, spec = match.group(1).upper(), match.group(2)
    if kind.startswith("BINARY"):
        raise ParseError("BINARY is not supported")
    partial: tuple[int, int | None] | None = None
    if match.group(3) is not None:
        length = int(match.group(4)) if match.group(4) is not None else None
        partial = (int(match.group(3)), length)
    return FetchAtt("SECTION", parse_section(spec), peek=kind.endswith("PEEK"), partial=partial)


def parse_section(spec: str) -> Section:
    head, _sp, rest = spec.strip().partition(" ")
    pieces = head.split(".") if head else []
    parts: list[int] = []
    while pieces and pieces[0].isdigit():
        number = int(pieces.pop(0))
        if number < 1:
            raise ParseError("section part numbers start at 1")
        parts.append(number)
    text = ".".join(pieces).upper()
    if text not in _SECTION_TEXTS:
        raise ParseError(f"invalid section {spec[:40]!r}")
    if text == "MIME" and not parts:
        raise ParseError("MIME needs a part number")
    fields: tuple[str, ...] = ()
    if text.startswith("HEADER.FIELDS"):
        rest = rest.strip()
        if not (rest.startswith("(") and rest.endswith(")")):
            raise ParseError("HEADER.FIELDS needs a parenthesised list of header names")
        fields = tuple(f.strip('"') for f in rest[1:-1].split() if f.strip('"'))
        if not fields:
            raise ParseError("empty header list")
    elif rest.strip():
        raise ParseError(f"invalid section {spec[:40]!r}")
    return Section(tuple(parts), text, fields)


# ---- section extraction --------------------------------------------------------------
Node = dict[str, Any]


def _child(node: Node, number: int) -> Node | None:
    """Part ``number`` inside ``node`` (RFC 3501 6.4.5 part numbering)."""
    if "c" in node:
        children: list[Node] = node["c"]
        return children[number - 1] if number <= len(children) else None
    if "m" in node:
        return _child(node["m"], number)
    return node if number == 1 else None


def section_data(raw: bytes, tree: Node, section: Section) -> bytes | None:
    """The octets of a section, or None when the part does not exist."""
    node: Node | None = tree
    for number in section.parts:
        assert node is not None
        node = _child(node, number)
        if node is None:
            return None
    assert node is not None
    text = section.text
    if not text:
        if not section.parts:
            return raw
        return raw[node["b"][0] : node["b"][1]]
    if text == "MIME":
        return raw[node["h"][0] : node["h"][1]]
    if section.parts:
        # HEADER/TEXT of a part address the message it encapsulates.
        if "m" not in node:
            return None
        node = node["m"]
    if text == "TEXT":
        return raw[node["b"][0] : node["b"][1]]
    header = raw[node["h"][0] : node["h"][1]]
    if text == "HEADER":
        return header
    return filter_headers(header, section.fields, exclude=text.endswith(".NOT"))


def filter_headers(header: bytes, fields: tuple[str, ...], *, exclude: bool) -> bytes:
    wanted = {f.lower().encode("latin-1", "replace") for f in fields}
    matches = list(_HEADER_LINE.finditer(header))
    out: list[bytes] = []
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(header)
        keep = (match.group(1).lower() in wanted) != exclude
        if keep:
            chunk = header[match.start() : end]
            # the header block's final blank line is added once below
            chunk = chunk.rstrip(b"\r\n") + b"\r\n"
            out.append(chunk)
    out.append(b"\r\n")
    return b"".join(out)


# ---- rendering -------------------------------------------------------------------------
def _literal(data: bytes) -> str:
    return f"{{{len(data)}}}\r\n" + data.decode("latin-1")


def render_fetch(
    atts: list[FetchAtt],
    seq: int,
    row: MessageRow,
    flags: frozenset[str],
    meta: dict[str, Any] | None,
    raw: bytes | None,
) -> tuple[str, str | None]:
    """``* seq FETCH (...)`` (with CRLF) and, when it holds literals, the recorded form."""
    items: list[str] = []
    shown: list[str] | None = None  # the recorded variant, built only with literals
    for att in atts:
        name = att.name
        if name == "FLAGS":
            value = "FLAGS " + format_flags(flags)
        elif name == "UID":
            value = f"UID {row.uid}"
        elif name == "INTERNALDATE":
            value = "INTERNALDATE " + internal_date(row.internal_date)
        elif name == "RFC822.SIZE":
            value = f"RFC822.SIZE {row.size}"
        elif name == "ENVELOPE":
            assert meta is not None
            value = "ENVELOPE " + meta["env"]
        elif name == "BODYSTRUCTURE":
            assert meta is not None
            value = "BODYSTRUCTURE " + meta["bs"]
        elif name == "BODY":
            assert meta is not None
            value = "BODY " + meta["body"]
        else:
            assert raw is not None
            if name == "SECTION":
                assert att.section is not None and meta is not None
                data = section_data(raw, meta["tree"], att.section)
                label = "BODY[" + att.section.label() + "]"
                if att.partial is not None and data is not None:
                    start, length = att.partial
                    data = data[start : start + length if length is not None else None]
                    label += f"<{start}>"
            elif name == "RFC822":
                data, label = raw, "RFC822"
            elif name == "RFC822.HEADER":
                assert meta is not None
                data, label = raw[: meta["tree"]["b"][0]], "RFC822.HEADER"
            else:  # RFC822.TEXT
                assert meta is not None
                data, label = raw[meta["tree"]["b"][0] :], "RFC822.TEXT"
            if shown is None:
                shown = list(items)
            if data is None:
                items.append(label + " NIL")
                shown.append(label + " NIL")
            else:
                items.append(label + " " + _literal(data))
                shown.append(f"{label} {{{len(data)}}} <{len(data)} bytes>")
            continue
        items.append(value)
        if shown is not None:
            shown.append(value)
    line = f"* {seq} FETCH ({' '.join(items)})\r\n"
    if shown is None:
        return line, None
    return line, f"* {seq} FETCH ({' '.join(shown)})"
