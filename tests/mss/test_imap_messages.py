"""Reading and changing messages over IMAP with imaplib (and raw lines where needed)."""

from __future__ import annotations

import base64
import imaplib
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from imap_harness import ImapHarness, PerMailbox, RawClient, b64, harness_fixture

TEXT = "Bonjour,\r\nveuillez trouver ci-joint le compte-rendu.\r\nCordialement"
ZIP = base64.encodebytes(b"PK\x03\x04" + bytes(range(256)) * 4).replace(b"\n", b"\r\n")
HEADER = (
    b'From: "Dr Jean MARTIN" <dr.martin@mssante.localhost>\r\n'
    b'To: labo@mssante.localhost, "Secretariat \\"Nord\\"" <secr@mssante.localhost>\r\n'
    b"Cc: =?utf-8?q?J=C3=A9r=C3=B4me_Petit?= <jp@mssante.localhost>\r\n"
    b"Subject: XDM/1.0/DDM+CR DUPONT Jean\r\n"
    b"Date: Mon, 3 Jun 2024 10:00:00 +0200\r\n"
    b"Message-ID: <xdm-1@lps.example>\r\n"
    b"In-Reply-To: <earlier@lps.example>\r\n"
    b"X-MSS-NIL: DEV935997\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="=_b1"\r\n'
)
PART1_HEADER = b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
PART2_HEADER = (
    b'Content-Type: application/zip; name="IHE_XDM.ZIP"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b'Content-Disposition: attachment; filename="IHE_XDM.ZIP"\r\n'
)
XDM_MESSAGE = (
    HEADER
    + b"\r\nPreamble.\r\n--=_b1\r\n"
    + PART1_HEADER
    + b"\r\n"
    + TEXT.encode()
    + b"\r\n--=_b1\r\n"
    + PART2_HEADER
    + b"\r\n"
    + ZIP
    + b"--=_b1--\r\n"
)
ZIP_SIZE = len(ZIP) - 2  # the CRLF before the delimiter belongs to the delimiter

EXPECTED_ENVELOPE = (
    '("Mon, 3 Jun 2024 10:00:00 +0200" "XDM/1.0/DDM+CR DUPONT Jean" '
    '(("Dr Jean MARTIN" NIL "dr.martin" "mssante.localhost")) '
    '(("Dr Jean MARTIN" NIL "dr.martin" "mssante.localhost")) '
    '(("Dr Jean MARTIN" NIL "dr.martin" "mssante.localhost")) '
    '((NIL NIL "labo" "mssante.localhost")'
    '("Secretariat \\"Nord\\"" NIL "secr" "mssante.localhost")) '
    '(("=?utf-8?q?J=C3=A9r=C3=B4me_Petit?=" NIL "jp" "mssante.localhost")) '
    'NIL "<earlier@lps.example>" "<xdm-1@lps.example>")'
)
EXPECTED_BODYSTRUCTURE = (
    f'(("text" "plain" ("charset" "utf-8") NIL NIL "8bit" {len(TEXT)} 3 NIL NIL NIL NIL)'
    f'("application" "zip" ("name" "IHE_XDM.ZIP") NIL NIL "base64" {ZIP_SIZE} NIL '
    '("attachment" ("filename" "IHE_XDM.ZIP")) NIL NIL) '
    '"mixed" ("boundary" "=_b1") NIL NIL NIL)'
)
EXPECTED_BODY = (
    f'(("text" "plain" ("charset" "utf-8") NIL NIL "8bit" {len(TEXT)} 3)'
    f'("application" "zip" ("name" "IHE_XDM.ZIP") NIL NIL "base64" {ZIP_SIZE}) "mixed")'
)


def simple(subject: str, body: str = "Bonjour", sender: str = "a@example.org") -> bytes:
    return (
        f"From: {sender}\r\nTo: x@mssante.localhost\r\nSubject: {subject}\r\n"
        f"Date: Tue, 4 Jun 2024 09:00:00 +0000\r\nMessage-ID: <{subject}@x>\r\n\r\n{body}\r\n"
    ).encode()


@pytest.fixture(scope="module")
def h(tmp_path_factory: Any) -> Iterator[ImapHarness]:
    yield from harness_fixture(tmp_path_factory)


