"""The MIME analyser behind FETCH: structure, offsets, tolerance of broken input, speed."""

from __future__ import annotations

import json
import time

import pytest

from simulators.mss.imap.fetch import parse_section, section_data
from simulators.mss.mime import META_VERSION, analyse_message, body_text, parse_addresses

NESTED = (
    b"From: a@example.org\r\nSubject: nested\r\n"
    b"Content-Type: multipart/mixed; boundary=outer\r\n\r\n"
    b"--outer\r\n"
    b'Content-Type: multipart/alternative; boundary="inner"\r\n\r\n'
    b"--inner\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\nCaf=C3=A9 cr=C3=A8me\r\n"
    b"--inner\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Caf\xc3\xa9</p>\r\n"
    b"--inner--\r\n"
    b"--outer\r\nContent-Type: application/pdf; name=cr.pdf\r\n"
    b"Content-Disposition: attachment; filename=cr.pdf\r\nContent-Language: fr, en\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQ=\r\n"
    b"--outer--\r\nepilogue\r\n"
)


def sec(raw: bytes, spec: str) -> bytes | None:
    return section_data(raw, analyse_message(raw)["tree"], parse_section(spec))


def test_nested_multipart_structure_and_offsets() -> None:
    meta = analyse_message(NESTED)
    assert json.loads(json.dumps(meta)) == meta  # stored as JSON
    assert meta["v"] == META_VERSION
    assert meta["bs"] == (
        '((("text" "plain" ("charset" "utf-8") NIL NIL "quoted-printable" 20 1 NIL NIL NIL NIL)'
        '("text" "html" ("charset" "utf-8") NIL NIL "7bit" 12 1 NIL NIL NIL NIL) '
        '"alternative" ("boundary" "inner") NIL NIL NIL)'
        '("application" "pdf" ("name" "cr.pdf") NIL NIL "base64" 12 NIL '
        '("attachment" ("filename" "cr.pdf")) ("fr" "en") NIL) '
        '"mixed" ("boundary" "outer") NIL NIL NIL)'
    )
    assert sec(NESTED, "1.1") == b"Caf=C3=A9 cr=C3=A8me"
    assert sec(NESTED, "1.2") == b"<p>Caf\xc3\xa9</p>"
    assert sec(NESTED, "1.2.MIME") == b"Content-Type: text/html; charset=utf-8\r\n\r\n"
    assert sec(NESTED, "2") == b"JVBERi0xLjQ="
    assert sec(NESTED, "1.3") is None and sec(NESTED, "3") is None
    assert sec(NESTED, "1.HEADER") is None  # HEADER of a part needs message/rfc822
    assert "Café crème" in body_text(NESTED, meta) and "<p>Café</p>" in body_text(NESTED, meta)


def test_single_part_message_sections() -> None:
    raw = b"Subject: s\r\n\r\nline 1\r\nline 2\r\n"
    assert sec(raw, "1") == b"line 1\r\nline 2\r\n"
    assert sec(raw, "TEXT") == b"line 1\r\nline 2\r\n"
    assert sec(raw, "HEADER") == b"Subject: s\r\n\r\n"
    assert sec(raw, "2") is None
    assert analyse_message(raw)["bs"] == (
        '("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 16 2 NIL NIL NIL NIL)'
    )


def test_bare_lf_message() -> None:
    raw = b"Subject: lf\nContent-Type: multipart/mixed; boundary=b\n\n--b\n\nhello\n--b--\n"
    meta = analyse_message(raw)
    assert meta["h"]["subject"] == "lf"
    assert sec(raw, "1") == b"hello"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\r\n",
        b"no header at all, just text",
        b"Subject: no separator and no body",
        b"Content-Type: multipart/mixed\r\n\r\nno boundary parameter\r\n",
        b"Content-Type: multipart/mixed; boundary=zz\r\n\r\nthe boundary never comes\r\n",
        b"Content-Type: multipart/mixed; boundary=zz\r\n\r\n--zz--\r\n",
        b"Content-Type: text/plain; charset=x-unknown-42\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n!!!not base64!!!\r\n",
        b"Subject: \xff\xfe 8-bit \xe9t\xe9\r\nFrom: \xc3\xa9l\xc3\xa8ve <e@x.fr>\r\n\r\nbody",
        b"Content-Type: /\r\n\r\nx",
        b'Content-Type: multipart/mixed; boundary="unterminated\r\n\r\n--unterminated\r\n',
        b'From: <<<>>> ,,, @@@ "unterminated\r\nTo: group: ; Cc: (comment\r\n\r\n',
        b"Content-Type: message/rfc822\r\n\r\n",
        b"Date: not a date\r\nDate: Mon, 99 Foo 2024 99:99:99 +9999\r\n\r\n",
        (b"Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\n" * 60),  # deep nesting
    ],
)
def test_malformed_input_never_raises(raw: bytes) -> None:
    meta = analyse_message(raw)
    assert meta["v"] == META_VERSION
    assert meta["bs"].startswith("(") and meta["env"].startswith("(")
    assert json.loads(json.dumps(meta)) == meta
    text = body_text(raw, meta)
    assert isinstance(text, str)
    assert section_data(raw, meta["tree"], parse_section("")) == raw


def test_eight_bit_header_goes_out_as_a_literal() -> None:
    meta = analyse_message(b"Subject: \xc3\xa9t\xc3\xa9\r\n\r\nx")
    assert "{5}\r\n" in meta["env"]  # 5 octets of UTF-8 in an IMAP literal
    assert meta["h"]["subject"] == "été"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a@b.fr", [(None, None, "a", "b.fr")]),
        (
            '"Martin, Jean" <jm@x.fr>, b@c.fr',
            [("Martin, Jean", None, "jm", "x.fr"), (None, None, "b", "c.fr")],
        ),
        ("Dr  Jean   Martin <jm@x.fr>", [("Dr Jean Martin", None, "jm", "x.fr")]),
        (
            "undisclosed-recipients:;",
            [(None, None, "undisclosed-recipients", None), (None, None, None, None)],
        ),
        ("jm@x.fr (Jean Martin)", [(None, None, "jm", "x.fr")]),
        ("nodomain", [(None, None, "nodomain", "MISSING_DOMAIN")]),
    ],
)
def test_address_parsing(value: str, expected: list[tuple[str | None, ...]]) -> None:
    assert parse_addresses(value) == expected


def test_analyse_is_fast_enough() -> None:
    text = ("Ligne de compte-rendu de consultation, texte courant.\r\n" * 60).encode()
    raw = (
        b'From: "Dr Jean MARTIN" <dr.martin@mssante.localhost>\r\n'
        b"To: labo@mssante.localhost\r\nSubject: CR\r\nMessage-ID: <x@y>\r\n"
        b"Date: Mon, 3 Jun 2024 10:00:00 +0200\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + text
    )
    assert 2000 < len(raw) < 5000
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(200):
            analyse_message(raw)
        best = min(best, (time.perf_counter() - started) / 200)
    # Target well under 0.2 ms; the bound leaves room for a loaded CI machine.
    assert best < 0.001, f"{best * 1e6:.0f} us per message"
