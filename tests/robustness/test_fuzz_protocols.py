"""Protocol fuzzing against the live ``segur-sim serve`` subprocess (SMTP and IMAP).

Each example opens a session in some state (greeted, after EHLO, authenticated, in a
mail transaction; IMAP: not authenticated, authenticated, selected), sends generated
commands (grammar-based: real verbs with hostile arguments, random bytes, literals
synchronising or not, nested lists) and requires, for every input:

- an answer, within the socket timeout (a hang fails the test);
- a well-formed one: an SMTP reply line; an IMAP tagged OK/NO/BAD;
- never an internal error (SMTP ``451 ... Local error``, IMAP ``[SERVERBUG]``), which
  means an exception escaped a command handler;
- the server closes a session only with a reason (QUIT/LOGOUT, ``* BYE``...);
- another, long-lived session still answers afterwards;
- and at the end, no traceback on the server's stderr.

CI runs about 150 examples per protocol test; set ``SEGUR_SIM_FUZZ_EXAMPLES`` to run
more (docs/robustness.md).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulators.mss.smtp.engine import BOGUS_LIMIT

from .support import DOMAIN, ImapWire, LiveServer, PerCredentials, SmtpWire, examples

FUZZ = settings(
    max_examples=examples(150),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=False,
)

# ---- SMTP grammar --------------------------------------------------------------------------
_text = st.binary(max_size=120).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
_printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60).map(
    str.encode
)
_addresses = st.one_of(
    st.sampled_from(
        [
            b"<>",
            b"<dr.fuzz@mssante.localhost>",
            b"<DR.FUZZ@MSSANTE.LOCALHOST>",
            b"<nobody@mssante.localhost>",
            b"<x@example.org>",
            b'<"quoted local"@mssante.localhost>',
            b'<"a\\"b"@mssante.localhost>',
            b"<@relay.example,@other.example:dr.fuzz@mssante.localhost>",
            b"<dr.fuzz@[127.0.0.1]>",
            b"<<dr.fuzz@mssante.localhost>>",
            b"dr.fuzz@mssante.localhost",
            b"<dr.fuzz@mssante.localhost",
            b"<\xc3\xa9l\xc3\xa8ve@mssante.localhost>",
            b"<a@b@c>",
            b"<(comment)dr.fuzz@mssante.localhost>",
            b"<" + b"a" * 300 + b"@mssante.localhost>",
            b"<\x00@mssante.localhost>",
            b" <",
            b"<",
            b"<\x80\xff@mssante.localhost>",  # not UTF-8
            b"<\xc3\xa9@example.org>",
        ]
    ),
    _printable.map(lambda b: b"<" + b + b">"),
    _text,
)
_params = st.lists(
    st.one_of(
        st.sampled_from(
            [
                b"SIZE=0",
                b"SIZE=100",
                b"SIZE=999999999999999999999",
                b"SIZE=-1",
                b"SIZE=abc",
                b"SIZE=",
                b"BODY=8BITMIME",
                b"BODY=BINARYMIME",
                b"BODY=7BIT",
                b"SMTPUTF8",
                b"RET=HDRS",
                b"ENVID=x",
                b"NOTIFY=NEVER",
                b"AUTH=<>",
                b"=",
                b"X=Y=Z",
            ]
        ),
        _printable,
    ),
    max_size=3,
)
_auth_args = st.one_of(
    st.sampled_from(
        [b"PLAIN", b"XOAUTH2", b"LOGIN", b"CRAM-MD5", b"PLAIN =", b"XOAUTH2 =", b"PLAIN \x93\x19"]
    ),
    st.tuples(st.sampled_from([b"PLAIN", b"XOAUTH2", b"OAUTHBEARER", b"x"]), _text).map(
        lambda t: t[0] + b" " + base64.b64encode(t[1])
    ),
    st.tuples(st.sampled_from([b"PLAIN ", b"XOAUTH2 "]), _text).map(lambda t: t[0] + t[1]),
)


@st.composite
def smtp_line(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(_text)
    if kind == 1:
        return b"X" * draw(st.sampled_from([1000, 12289, 20000]))  # long lines
    verb = draw(
        st.sampled_from(
            [
                b"HELO",
                b"EHLO",
                b"MAIL",
                b"RCPT",
                b"DATA",
                b"RSET",
                b"NOOP",
                b"VRFY",
                b"EXPN",
                b"HELP",
                b"AUTH",
                b"BDAT",
                b"XCLIENT",
                b"ETRN",
                b"STARTTLS",
                b"QUIT",
                b"mail",
                b"Rcpt",
            ]
        )
    )
    if verb.upper() == b"MAIL":
        args = draw(st.sampled_from([b"FROM:", b"FROM: ", b"FROM", b"TO:", b""]))
        args += draw(_addresses) + b"".join(b" " + p for p in draw(_params))
    elif verb.upper() == b"RCPT":
        args = draw(st.sampled_from([b"TO:", b"TO: ", b"TO", b"FROM:", b""]))
        args += draw(_addresses) + b"".join(b" " + p for p in draw(_params))
    elif verb == b"AUTH":
        args = draw(_auth_args)
    elif verb in (b"QUIT", b"STARTTLS", b"DATA", b"RSET", b"NOOP") and draw(st.booleans()):
        args = b""
    else:
        args = draw(st.one_of(_printable, _text))
    return verb + (b" " + args if args else b"")


_bodies = st.binary(max_size=1500).map(
    # dot-stuffed, so that the body never ends the DATA early (that would desynchronise
    # our reply counting, not the server)
    lambda b: (b"." + b if b.startswith(b".") else b).replace(b"\r\n.", b"\r\n..")
)


def _not_internal_error(code: int, text: bytes) -> None:
    assert not (code == 451 and b"Local error" in text), text
    assert not text.startswith(b"500 Error: ("), text  # an unhandled exception's reply


class _Control:
    """A long-lived SMTP session that must keep answering between examples."""

    def __init__(self, live: LiveServer, per: PerCredentials) -> None:
        self.wire = live.smtp("smtp_starttls")
        self.wire.auth(per)

    def check(self) -> None:
        code, text = self.wire.cmd("NOOP")
        assert code == 250, text


@pytest.fixture(scope="module")
def smtp_control(live: LiveServer, fuzz_box: PerCredentials) -> Iterator[_Control]:
    control = _Control(live, fuzz_box)
    yield control
    control.wire.close()


# The answer to a command the server does not know (the ones BOGUS_LIMIT counts).
_UNKNOWN_COMMAND = re.compile(rb'command ".*" not recognized')


def _smtp_session(live: LiveServer, per: PerCredentials, state: str) -> SmtpWire:
    if state == "plain":  # the STARTTLS port before TLS
        wire = SmtpWire.connect(live.port("smtp_starttls"), None)
        wire.ehlo()
        return wire
    wire = SmtpWire.connect(live.port("smtps"), live.context())
    if state == "greeted":
        return wire
    wire.ehlo()
    if state == "ehlo":
        return wire
    wire.auth(per)
    if state == "mail":
        code, text = wire.cmd(f"MAIL FROM:<{per.address}>")
        assert code == 250, text
    return wire


@FUZZ
@given(
    state=st.sampled_from(["plain", "greeted", "ehlo", "auth", "mail"]),
    lines=st.lists(smtp_line(), min_size=1, max_size=6),
    ending=st.sampled_from([b"\r\n", b"\r\n", b"\n"]),
    body=_bodies,
)
def test_smtp_commands_always_get_an_answer(
    live: LiveServer,
    fuzz_box: PerCredentials,
    smtp_control: _Control,
    state: str,
    lines: list[bytes],
    ending: bytes,
    body: bytes,
) -> None:
    wire = _smtp_session(live, fuzz_box, state)
    unrecognised = 0
    try:
        for line in lines:
            wire.send(line + ending)
            code, text = wire.reply()
            _not_internal_error(code, text)
            if code == 500 and _UNKNOWN_COMMAND.search(text):
                unrecognised += 1
            assert 200 <= code < 600, text
            if code == 354:  # DATA accepted: send a message, then its answer comes
                wire.send(body + b"\r\n.\r\n")
                code, text = wire.reply()
                _not_internal_error(code, text)
                assert code in (250, 552, 554), text
            elif code == 334:  # a SASL challenge: answer it with the next line or abort
                wire.send(b"*\r\n" if line.endswith(b"=") else line[:200] + b"\r\n")
                code, text = wire.reply()
                if code == 334:  # the XOAUTH2 error challenge wants an empty line
                    wire.send(b"\r\n")
                    code, text = wire.reply()
                _not_internal_error(code, text)
                assert code in (235, 501, 535), text
            elif code == 221:  # QUIT: the server says goodbye and closes
                assert line.upper().startswith(b"QUIT"), text
                break
            elif code == 220:  # STARTTLS accepted: a TLS handshake would follow
                assert state == "plain" and line.upper().startswith(b"STARTTLS"), text
                break
            elif code == 421 and b"Too many unrecognized commands" in text:
                # The server ends a session after BOGUS_LIMIT unknown commands: the last
                # of them gets this answer instead of a 500, then the server closes.
                assert unrecognised == BOGUS_LIMIT - 1, (unrecognised, text)
                break
            elif code == 421:
                raise AssertionError(f"the server gave up on the session: {text!r}")
    finally:
        wire.close()
    smtp_control.check()


def test_smtp_pipelined_garbage_burst_is_answered_line_by_line(
    live: LiveServer, fuzz_box: PerCredentials
) -> None:
    """200 pipelined lines of junk (PIPELINING style): 200 answers, in order, no hang."""
    wire = _smtp_session(live, fuzz_box, "auth")
    junk = [b"NOOP", b"\x00\xff", b"MAIL FROM:<", b"RCPT TO:<>", b"HELP", b"VRFY x"] * 34
    wire.send(b"".join(line + b"\r\n" for line in junk[:200]))
    codes = [wire.reply()[0] for _ in range(200)]
    assert codes[0] == 250 and all(200 <= c < 600 for c in codes)
    assert wire.cmd("NOOP")[0] == 250
    wire.close()


# ---- IMAP grammar --------------------------------------------------------------------------
Segment = tuple[str, bytes] | tuple[str, bytes, bool]  # ("text", b) | ("lit", data, sync)

_IMAP_COMMANDS = [
    "CAPABILITY", "NOOP", "LOGOUT", "ID", "STARTTLS", "LOGIN", "AUTHENTICATE", "ENABLE",
    "NAMESPACE", "SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME", "SUBSCRIBE",
    "UNSUBSCRIBE", "LIST", "LSUB", "STATUS", "APPEND", "IDLE", "CHECK", "CLOSE", "UNSELECT",
    "EXPUNGE", "SEARCH", "FETCH", "STORE", "COPY", "MOVE", "UID", "UID FETCH", "UID SEARCH",
    "UID STORE", "UID COPY", "UID MOVE", "UID EXPUNGE", "XYZZY", "select", "Fetch",
]  # fmt: skip
SEED_MESSAGES = [
    b"Subject: plain\r\nFrom: a@b.c\r\nMessage-ID: <s1@x>\r\n\r\nhello\r\n",
    b'Content-Type: multipart/mixed; boundary="b1"\r\nSubject: =?utf-8?B?w6k=?=\r\n\r\n'
    b"--b1\r\nContent-Type: text/plain; charset=idna\r\n\r\nbody \xff\r\n--b1\r\n"
    b'Content-Type: multipart/alternative; boundary="b2"\r\n\r\n--b2\r\n'
    b"Content-Type: text/html; charset=undefined\r\n\r\n<p>x</p>\r\n--b2--\r\n--b1\r\n"
    b"Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner body\r\n--b1--\r\n",
    b"Subject: \xe9\xff 8-bit\r\nTo: group: a@b, c@d;\r\nContent-Type: text/plain; "
    b"charset=punycode\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!\r\n",
    b"no header at all, no blank line",
]

_IMAP_ATOMS = [
    "1", "2", "3", "1:*", "*", "*:1", "2:4", "1,3", "0", "-1", "4294967296", "1:", ":", ",",
    "99999999999999999999", "FLAGS", "ENVELOPE", "BODYSTRUCTURE", "BODY", "RFC822",
    "RFC822.SIZE", "RFC822.HEADER", "RFC822.TEXT", "INTERNALDATE", "UID", "ALL", "FAST", "FULL",
    "BODY[]", "BODY.PEEK[]", "BODY[TEXT]", "BODY[HEADER]", "BODY[1]", "BODY[1.2]",
    "BODY[2.MIME]", "BODY[1.1.1.1.1]", "BODY[0]", "BODY[HEADER.FIELDS (SUBJECT FROM)]",
    "BODY[HEADER.FIELDS.NOT (DATE)]", "BODY[]<0.10>", "BODY[]<5>", "BODY[]<4294967296.1>",
    "BODY[TEXT]<0.0>", "BINARY[1]", "BINARY.PEEK[2]", "BODY[", "BODY[]<", "BODY[1]x",
    "+FLAGS", "-FLAGS", "FLAGS.SILENT", "+FLAGS.SILENT", "\\Seen", "\\Deleted", "\\Flagged",
    "\\Answered", "\\Draft", "\\Recent", "\\Bogus", "$MSSanteRead", "\\*", "NIL", "INBOX",
    "inbox", "Sent", "Trash", "Fuzz", "Fuzz/deep/er", "&AOk-", "&-", "&Jjo", "../other",
    "%", "*", "MESSAGES", "UNSEEN", "UIDNEXT", "UIDVALIDITY", "RECENT", "CHARSET", "UTF-8",
    "X-UNKNOWN", "NOT", "OR", "SEEN", "UNSEEN", "NEW", "OLD", "KEYWORD", "LARGER", "SMALLER",
    "SUBJECT", "BODY", "TEXT", "HEADER", "FROM", "BEFORE", "SINCE", "ON", "SENTON",
    "SENTBEFORE", "SENTSINCE", "1-Feb-2024", "31-Feb-2024", "1-Foo-2024", "XOAUTH2", "PLAIN",
    "LOGIN", "=", "*", "DONE", "CONDSTORE", "IMAP4rev1",
]  # fmt: skip

_imap_atom = st.one_of(
    st.sampled_from(_IMAP_ATOMS),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20),
)
_quoted = st.binary(max_size=60).map(
    lambda b: (
        b'"'
        + b.replace(b"\\", b"\\\\").replace(b'"', b'\\"').replace(b"\r", b"").replace(b"\n", b"")
        + b'"'
    )
)


@st.composite
def _imap_value(draw: st.DrawFn, depth: int = 0) -> list[Segment]:
    kind = draw(st.integers(0, 9 if depth < 3 else 7))
    if kind <= 3:
        return [("text", draw(_imap_atom).encode())]
    if kind == 4:
        return [("text", draw(_quoted))]
    if kind == 5:  # a literal, synchronising or not (LITERAL+)
        return [("lit", draw(st.binary(max_size=400)), draw(st.booleans()))]
    if kind == 6:  # raw junk (no line ends)
        return [("text", draw(_text))]
    if kind == 7:  # a big literal announcement: over 64 KB (over 20 MB if non-synchronising)
        sync = draw(st.booleans())
        sizes = [65537, 30 * 1024 * 1024, 10**12 - 1] if sync else [30 * 1024 * 1024, 10**12 - 1]
        return [("huge", str(draw(st.sampled_from(sizes))).encode(), sync)]  # type: ignore[list-item]
    inner: list[Segment] = [("text", b"(")]
    for i, value in enumerate(draw(st.lists(_imap_value(depth + 1), max_size=4))):
        if i:
            inner.append(("text", b" "))
        inner.extend(value)
    inner.append(("text", b")"))
    return inner


def _t(text: str | bytes) -> Segment:
    return ("text", text.encode() if isinstance(text, str) else text)


_seq = st.sampled_from(["1", "2", "1:*", "*", "2:3", "1,3:*", "3:1", "1:4294967295", "999"])
_mailbox = st.sampled_from(["INBOX", "Sent", "Fuzz", "Fuzz/a", "&AOk-t&AOk-", '"a b"', "Trash"])
_VALID_ATTS = [
    "FLAGS", "ENVELOPE", "BODYSTRUCTURE", "BODY", "UID", "INTERNALDATE", "RFC822.SIZE",
    "BODY.PEEK[]", "BODY[TEXT]", "BODY.PEEK[HEADER]", "BODY[1]", "BODY.PEEK[1.MIME]",
    "BODY[2.1]", "BODY[HEADER.FIELDS (SUBJECT)]", "BODY.PEEK[]<0.100>", "BINARY.PEEK[1]",
    "RFC822.HEADER", "BODY[3]", "BODY[1.1.1]",
]  # fmt: skip
_fetch_att = st.sampled_from(
    _VALID_ATTS * 4 + [a for a in _IMAP_ATOMS if a.startswith(("BODY", "BINARY", "RFC822"))]
)
_search_word = st.one_of(
    st.sampled_from(["body", "inner", "\xe9", "x", "", "zzz"]).map(lambda w: f'"{w}"'),
    st.binary(max_size=30).map(lambda b: ("lit", b, True)),
)


@st.composite
def _search_keys(draw: st.DrawFn, depth: int = 0) -> list[Segment]:
    key = draw(
        st.sampled_from(
            [
                "ALL",
                "SEEN",
                "UNSEEN",
                "NEW",
                "OLD",
                "RECENT",
                "DELETED",
                "FLAGGED",
                "BODY",
                "TEXT",
                "SUBJECT",
                "FROM",
                "TO",
                "HEADER",
                "KEYWORD",
                "LARGER",
                "SMALLER",
                "UID",
                "SINCE",
                "BEFORE",
                "ON",
                "SENTON",
                "SENTSINCE",
                "NOT",
                "OR",
                "SEQ",
                "GROUP",
            ]
        )
    )
    if key in ("BODY", "TEXT", "SUBJECT", "FROM", "TO"):
        word = draw(_search_word)
        return [_t(key + " "), word if isinstance(word, tuple) else _t(word)]  # type: ignore[list-item]
    if key == "HEADER":
        field = draw(st.sampled_from(["Subject", "X-MSS-NIL", "Content-Type", ""]))
        return [
            _t(f'HEADER "{field}" '),
            _t(draw(_search_word.filter(lambda w: isinstance(w, str)))),
        ]
    if key in ("LARGER", "SMALLER"):
        return [_t(f"{key} {draw(st.sampled_from(['0', '10', '99999999999', 'x']))}")]
    if key in ("SINCE", "BEFORE", "ON", "SENTON", "SENTSINCE"):
        date = draw(
            st.sampled_from(["1-Jan-2020", "3-Jun-2024", "31-Feb-2024", "x", "1-Jan-99999"])
        )
        return [_t(f"{key} {date}")]
    if key == "KEYWORD":
        return [_t("KEYWORD " + draw(st.sampled_from(["$MSSanteRead", "\\Seen", "x"])))]
    if key == "UID":
        return [_t("UID " + draw(_seq))]
    if key == "SEQ":
        return [_t(draw(_seq))]
    if key in ("NOT", "OR", "GROUP") and depth < 3:
        parts = [draw(_search_keys(depth + 1)) for _ in range(2 if key == "OR" else 1)]
        joined: list[Segment] = []
        for part in parts:
            joined += [_t(" "), *part]
        if key == "GROUP":
            return [_t("("), *joined[1:], _t(")")]
        return [_t(key), *joined]
    return [_t(key if key not in ("NOT", "OR", "GROUP") else "ALL")]


@st.composite
def _structured_args(draw: st.DrawFn, name: str) -> list[Segment]:
    base = name.removeprefix("UID ").upper()
    if base == "FETCH":
        atts = draw(st.lists(_fetch_att, min_size=1, max_size=3))
        listed = " ".join(atts) if len(atts) == 1 and draw(st.booleans()) else f"({' '.join(atts)})"
        return [_t(f"{draw(_seq)} {listed}")]
    if base == "SEARCH":
        out: list[Segment] = [_t("CHARSET UTF-8 ")] if draw(st.booleans()) else []
        for i, keys in enumerate(draw(st.lists(_search_keys(), min_size=1, max_size=3))):
            out += ([_t(" ")] if i else []) + keys
        return out
    if base == "STORE":
        item = draw(st.sampled_from(["+FLAGS", "-FLAGS", "FLAGS", "+FLAGS.SILENT", "X"]))
        flags = draw(
            st.lists(
                st.sampled_from(
                    ["\\Seen", "\\Deleted", "$MSSanteRead", "\\Recent", "\\Bogus", "a]b"]
                ),
                max_size=3,
            )
        )
        return [_t(f"{draw(_seq)} {item} ({' '.join(flags)})")]
    if base in ("COPY", "MOVE"):
        return [_t(f"{draw(_seq)} {draw(_mailbox)}")]
    if base in ("SELECT", "EXAMINE", "CREATE", "DELETE", "SUBSCRIBE", "UNSUBSCRIBE"):
        return [_t(draw(_mailbox))]
    if base == "RENAME":
        return [_t(f"{draw(_mailbox)} {draw(_mailbox)}")]
    if base == "STATUS":
        items = draw(
            st.lists(st.sampled_from(["MESSAGES", "UNSEEN", "UIDNEXT", "RECENT", "X"]), max_size=4)
        )
        return [_t(f"{draw(_mailbox)} ({' '.join(items)})")]
    if base in ("LIST", "LSUB"):
        return [
            _t(
                f'"{draw(st.sampled_from(["", "Fuzz", "INBOX"]))}" '
                f'"{draw(st.sampled_from(["*", "%", "Fuzz/%", "*x*"]))}"'
            )
        ]
    if base == "APPEND":
        message = draw(st.one_of(st.sampled_from(SEED_MESSAGES), st.binary(max_size=300)))
        extra = draw(
            st.sampled_from(
                ["", " (\\Seen $MSSanteRead)", ' "03-Jun-2024 10:00:00 +0200"', ' () "x"']
            )
        )
        return [_t(draw(_mailbox) + extra + " "), ("lit", message, draw(st.booleans()))]
    if base == "EXPUNGE" and name.startswith("UID"):
        return [_t(draw(_seq))]
    return []


@st.composite
def imap_command(draw: st.DrawFn) -> tuple[str, list[Segment]]:
    name = draw(st.sampled_from(_IMAP_COMMANDS))
    segments: list[Segment] = [("text", name.encode())]
    structured = draw(_structured_args(name)) if draw(st.booleans()) else []
    if structured:
        segments += [_t(" "), *structured]
    for value in draw(st.lists(_imap_value(), max_size=5 if not structured else 1)):
        segments.append(("text", b" "))
        segments.extend(value)
    if draw(st.integers(0, 15)) == 0:  # a tag-less, or oddly tagged, command
        tag = draw(st.sampled_from([b"", b"+", b"*", b"a(b", b'"x"', b"\x00"]))
    else:
        tag = b"f"
    return tag.decode("latin-1"), segments


_HUGE = re.compile(rb"\{\d+\+?\}\r\n\Z")


def _merge(segments: list[Segment]) -> list[Segment]:
    """Join adjacent text segments, so that each literal ends one wire line."""
    out: list[Segment] = []
    for seg in segments:
        if seg[0] == "text" and out and out[-1][0] == "text":
            out[-1] = ("text", out[-1][1] + seg[1])
        else:
            out.append(seg)
    return out


def _assert_sane(line: bytes) -> None:
    assert b"[SERVERBUG]" not in line, line
    assert not line.startswith(b"+") or line.endswith(b"\r\n"), line


def _run_imap_command(wire: ImapWire, tag: str, segments: list[Segment]) -> str:
    """Send one fuzzed command (with its literals), then a sentinel NOOP; returns how the
    exchange ended: "ok" (sentinel answered), "bye" (closed with BYE), "tls"."""
    head = (tag + " " if tag else "").encode("latin-1")
    pending = head
    for seg in _merge(segments):
        if seg[0] == "text":
            pending += seg[1]
            continue
        data, sync = seg[1], seg[2]  # type: ignore[misc]
        if seg[0] == "huge":
            announce = b"{" + data + (b"}" if sync else b"+}")
            wire.send(pending + announce + b"\r\n")
            line = wire.response_line()
            _assert_sane(line)
            if line.startswith(b"* BYE"):  # LITERAL+ too big: the server says why, hangs up
                return "bye"
            # a refusal (tagged NO/BAD, or "* BAD" for a bad tag), or a "+" if the number
            # was not read as a literal; either way the command is over on our side
            if not line.startswith(b"+"):
                return _sentinel(wire)
            # accepted (64 KB + 1 is fine for APPEND): send it and finish the command
            assert int(data) < 1 << 20, f"a literal of {int(data)} octets was accepted: {line!r}"
            wire.send(b"x" * int(data) + b"\r\n")
            return _sentinel(wire)
        wire.send(pending + b"{%d%s}\r\n" % (len(data), b"" if sync else b"+"))
        if sync:
            line = wire.response_line()
            _assert_sane(line)
            if line.startswith(b"* BYE"):
                return "bye"
            if not line.startswith(b"+"):
                return _sentinel(wire)  # refused before the literal
        wire.send(data)
        pending = b""
    wire.send(pending + b"\r\n")
    return _sentinel(wire)


def _sentinel(wire: ImapWire) -> str:
    """NOOP with a fresh tag until it is answered; continuation requests eat sentinels."""
    sentinel = wire.next_tag()
    wire.send(sentinel.encode() + b" NOOP\r\n")
    seen_bye = False
    while True:
        try:
            line = wire.response_line()
        except ConnectionError:
            assert seen_bye, "the server closed the session without * BYE"
            return "bye"
        _assert_sane(line)
        if line.startswith(b"* BYE"):
            seen_bye = True
        elif line.startswith(b"+"):
            # IDLE or a SASL exchange took our sentinel as its answer: send another
            sentinel = wire.next_tag()
            wire.send(sentinel.encode() + b" NOOP\r\n")
        elif re.match(rb"\S+ OK Begin TLS", line):
            return "tls"  # STARTTLS accepted in clear text; we do not handshake here
        elif line.startswith(sentinel.encode() + b" "):
            assert line.startswith(sentinel.encode() + b" OK"), line
            return "ok"
        elif not line.startswith(b"*"):
            assert re.match(rb"\S+ (OK|NO|BAD)[ \r]", line), line


class _ImapControl:
    def __init__(self, live: LiveServer, per: PerCredentials) -> None:
        self.wire = live.imap("imap_starttls")
        self.wire.login_per(per)
        self.wire.ok("SELECT INBOX")

    def check(self) -> None:
        self.wire.ok("NOOP")


@pytest.fixture(scope="module")
def imap_control(live: LiveServer, fuzz_box: PerCredentials) -> Iterator[_ImapControl]:
    control = _ImapControl(live, fuzz_box)
    yield control
    control.wire.close()


def _imap_session(live: LiveServer, per: PerCredentials, state: str) -> ImapWire:
    if state == "plain":
        return ImapWire(live.port("imap_starttls"), None)
    wire = live.imap("imaps")
    if state == "not-authenticated":
        return wire
    wire.login_per(per)
    if state == "selected":
        exists = int(re.search(rb"\* (\d+) EXISTS", b"".join(wire.ok("SELECT INBOX"))).group(1))  # type: ignore[union-attr]
        if exists < len(SEED_MESSAGES):  # fuzzed EXPUNGE/MOVE ate them: put them back
            for raw in SEED_MESSAGES:
                assert b" OK " in wire.append(raw)
            wire.ok("SELECT INBOX")
    return wire


@FUZZ
@given(
    state=st.sampled_from(["plain", "not-authenticated", "authenticated", "selected"]),
    commands=st.lists(imap_command(), min_size=1, max_size=4),
)
def test_imap_commands_and_literals_always_get_an_answer(
    live: LiveServer,
    fuzz_box: PerCredentials,
    imap_control: _ImapControl,
    state: str,
    commands: list[tuple[str, list[Segment]]],
) -> None:
    wire = _imap_session(live, fuzz_box, state)
    try:
        for tag, segments in commands:
            if _run_imap_command(wire, tag, segments) != "ok":
                break
    finally:
        wire.close()
    imap_control.check()


def test_imap_protocol_fuzz_left_no_traceback(live: LiveServer) -> None:
    """Runs after the fuzzers in this module: the server logged no exception."""
    assert live.server.alive()
    assert not live.tracebacks(), live.tracebacks()[0]
    assert DOMAIN in live.server.endpoints["domain"]