@pytest.fixture
def box(h: ImapHarness) -> PerMailbox:
    return h.per()


def fetch_text(data: list[Any]) -> bytes:
    """imaplib's FETCH answer flattened back into wire text (literals inline)."""
    out = b""
    for item in data:
        out += item[0] + item[1] if isinstance(item, tuple) else item
    return out


def test_envelope_and_bodystructure_of_an_xdm_message(h: ImapHarness, box: PerMailbox) -> None:
    h.deliver(box.address, XDM_MESSAGE)
    client = h.login_per(box)
    client.select("INBOX")
    typ, data = client.fetch("1", "(ENVELOPE)")
    assert typ == "OK"
    assert fetch_text(data) == f"1 (ENVELOPE {EXPECTED_ENVELOPE})".encode()
    _, data = client.fetch("1", "(BODYSTRUCTURE)")
    assert fetch_text(data) == f"1 (BODYSTRUCTURE {EXPECTED_BODYSTRUCTURE})".encode()
    _, data = client.fetch("1", "(BODY)")
    assert fetch_text(data) == f"1 (BODY {EXPECTED_BODY})".encode()
    _, data = client.fetch("1", "(RFC822.SIZE FLAGS)")
    assert fetch_text(data) == f"1 (RFC822.SIZE {len(XDM_MESSAGE)} FLAGS (\\Recent))".encode()
    client.logout()


def test_lazy_metadata_when_the_store_has_none(h: ImapHarness, box: PerMailbox) -> None:
    h.deliver(box.address, XDM_MESSAGE, meta=None)
    h.deliver(box.address, simple("old-meta"), meta={"v": 0})
    client = h.login_per(box)
    client.select("INBOX")
    _, data = client.fetch("1", "(BODYSTRUCTURE)")
    assert fetch_text(data) == f"1 (BODYSTRUCTURE {EXPECTED_BODYSTRUCTURE})".encode()
    _, data = client.fetch("2", "(ENVELOPE)")
    assert b'"old-meta"' in fetch_text(data)
    client.logout()
    store = h.services.store
    folder = store.get_folder(box.mailbox.id, "INBOX")
    assert folder is not None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the computed meta is saved in the background
        rows = store.fetch_rows(folder.id, [1, 2])
        if all(r.meta and r.meta.get("v") == 1 for r in rows):
            break
        time.sleep(0.05)
    assert all(r.meta and r.meta["bs"] for r in rows)


def test_body_sections_and_partials(h: ImapHarness, box: PerMailbox) -> None:
    h.deliver(box.address, XDM_MESSAGE)
    client = h.login_per(box)
    client.select("INBOX")

    def section(spec: str) -> bytes:
        typ, data = client.fetch("1", f"(BODY.PEEK[{spec}])")
        assert typ == "OK", data
        assert isinstance(data[0], tuple), data
        return bytes(data[0][1])

    header_end = XDM_MESSAGE.index(b"\r\n\r\n") + 4
    assert section("") == XDM_MESSAGE
    assert section("HEADER") == XDM_MESSAGE[:header_end]
    assert section("TEXT") == XDM_MESSAGE[header_end:]
    assert section("1") == TEXT.encode()
    assert section("1.MIME") == PART1_HEADER + b"\r\n"
    assert section("2.MIME") == PART2_HEADER + b"\r\n"
    assert section("2") == ZIP[:-2]
    assert section("HEADER.FIELDS (Subject message-id)") == (
        b"Subject: XDM/1.0/DDM+CR DUPONT Jean\r\nMessage-ID: <xdm-1@lps.example>\r\n\r\n"
    )
    not_fields = section("HEADER.FIELDS.NOT (From To Cc Subject Date Message-ID In-Reply-To)")
    assert not_fields.startswith(b"X-MSS-NIL: DEV935997\r\n") and b"From:" not in not_fields
    _, data = client.fetch("1", "(BODY.PEEK[]<10.20>)")
    assert data[0][0].endswith(b"BODY[]<10> {20}") and data[0][1] == XDM_MESSAGE[10:30]
    _, data = client.fetch("1", "(BODY.PEEK[3])")  # no such part
    assert b"BODY[3] NIL" in fetch_text(data)
    _, data = client.fetch("1", "(FLAGS)")
    assert b"\\Seen" not in fetch_text(data)  # PEEK left it unseen
    _, data = client.fetch("1", "(BODY[1])")
    assert b"\\Seen" in fetch_text(data)  # BODY[] sets \Seen and reports FLAGS
    _, data = client.fetch("1", "(RFC822.HEADER)")
    assert data[0][1] == XDM_MESSAGE[:header_end]
    client.logout()


