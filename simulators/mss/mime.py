"""A fast, tolerant, bytes-level MIME analyser, run once when a message is stored.

``analyse_message(raw)`` returns a JSON-serialisable dict (the store's ``meta``
column) holding what IMAP would otherwise re-parse at every FETCH:

- ``env``: the RFC 3501 ENVELOPE, already IMAP-formatted;
- ``bs`` / ``body``: BODYSTRUCTURE and BODY, already IMAP-formatted;
- ``tree``: the part tree with byte offsets of each part's header and body, so a
  ``BODY[1.2.MIME]`` fetch is a slice of the raw message;
- ``h``: decoded header values (subject, from, to, cc, bcc, date, message-id) for
  listings and SEARCH; ``sent``: the Date header's own calendar day (SENTON...).

The IMAP strings are kept as latin-1 text: encoding them back with latin-1 gives the
exact octets (8-bit header bytes go out as IMAP literals).

The stdlib ``email`` package is about 20x slower for this and raises or guesses on
broken input; here malformed MIME (no boundary, bad charset, no blank line, 8-bit
headers) never raises: at worst the message is one text/plain part.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import quopri
import re
from typing import Any

META_VERSION = 1
MAX_DEPTH = 24  # deeper nesting is treated as an opaque leaf (zip-bomb style input)

Node = dict[str, Any]

# A header line: name, colon, value with its folded continuation lines.
_HEADER = re.compile(rb"^([!-9;-~]+)[ \t]*:(.*(?:\r?\n[ \t].*)*)", re.M)
_FOLD = re.compile(r"\r?\n")
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_ENCODED_GAP = re.compile(r"(\?=)\s+(=\?)")
_SIMPLE_ADDR = re.compile(r"\s*([^\s<>,;:\"()@\\\[\]]+)@([^\s<>,;:\"()@\\\[\]]+)\s*\Z")
_NAMED_ADDR = re.compile(
    r"\s*(?:\"((?:[^\"\\]|\\.)*)\"|([^\"<>,;:@()\\]*?))\s*"
    r"<\s*([^\s<>,;:\"()@\\]+)@([^\s<>,;:\"()@\\]+)\s*>\s*\Z"
)

_UNESCAPE = re.compile(r"\\(.)")
_WANTED = (
    "date",
    "subject",
    "from",
    "sender",
    "reply-to",
    "to",
    "cc",
    "bcc",
    "in-reply-to",
    "message-id",
    "content-type",
    "content-transfer-encoding",
    "content-id",
    "content-description",
    "content-disposition",
    "content-language",
    "content-location",
)
_WANTED_SET = frozenset(_WANTED)
_SEARCH_HEADERS = ("subject", "from", "to", "cc", "bcc", "date", "message-id")


# ---- IMAP string formatting --------------------------------------------------------------
def imap_string(value: str | None) -> str:
    """An IMAP nstring for latin-1 text: NIL, a quoted string, or a literal for 8-bit/CRLF."""
    if value is None:
        return "NIL"
    if value.isascii() and "\r" not in value and "\n" not in value and "\0" not in value:
        if "\\" in value or '"' in value:
            value = value.replace("\\", "\\\\").replace('"', '\\"')
        return '"' + value + '"'
    return f"{{{len(value)}}}\r\n{value}"


def _param_list(params: list[tuple[str, str]]) -> str:
    if not params:
        return "NIL"
    return "(" + " ".join(imap_string(k) + " " + imap_string(v) for k, v in params) + ")"


# ---- headers -----------------------------------------------------------------------------
def _header_end(raw: bytes, start: int, end: int) -> int:
    """Offset of the body: just after the first empty line (or ``start``/``end``)."""
    if raw.startswith(b"\r\n", start) and start + 2 <= end:
        return start + 2
    if raw.startswith(b"\n", start) and start + 1 <= end:
        return start + 1
    a = raw.find(b"\n\r\n", start, end)
    b = raw.find(b"\n\n", start, end)
    if a < 0 and b < 0:
        # No separator: all header if it looks like one, else all body.
        first = raw[start : min(end, start + 200)].split(b"\n", 1)[0]
        return end if _HEADER.match(first) else start
    if a >= 0 and (b < 0 or a < b):
        return a + 3
    return b + 2


def _headers(raw: bytes, start: int, end: int) -> dict[str, str]:
    """The headers we use, unfolded, as latin-1 text (first occurrence wins)."""
    # Pieces are joined once at the end: "+=" per folded line was quadratic (a header
    # folded 300,000 times took minutes).
    found: dict[str, list[str]] = {}
    name: str | None = None
    wanted = _WANTED_SET
    for line in raw[start:end].decode("latin-1").split("\n"):
        if line[:1] in (" ", "\t"):
            if name is not None:  # folded continuation of a header we keep
                found[name].append(line.rstrip("\r"))
            continue
        name = None
        key, colon, value = line.partition(":")
        if not colon:
            continue
        key = key.rstrip().lower()
        if key in wanted and key not in found:
            found[key] = [value.rstrip("\r")]
            name = key
    return {key: "".join(parts).strip() for key, parts in found.items()}


def decode_words(value: str) -> str:
    """RFC 2047 encoded words and raw 8-bit bytes (latin-1 text) to readable Unicode."""
    if not value.isascii():
        raw = value.encode("latin-1")
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError:
            value = raw.decode("cp1252", "replace")
    if "=?" not in value:
        return value
    value = _ENCODED_GAP.sub(r"\1\2", value)

    def one(match: re.Match[str]) -> str:
        charset, kind, text = match.group(1), match.group(2).upper(), match.group(3)
        charset = charset.split("*", 1)[0]  # RFC 2231 language suffix
        try:
            if kind == "B":
                data = base64.b64decode(text + "=" * (-len(text) % 4))
            else:
                data = quopri.decodestring(text.replace("_", " ").encode("latin-1"), header=True)
            return data.decode(charset, "replace")
        except (LookupError, ValueError, binascii.Error):
            return match.group(0)

    return _ENCODED_WORD.sub(one, value)


# ---- parameters (Content-Type, Content-Disposition) --------------------------------------
_PARAM = re.compile(r';\s*([^=;\s]+)\s*=\s*("(?:[^"\\]|\\.)*"?|[^;]*)')


def _split_params(value: str) -> tuple[str, list[tuple[str, str]]]:
    """``main; a=1; b="x;y"`` -> ("main", [("a","1"), ("b","x;y")]). Tolerant of junk."""
    semi = value.find(";")
    if semi < 0:
        return value.strip(), []
    params: list[tuple[str, str]] = []
    for match in _PARAM.finditer(value, semi):
        val = match.group(2).strip()
        if val[:1] == '"':
            val = val[1:-1] if len(val) >= 2 and val[-1] == '"' else val[1:]
            if "\\" in val:
                val = _UNESCAPE.sub(r"\1", val)
        params.append((match.group(1), val))
    return value[:semi].strip(), params


def _content_type(value: str | None, default: str) -> tuple[str, str, list[tuple[str, str]]]:
    if not value:
        maintype, subtype = default.split("/")
        return maintype, subtype, [("charset", "us-ascii")] if maintype == "text" else []
    main, params = _split_params(value)
    if "/" not in main:
        return "text", "plain", [("charset", "us-ascii")]
    maintype, subtype = (p.strip() for p in main.split("/", 1))
    if not maintype or not subtype or " " in maintype or " " in subtype:
        return "text", "plain", [("charset", "us-ascii")]
    return maintype, subtype, params


# ---- addresses ---------------------------------------------------------------------------
Address = tuple[str | None, str | None, str | None, str | None]  # name, adl, mailbox, host


def _split_addr(spec: str) -> Address:
    spec = spec.strip()
    adl: str | None = None
    if spec.startswith("@") and ":" in spec:  # obsolete source route
        adl, spec = spec.split(":", 1)
    if "@" in spec:
        local, host = spec.rsplit("@", 1)
        return None, adl, local.strip().strip('"'), host.strip()
    return None, adl, spec, "MISSING_DOMAIN"


def parse_addresses(value: str) -> list[Address]:
    """An address-list header into ENVELOPE address tuples (groups included)."""
    if not ("(" in value or ":" in value or "\\" in value) and (
        '"' not in value or not any("," in q for q in value.split('"')[1::2])
    ):
        result: list[Address] = []
        for piece in value.split(","):
            if not piece.strip():
                continue
            match = _SIMPLE_ADDR.match(piece)
            if match:
                result.append((None, None, match.group(1), match.group(2)))
                continue
            match = _NAMED_ADDR.match(piece)
            if match:
                quoted = match.group(1)
                name = _UNESCAPE.sub(r"\1", quoted) if quoted is not None else match.group(2)
                result.append((_clean_name(name), None, match.group(3), match.group(4)))
                continue
            return _parse_addresses_slow(value)
        return result
    return _parse_addresses_slow(value)


def _parse_addresses_slow(value: str) -> list[Address]:
    """A small RFC 5322 tokenizer: quoted strings, comments, angle brackets, groups."""
    result: list[Address] = []
    phrase: list[str] = []  # words, for a display name
    spec: list[str] = []  # the same tokens without spaces, for a bare addr-spec
    angle: str | None = None
    in_group = False
    i, n = 0, len(value)

    def flush() -> None:
        nonlocal phrase, spec, angle
        if angle is not None:
            _n, adl, mailbox, host = _split_addr(angle)
            if mailbox or host:
                result.append((_clean_name(" ".join(phrase)), adl, mailbox, host))
        elif "".join(spec).strip():
            result.append(_split_addr("".join(spec)))
        phrase, spec, angle = [], [], None

    while i < n:
        ch = value[i]
        if ch == '"':
            j = i + 1
            buf = []
            while j < n and value[j] != '"':
                if value[j] == "\\" and j + 1 < n:
                    j += 1
                buf.append(value[j])
                j += 1
            phrase.append("".join(buf))
            spec.append("".join(buf))
            i = j + 1
        elif ch == "(":
            depth, j = 1, i + 1
            while j < n and depth:
                if value[j] == "\\":
                    j += 1
                elif value[j] == "(":
                    depth += 1
                elif value[j] == ")":
                    depth -= 1
                j += 1
            i = j
        elif ch == "<":
            j = value.find(">", i)
            if j < 0:
                j = n
            angle = value[i + 1 : j]
            i = j + 1
        elif ch == ",":
            flush()
            i += 1
        elif ch == ":" and not in_group and angle is None:
            result.append((None, None, _clean_name(" ".join(phrase)) or "", None))
            phrase, spec, in_group = [], [], True
            i += 1
        elif ch == ";" and in_group:
            flush()
            result.append((None, None, None, None))
            in_group = False
            i += 1
        elif ch in " \t\r\n":
            i += 1
        else:
            j = i + 1
            while j < n and value[j] not in '"(<,:; \t\r\n':
                j += 1
            phrase.append(value[i:j])
            spec.append(value[i:j])
            i = j
    flush()
    if in_group:
        result.append((None, None, None, None))
    return result


def _clean_name(name: str | None) -> str | None:
    if name is None:
        return None
    name = " ".join(name.split())
    return name or None


def _address_list(value: str | None) -> str:
    if value is None:
        return "NIL"
    addrs = parse_addresses(value)
    if not addrs:
        return "NIL"
    return (
        "("
        + "".join("(" + " ".join(imap_string(part) for part in addr) + ")" for addr in addrs)
        + ")"
    )


def _envelope(h: dict[str, str]) -> str:
    # RFC 3501: Sender and Reply-To default to From.
    from_ = _address_list(h.get("from"))
    sender = _address_list(h["sender"]) if h.get("sender") else from_
    reply_to = _address_list(h["reply-to"]) if h.get("reply-to") else from_
    return (
        "("
        + " ".join(
            (
                imap_string(h.get("date")),
                imap_string(h.get("subject")),
                from_,
                sender,
                reply_to,
                _address_list(h.get("to")),
                _address_list(h.get("cc")),
                _address_list(h.get("bcc")),
                imap_string(h.get("in-reply-to")),
                imap_string(h.get("message-id")),
            )
        )
        + ")"
    )


# ---- body structure ----------------------------------------------------------------------
def _lines(raw: bytes, start: int, end: int) -> int:
    if end <= start:
        return 0
    count = raw.count(b"\n", start, end)
    return count if raw[end - 1] == 0x0A else count + 1


def _boundaries(raw: bytes, start: int, end: int, boundary: str) -> list[tuple[int, int, bool]]:
    """Delimiter lines of a multipart body: (line start incl. preceding CRLF, end, closing)."""
    marker = b"--" + boundary.encode("latin-1")
    found: list[tuple[int, int, bool]] = []
    pos = raw.find(marker, start, end)
    while pos >= 0:
        after = pos + len(marker)
        # Only at the start of a line; the CRLF before a delimiter belongs to it.
        if pos == start or raw[pos - 1] == 0x0A:
            line_start = pos
            if pos > start:
                line_start = pos - 2 if pos - 2 >= start and raw[pos - 2] == 0x0D else pos - 1
            closing = raw.startswith(b"--", after, end)
            tail = after + 2 if closing else after
            while tail < end and raw[tail] in (0x20, 0x09):
                tail += 1
            if tail >= end or raw[tail] == 0x0A or raw.startswith(b"\r\n", tail, end):
                if tail < end:
                    tail += 1 if raw[tail] == 0x0A else 2
                found.append((line_start, tail, closing))
                if closing:
                    break
                pos = raw.find(marker, tail, end)
                continue
        pos = raw.find(marker, after, end)
    return found


def _entity(
    raw: bytes, start: int, end: int, depth: int, default: str
) -> tuple[Node, str, str, dict[str, str]]:
    """Analyse one entity: returns (tree node, BODYSTRUCTURE, BODY, its headers)."""
    body_start = _header_end(raw, start, end)
    h = _headers(raw, start, body_start)
    maintype, subtype, params = _content_type(h.get("content-type"), default)
    lower = maintype.lower()
    sublower = subtype.lower()
    node: Node = {"t": f"{lower}/{sublower}", "h": [start, body_start], "b": [body_start, end]}
    if lower == "multipart" and depth < MAX_DEPTH:
        boundary = next((v for k, v in params if k.lower() == "boundary"), None)
        delimiters = _boundaries(raw, body_start, end, boundary) if boundary else []
        if delimiters and not delimiters[0][2]:
            children: list[Node] = []
            bs_parts: list[str] = []
            body_parts: list[str] = []
            child_default = "message/rfc822" if sublower == "digest" else "text/plain"
            for index, (_s, part_start, closing) in enumerate(delimiters):
                if closing:
                    break
                part_end = delimiters[index + 1][0] if index + 1 < len(delimiters) else end
                child, child_bs, child_body, _h = _entity(
                    raw, part_start, part_end, depth + 1, child_default
                )
                children.append(child)
                bs_parts.append(child_bs)
                body_parts.append(child_body)
            node["c"] = children
            ext = " ".join(
                (
                    _param_list(params),
                    _disposition(h),
                    _language(h),
                    imap_string(h.get("content-location")),
                )
            )
            subtype_s = imap_string(subtype)
            return (
                node,
                "(" + "".join(bs_parts) + " " + subtype_s + " " + ext + ")",
                "(" + "".join(body_parts) + " " + subtype_s + ")",
                h,
            )
        # A multipart without usable boundaries: shown as one text/plain part.
        maintype, subtype, params, lower = "text", "plain", [("charset", "us-ascii")], "text"
        node["t"] = "text/plain"
    size = end - body_start
    if lower == "text" and not any(k.lower() == "charset" for k, _v in params):
        params = [*params, ("charset", "us-ascii")]  # RFC 2045 default, as Dovecot shows it
    fields = " ".join(
        (
            imap_string(maintype),
            imap_string(subtype),
            _param_list(params),
            imap_string(h.get("content-id")),
            imap_string(h.get("content-description")),
            imap_string(h.get("content-transfer-encoding") or "7bit"),
            str(size),
        )
    )
    extra = ""
    extra_body = ""
    if lower == "text":
        extra = extra_body = " " + str(_lines(raw, body_start, end))
    elif node["t"] == "message/rfc822" and depth < MAX_DEPTH:
        inner, inner_bs, inner_body, inner_h = _entity(
            raw, body_start, end, depth + 1, "text/plain"
        )
        node["m"] = inner
        envelope = _envelope(inner_h)
        lines = str(_lines(raw, body_start, end))
        extra = " " + envelope + " " + inner_bs + " " + lines
        extra_body = " " + envelope + " " + inner_body + " " + lines
    ext = " ".join(("NIL", _disposition(h), _language(h), imap_string(h.get("content-location"))))
    return node, "(" + fields + extra + " " + ext + ")", "(" + fields + extra_body + ")", h


def _disposition(h: dict[str, str]) -> str:
    value = h.get("content-disposition")
    if not value:
        return "NIL"
    kind, params = _split_params(value)
    if not kind:
        return "NIL"
    return "(" + imap_string(kind) + " " + _param_list(params) + ")"


def _language(h: dict[str, str]) -> str:
    value = h.get("content-language")
    if not value:
        return "NIL"
    tags = [t.strip() for t in value.split(",") if t.strip()]
    if not tags:
        return "NIL"
    return "(" + " ".join(imap_string(t) for t in tags) + ")"


def _sent_day(date: str | None) -> tuple[str | None, float | None]:
    if not date:
        return None, None
    try:
        parsed = email.utils.parsedate_tz(date)
    except (TypeError, ValueError, IndexError):
        return None, None
    if not parsed:
        return None, None
    year, month, day = parsed[0], parsed[1], parsed[2]
    try:
        stamp = float(email.utils.mktime_tz(parsed))
    except (OverflowError, ValueError):
        stamp = None
    if not (1 <= month <= 12 and 1 <= day <= 31 and 1 <= year <= 9999):
        return None, stamp
    return f"{year:04d}-{month:02d}-{day:02d}", stamp


# ---- entry points ------------------------------------------------------------------------
def analyse_message(raw: bytes) -> dict[str, Any]:
    """Everything IMAP needs about ``raw``, computed once. Never raises on bad MIME."""
    try:
        return _analyse(raw)
    except Exception:
        return _fallback(raw)


def _analyse(raw: bytes) -> dict[str, Any]:
    end = len(raw)
    tree, bs, body, h = _entity(raw, 0, end, 0, "text/plain")
    sent, sent_ts = _sent_day(h.get("date"))
    return {
        "v": META_VERSION,
        "env": _envelope(h),
        "bs": bs,
        "body": body,
        "tree": tree,
        "h": {name: decode_words(h[name]) for name in _SEARCH_HEADERS if name in h},
        "sent": sent,
        "sent_ts": sent_ts,
    }


def _fallback(raw: bytes) -> dict[str, Any]:
    end = len(raw)
    body_start = 0
    fields = f'"text" "plain" ("charset" "us-ascii") NIL NIL "7bit" {end} {_lines(raw, 0, end)}'
    return {
        "v": META_VERSION,
        "env": "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)",
        "bs": "(" + fields + " NIL NIL NIL NIL)",
        "body": "(" + fields + ")",
        "tree": {"t": "text/plain", "h": [0, body_start], "b": [body_start, end]},
        "h": {},
        "sent": None,
        "sent_ts": None,
    }


def meta_is_current(meta: dict[str, Any] | None) -> bool:
    return meta is not None and meta.get("v") == META_VERSION


# ---- text extraction (SEARCH BODY / TEXT) -------------------------------------------------
def _leaves(node: Node) -> list[Node]:
    if "c" in node:
        return [leaf for child in node["c"] for leaf in _leaves(child)]
    if "m" in node:
        return [node["m"], *_leaves(node["m"])]
    return [node]


def body_text(raw: bytes, meta: dict[str, Any]) -> str:
    """The decoded text of the message's text parts (transfer encoding and charset)."""
    pieces: list[str] = []
    for leaf in _leaves(meta["tree"]):
        if "c" in leaf or "m" in leaf:
            continue
        if not leaf["t"].startswith("text/"):
            continue
        h_start, b_start = leaf["h"]
        b_end = leaf["b"][1]
        h = _headers(raw, h_start, b_start)
        data = raw[b_start:b_end]
        cte = (h.get("content-transfer-encoding") or "").strip().lower()
        try:
            if cte == "base64":
                data = base64.b64decode(re.sub(rb"[^A-Za-z0-9+/=]", b"", data) + b"==")
            elif cte == "quoted-printable":
                data = quopri.decodestring(data)
        except (ValueError, binascii.Error):
            pass
        _m, _s, params = _content_type(h.get("content-type"), "text/plain")
        charset = next((v for k, v in params if k.lower() == "charset"), "utf-8")
        try:
            pieces.append(data.decode(charset, "replace"))
        except (LookupError, ValueError):  # unknown charset, or a codec such as idna
            pieces.append(data.decode("utf-8", "replace"))
    return "\n".join(pieces)


def header_text(raw: bytes, meta: dict[str, Any]) -> str:
    """The top-level header block as decoded text (SEARCH TEXT covers headers too)."""
    start, end = meta["tree"]["h"]
    return decode_words(raw[start:end].decode("latin-1"))