def test_encapsulated_message_rfc822(h: ImapHarness, box: PerMailbox) -> None:
    inner = simple("inner", "Texte interne")
    outer = (
        b"From: b@example.org\r\nSubject: fwd\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n"
        b"--XX\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        b"--XX\r\nContent-Type: message/rfc822\r\n\r\n" + inner + b"\r\n--XX--\r\n"
    )
    h.deliver(box.address, outer)
    client = h.login_per(box)
    client.select("INBOX")
    _, data = client.fetch(
        "1", "(BODYSTRUCTURE BODY.PEEK[2.HEADER.FIELDS (SUBJECT)] BODY.PEEK[2.TEXT] BODY.PEEK[2.1])"
    )
    text = fetch_text(data)
    assert b'("message" "rfc822" NIL NIL NIL "7bit" ' in text
    assert b'"inner" ((NIL NIL "a" "example.org"))' in text  # the inner ENVELOPE
    # (imaplib drops the CRLF after each literal size)
    assert b"BODY[2.HEADER.FIELDS (SUBJECT)] {18}Subject: inner\r\n\r\n" in text
    assert b"BODY[2.TEXT] {15}Texte interne\r\n" in text
    assert b"BODY[2.1] {15}Texte interne\r\n" in text
    client.logout()


def test_search(h: ImapHarness, box: PerMailbox) -> None:
    h.deliver(box.address, XDM_MESSAGE)
    h.deliver(box.address, simple("rappel", "Le patient DUPONT est sorti", "secr@hopital.fr"))
    h.deliver(box.address, simple("autre", "rien", "x@clinique.fr"))
    client = h.login_per(box)
    client.select("INBOX")
    client.store("2", "+FLAGS", "(\\Flagged $MSSanteRead)")

    def search(*criteria: str) -> list[int]:
        typ, data = client.search(None, *criteria)
        assert typ == "OK", data
        return [int(n) for n in data[0].split()]

    assert search("ALL") == [1, 2, 3]
    assert search("FROM", "martin") == [1]
    assert search("FROM", "HOPITAL") == [2]
    assert search("SUBJECT", "xdm/1.0") == [1]
    assert search("BODY", "dupont") == [2]
    assert search("TEXT", "dupont") == [1, 2]  # header of 1, body of 2
    assert search("HEADER", "X-MSS-NIL", "DEV935") == [1]
    assert search("HEADER", "X-MSS-NIL", '""') == [1]
    assert search("FLAGGED") == [2]
    assert search("UNFLAGGED", "UNSEEN") == [1, 3]
    assert search("KEYWORD", "$MSSanteRead") == [2]
    assert search("UNKEYWORD", "$MSSanteRead") == [1, 3]
    assert search("OR", "FLAGGED", "FROM", "clinique") == [2, 3]
    assert search("NOT", "(FLAGGED FROM hopital)") == [1, 3]
    assert search("2:*") == [2, 3]
    assert search("LARGER", "1000") == [1]
    assert search("SMALLER", "1000") == [2, 3]
    assert search("SENTON", "3-Jun-2024") == [1]
    assert search("SENTSINCE", "4-Jun-2024") == [2, 3]
    assert search("SENTBEFORE", "4-Jun-2024") == [1]
    today = time.strftime("%d-%b-%Y", time.gmtime())
    assert search("ON", today) == [1, 2, 3]
    assert search("BEFORE", today) == []
    assert search("SINCE", today) == [1, 2, 3]
    client.store("3", "+FLAGS", "(\\Seen)")
    assert search("RECENT") == [1, 2, 3] and search("NEW") == [1, 2] and search("OLD") == []
    typ, data = client.uid("SEARCH", None, "UID", "2:*")
    assert data == [b"2 3"]
    # a non-ASCII criterion as a UTF-8 literal
    client.literal = "Jérôme".encode()
    typ, data = client.search("UTF-8", "CC")
    assert typ == "OK" and data == [b"1"]
    typ, data = client.search("KOI8-R", "ALL")
    assert typ == "NO" and b"BADCHARSET" in data[0]
    with pytest.raises(imaplib.IMAP4.error, match="unknown SEARCH key"):
        client.search(None, "SIZE", "3")
    client.logout()


def test_custom_keyword_persists_across_sessions(h: ImapHarness, box: PerMailbox) -> None:
    h.deliver(box.address, simple("lu"))
    client = h.login_per(box)
    typ, _ = client.select("INBOX")
    assert "\\*" in client.untagged_responses["OK"][1].decode() or any(
        b"PERMANENTFLAGS" in r and b"\\*" in r for r in client.untagged_responses["OK"]
    )
    typ, data = client.store("1", "+FLAGS.SILENT", "($MSSanteRead)")
    assert typ == "OK" and data == [None]  # .SILENT: no FETCH response
    client.logout()
    client = h.login_per(box)
    client.select("INBOX")
    _, data = client.fetch("1", "(FLAGS)")
    assert b"$MSSanteRead" in data[0]
    _, data = client.store("1", "FLAGS", "(\\Seen)")
    assert b"$MSSanteRead" not in data[0] and b"\\Seen" in data[0]
    _, data = client.store("1", "-FLAGS", "(\\Seen)")
    assert b"\\Seen" not in data[0]
    client.logout()


def test_append_copy_move_expunge_with_uidplus(h: ImapHarness, box: PerMailbox) -> None:
    client = h.login_per(box)
    typ, data = client.append(
        "Drafts", "(\\Draft $Perso)", '"03-Jun-2024 10:00:00 +0200"', simple("brouillon")
    )
    assert typ == "OK"
    match = re.match(rb"\[APPENDUID (\d+) 1\]", data[0])
    assert match, data
    drafts = h.services.store.get_folder(box.mailbox.id, "Drafts")
    assert drafts is not None and int(match.group(1)) == drafts.uidvalidity
    typ, data = client.append("Nowhere", None, None, simple("x"))
    assert typ == "NO" and b"[TRYCREATE]" in data[0]
    assert client.create("Archives/2024")[0] == "OK"
    typ, data = client.list()
    listing = b"\n".join(data)
    assert b'(\\HasNoChildren \\Drafts) "/" "Drafts"' in listing
    assert b'(\\Noselect \\HasChildren) "/" "Archives"' in listing
    assert b'"Archives/2024"' in listing

    client.select("Drafts")
    _, data = client.fetch("1", "(FLAGS INTERNALDATE)")
    assert b"\\Draft" in data[0] and b"$Perso" in data[0]
    assert b'INTERNALDATE " 3-Jun-2024 08:00:00 +0000"' in data[0]
    typ, data = client.copy("1", "Archives/2024")
    assert typ == "OK" and re.match(rb"\[COPYUID \d+ 1 1\]", data[0]), data
    typ, data = client.uid("MOVE", "1", "Trash")
    assert typ == "OK"
    moved = [r for r in client.untagged_responses.get("OK", []) if b"COPYUID" in r]
    assert moved and re.match(rb"\[COPYUID \d+ 1 1\]", moved[-1]), moved
    assert client.untagged_responses.get("EXPUNGE") == [b"1"]
    assert client.select("Drafts")[1] == [b"0"]

    client.select("Archives/2024")
    client.append("Archives/2024", None, None, simple("second"))
    client.store("1:2", "+FLAGS", "(\\Deleted)")
    typ, data = client.uid("EXPUNGE", "2")
    assert typ == "OK" and client.untagged_responses.pop("EXPUNGE") == [b"2"]
    assert client.expunge() == ("OK", [b"1"])
    assert client.select("Archives/2024")[1] == [b"0"]
    assert client.status("Trash", "(MESSAGES UIDNEXT UNSEEN)")[1][0].endswith(
        b"(MESSAGES 1 UIDNEXT 2 UNSEEN 1)"
    )
    client.logout()


def test_examine_is_read_only(h: ImapHarness, box: PerMailbox) -> None:
    h.deliver(box.address, simple("ro"))
    client = h.login_per(box)
    typ, _ = client.select("INBOX", readonly=True)
    assert typ == "OK"
    _, data = client.fetch("1", "(BODY[TEXT])")
    typ, data = client.store("1", "+FLAGS", "(\\Seen)")
    assert typ == "NO" and b"READ-ONLY" in data[0]
    client.select("INBOX")
    _, data = client.fetch("1", "(FLAGS)")
    assert b"\\Seen" not in data[0]
    client.logout()


def test_idle_receives_exists_on_delivery(h: ImapHarness, box: PerMailbox) -> None:
    h.deliver(box.address, simple("first"))
    raw = RawClient(h.imaps_port, context=h.client_context())
    assert raw.command(f"AUTHENTICATE XOAUTH2 {b64(box.xoauth2())}")[-1].startswith(b"r1 OK")
    raw.command("SELECT INBOX")
    raw.send(b"i1 IDLE\r\n")
    assert raw.readline().startswith(b"+ ")
    h.deliver(box.address, simple("second"))
    assert raw.readline() == b"* 2 EXISTS\r\n"
    assert raw.readline() == b"* 2 RECENT\r\n"  # both are \\Recent for this session
    raw.send(b"DONE\r\n")
    assert raw.readline().startswith(b"i1 OK")
    raw.close()


def test_expunge_is_not_reported_during_fetch(h: ImapHarness, box: PerMailbox) -> None:
    for n in range(3):
        h.deliver(box.address, simple(f"m{n}"))
    watcher = RawClient(h.imaps_port, context=h.client_context())
    watcher.command(f"AUTHENTICATE XOAUTH2 {b64(box.xoauth2())}")
    watcher.command("SELECT INBOX")
    other = h.login_per(box)
    other.select("INBOX")
    other.store("1", "+FLAGS", "(\\Deleted)")
    other.expunge()
    h.deliver(box.address, simple("m3"))
    other.logout()
    lines = watcher.command("FETCH 1:3 (UID)")
    assert not any(b"EXPUNGE" in line for line in lines), lines
    assert b"* 2 FETCH (UID 2)\r\n" in lines  # the snapshot keeps its numbering
    assert b"* 4 EXISTS\r\n" in lines  # EXISTS may come at the end, counting the ghost
    lines = watcher.command("NOOP")
    assert lines[0] == b"* 1 EXPUNGE\r\n", lines
    assert watcher.command("FETCH 1:* (UID)")[:-1] == [
        b"* 1 FETCH (UID 2)\r\n",
        b"* 2 FETCH (UID 3)\r\n",
        b"* 3 FETCH (UID 4)\r\n",
    ]
    watcher.close()


def test_flag_changes_of_other_sessions_are_reported(h: ImapHarness, box: PerMailbox) -> None:
    h.deliver(box.address, simple("f"))
    watcher = RawClient(h.imaps_port, context=h.client_context())
    watcher.command(f"AUTHENTICATE XOAUTH2 {b64(box.xoauth2())}")
    watcher.command("SELECT INBOX")
    other = h.login_per(box)
    other.select("INBOX")
    other.store("1", "+FLAGS", "($MSSanteRead)")
    other.logout()
    lines = watcher.command("NOOP")
    assert lines[0] == b"* 1 FETCH (FLAGS ($MSSanteRead \\Recent))\r\n", lines
    watcher.close()


def test_mailbox_management(h: ImapHarness, box: PerMailbox) -> None:
    client = h.login_per(box)
    assert client.create("Projets")[0] == "OK"
    typ, data = client.create("Projets")
    assert typ == "NO" and b"ALREADYEXISTS" in data[0]
    assert client.rename("Projets", "Dossiers")[0] == "OK"
    assert client.unsubscribe("Dossiers")[0] == "OK"
    _, subscribed = client.lsub()
    assert not any(b"Dossiers" in line for line in subscribed)
    assert client.subscribe("Dossiers")[0] == "OK"
    _, subscribed = client.lsub()
    assert any(b'"Dossiers"' in line for line in subscribed)
    assert client.delete("Dossiers")[0] == "OK"
    assert client.select("Dossiers")[0] == "NO"
    _, data = client.list('""', "%")
    assert len(data) == 4
    typ, data = client.namespace()
    assert data == [b'(("" "/")) NIL NIL']
    client.select("INBOX")
    assert client.unselect()[0] == "OK"
    client.logout()
