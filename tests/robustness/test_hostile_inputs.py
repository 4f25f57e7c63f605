"""Hostile documents and messages: each is refused (or handled) with a clear error,
within bounded time and memory, and nothing is fetched from the network or the disk.

What ``tests/interop/test_interop_hostile.py`` and ``test_interop_xdm.py`` already
cover (a 3-level entity expansion, one file XXE, an external DTD, "../" and absolute
zip paths, a ratio bomb through ``read_zip``) is not repeated. Added here:

- XML: the full billion laughs, UTF-16 encoded payloads (which a byte-level
  ``<!ENTITY`` check cannot see), parameter entities, http entities and DTDs,
  XInclude, ``xsi:schemaLocation`` and ``xml-stylesheet``, all pointed at a local
  listener that must see no connection, and at a canary file that must not leak;
  100,000-deep nesting; the same bombs through the live Gazelle-style HTTP API, with
  the server's RSS measured;
- ZIP: a streamed 300 MB bomb, headers that lie about sizes, zip of zips, the
  backslash/drive-letter/symlink/NUL variants of zip-slip;
- mail: 5,000-deep MIME nesting, a header folded 300,000 times, a 1 MB SMTP command
  line, a 100 KB SASL continuation and IDLE line, 10,000-deep IMAP lists and SEARCH
  keys, a 100 MB message over SMTP (552, RSS bounded), a message whose headers take
  seconds to analyse while another session must keep answering.
"""

from __future__ import annotations

import contextlib
import io
import socket
import struct
import threading
import time
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from simulators.interop.engine import validate_bytes
from simulators.mss.mime import analyse_message

from .support import REPO, LiveServer, PerCredentials, RssSampler

GOOD_CDA = (REPO / "fixtures" / "cda" / "segur-sim_VAC-NOTE_2023.01.xml").read_bytes()
CDA_NS = b'xmlns="urn:hl7-org:v3"'


class CanaryListener:
    """A TCP listener that counts every connection (none is allowed)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.hits = 0
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.hits += 1
            conn.close()

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()


@pytest.fixture(scope="module")
def canary(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CanaryListener, Path]]:
    listener = CanaryListener()
    secret = tmp_path_factory.mktemp("canary") / "secret.txt"
    secret.write_text("CANARY-7f3a9c-SECRET")
    yield listener, secret
    listener.close()


def billion_laughs(levels: int = 10) -> str:
    entities = '<!ENTITY lol0 "lol">' + "".join(
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, levels)
    )
    return (
        f'<?xml version="1.0"?><!DOCTYPE ClinicalDocument [{entities}]>'
        f'<ClinicalDocument xmlns="urn:hl7-org:v3"><title>&lol{levels - 1};</title>'
        "</ClinicalDocument>"
    )


def hostile_xml(port: int, secret: Path) -> dict[str, bytes]:
    http = f"http://127.0.0.1:{port}"
    cda = GOOD_CDA.decode()
    laughs = billion_laughs()
    xxe_file = (
        f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file://{secret}">]>'
        '<ClinicalDocument xmlns="urn:hl7-org:v3"><title>&x;</title></ClinicalDocument>'
    )
    return {
        "billion laughs": laughs.encode(),
        "billion laughs UTF-16": laughs.replace('"1.0"?', '"1.0" encoding="UTF-16"?').encode(
            "utf-16"
        ),
        "file entity UTF-16": xxe_file.replace('"1.0"?', '"1.0" encoding="UTF-16"?').encode(
            "utf-16"
        ),
        "quadratic blowup": (
            f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "{"x" * 50_000}">]>'
            '<ClinicalDocument xmlns="urn:hl7-org:v3"><title>' + "&a;" * 20_000 + "</title>"
            "</ClinicalDocument>"
        ).encode(),
        "http entity": (
            f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "{http}/xxe">]>'
            '<ClinicalDocument xmlns="urn:hl7-org:v3"><title>&x;</title></ClinicalDocument>'
        ).encode(),
        "parameter entity": (
            f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY % p SYSTEM "{http}/p.dtd"> %p;]>'
            '<ClinicalDocument xmlns="urn:hl7-org:v3"/>'
        ).encode(),
        "external DTD over http": (
            f'<?xml version="1.0"?><!DOCTYPE ClinicalDocument PUBLIC "-//x//EN" "{http}/cda.dtd">'
            '<ClinicalDocument xmlns="urn:hl7-org:v3"/>'
        ).encode(),
        "XInclude file and http": cda.replace(
            "<title>",
            '<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" parse="text" '
            f'href="file://{secret}"/><xi:include xmlns:xi="http://www.w3.org/2001/XInclude" '
            f'href="{http}/inc.xml"/><title>',
            1,
        ).encode(),
        "schemaLocation over http": cda.replace(
            'xmlns="urn:hl7-org:v3"',
            'xmlns="urn:hl7-org:v3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
            f'xsi:schemaLocation="urn:hl7-org:v3 {http}/CDA.xsd"',
            1,
        ).encode(),
        "xml-stylesheet over http": cda.replace(
            "?>", f'?><?xml-stylesheet type="text/xsl" href="{http}/cda.xsl"?>', 1
        ).encode(),
        "100,000-deep nesting": (
            '<?xml version="1.0"?><ClinicalDocument xmlns="urn:hl7-org:v3">'
            + "<component>" * 100_000
            + "</component>" * 100_000
            + "</ClinicalDocument>"
        ).encode(),
    }


REFUSED = {  # payload -> words the refusal must contain
    "billion laughs": "entit",
    "billion laughs UTF-16": "entit",
    "file entity UTF-16": "doctype",
    "quadratic blowup": "entit",
    "http entity": "entit",
    "parameter entity": "entit",
    "external DTD over http": "doctype",
    "100,000-deep nesting": "depth",
}


@pytest.mark.parametrize("kind", ["cda", "xds"])
def test_hostile_xml_is_refused_quickly_without_any_fetch(
    canary: tuple[CanaryListener, Path], kind: str
) -> None:
    listener, secret = canary
    for label, content in hostile_xml(listener.port, secret).items():
        started = time.perf_counter()
        report = validate_bytes(content, name=f"{label}.xml", kind=kind)
        elapsed = time.perf_counter() - started
        outputs = report.to_gvr_bytes() + report.to_json_bytes() + report.to_text().encode()
        assert b"CANARY-7f3a9c" not in outputs, label  # the file was never read
        assert elapsed < 5, f"{label}: {elapsed:.1f} s"
        assert "INPUT-INTERNAL-01" not in report.failed_ids(), label
        if label in REFUSED:
            assert report.result.value == "FAILED", label
            reasons = " ".join(c.description for c in report.walk() if not c.passed).lower()
            assert REFUSED[label] in reasons, (label, reasons[:300])
    time.sleep(0.2)  # let a (forbidden) late connection show up
    assert listener.hits == 0, "a validator fetched something over the network"


def test_deeply_nested_json_is_a_clear_input_error() -> None:
    for content in (b"[" * 100_000, b'{"resourceType": "Patient", "x": ' + b"[" * 100_000):
        report = validate_bytes(content, name="deep.json", kind="fhir")
        assert report.result.value == "FAILED"
        assert "INPUT-INTERNAL-01" not in report.failed_ids(), report.failed_ids()


# ---- ZIP -----------------------------------------------------------------------------------
def streamed_bomb(megabytes: int) -> bytes:
    """A zip holding ``megabytes`` MB of zeros, built without holding them in memory."""
    buffer = io.BytesIO()
    chunk = b"\0" * (1 << 20)
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        info = zipfile.ZipInfo("IHE_XDM/SUBSET01/DOC0001.XML", (2020, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        with archive.open(info, "w", force_zip64=True) as entry:
            for _ in range(megabytes):
                entry.write(chunk)
    return buffer.getvalue()


def lying_sizes(true_megabytes: int = 64) -> bytes:
    """One entry whose headers announce 1,000 bytes but whose data inflates to much more."""
    data = zlib.compressobj(9, zlib.DEFLATED, -15)
    payload = b"".join(data.compress(b"\0" * (1 << 20)) for _ in range(true_megabytes))
    payload += data.flush()
    name = b"IHE_XDM/SUBSET01/METADATA.XML"
    crc, announced = 0, 1000
    local = (
        struct.pack(
            "<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, len(payload), announced, len(name), 0
        )
        + name
        + payload
    )
    central = (
        struct.pack(
            "<IHHHHHHIIIHHHHHII",
            0x02014B50,
            20,
            20,
            0,
            8,
            0,
            0,
            crc,
            len(payload),
            announced,
            len(name),
            0,
            0,
            0,
            0,
            0,
            0,
        )
        + name
    )
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), len(local), 0)
    return local + central + end


def zip_of(entries: dict[str, bytes], *, symlink: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0))
            if name == symlink:
                info.external_attr = 0o120777 << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def test_zip_bombs_are_refused_quickly() -> None:
    inner = streamed_bomb(30)
    cases = {
        "300 MB of zeros": (streamed_bomb(300), "ratio"),
        "sizes that lie": (lying_sizes(), ""),
        "zip of zip bombs": (zip_of({f"b{i}.zip": inner for i in range(10)}), ""),
    }
    for label, (content, needle) in cases.items():
        assert len(content) < 2_000_000, label  # small on the wire...
        started = time.perf_counter()
        report = validate_bytes(content, name="IHE_XDM.ZIP", kind="xdm")
        assert time.perf_counter() - started < 5, label  # ...and never inflated whole
        assert report.result.value == "FAILED", label
        assert "INPUT-INTERNAL-01" not in report.failed_ids(), label
        reasons = " ".join(c.description for c in report.walk() if not c.passed)
        assert needle in reasons, (label, reasons[:300])


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("..\\..\\evil.txt", "backslash"),
        ("IHE_XDM\\SUBSET01\\..\\..\\x", "backslash"),
        ("C:/Windows/evil.txt", "absolute"),
        ("./../evil.txt", "traversal"),
        ("IHE_XDM/./../../evil.txt", "traversal"),
        ("IHE_XDM/SUBSET01/DOC0001.XML", "symbolic link"),  # stored as a symlink to /etc/passwd
    ],
)
def test_zip_slip_variants_are_refused_with_the_reason(name: str, needle: str) -> None:
    symlink = name if needle == "symbolic link" else None
    content = zip_of({name: b"/etc/passwd" if symlink else b"x"}, symlink=symlink)
    report = validate_bytes(content, name="IHE_XDM.ZIP", kind="xdm")
    assert report.failed_ids() == {"INPUT-ZIP-01"}
    reasons = " ".join(c.description for c in report.walk() if not c.passed)
    assert needle in reasons, reasons


# ---- the same bombs through the live HTTP API (server RSS measured) ------------------------
def evs_request(content: bytes, service: str = "Schematron Based CDA Validator") -> bytes:
    import base64

    return (
        f'<validation xmlns="http://evsobjects.gazelle.ihe.net/"><validationService '
        f'name="{service}" validator="x"/><object originalFileName="o"><content>'
        f"{base64.b64encode(content).decode()}</content></object></validation>"
    ).encode()


def test_hostile_documents_through_the_live_validation_api(
    live: LiveServer, canary: tuple[CanaryListener, Path]
) -> None:
    listener, secret = canary
    url = f"https://127.0.0.1:{live.port('https')}/evs/rest/validations"
    headers = {"Content-Type": "application/xml"}
    xml = hostile_xml(listener.port, secret)
    with (
        httpx.Client(verify=live.context(), timeout=60) as client,
        RssSampler(live.server.pid) as rss,
    ):
        # the request envelope itself is hostile: refused with 400 and the reason
        for label in ("billion laughs", "billion laughs UTF-16", "http entity"):
            started = time.perf_counter()
            answer = client.post(url, content=xml[label], headers=headers)
            assert answer.status_code == 400, (label, answer.text)
            assert "refused" in answer.text or "entit" in answer.text.lower(), answer.text
            assert time.perf_counter() - started < 5
        # hostile objects inside a well-formed request: a FAILED report
        for content, service in (
            (xml["billion laughs"], "Schematron Based CDA Validator"),
            (xml["100,000-deep nesting"], "Schematron Based CDA Validator"),
            (streamed_bomb(300), "XDM validator"),
            (lying_sizes(), "XDM validator"),
        ):
            answer = client.post(url, content=evs_request(content, service), headers=headers)
            assert answer.status_code == 201, answer.text
            assert answer.json()["result"] == "FAILED"
    assert rss.growth_mb < 100, f"the server grew by {rss.growth_mb:.0f} MB"
    assert listener.hits == 0


def test_oversize_api_request_is_refused_before_it_is_read(live: LiveServer) -> None:
    """A 200 MB POST announced by Content-Length: 413, without buffering 200 MB."""
    import ssl

    ctx = ssl.create_default_context(cafile=live.server.ca_bundle)
    with RssSampler(live.server.pid) as rss:
        raw = socket.create_connection(("127.0.0.1", live.port("https")), timeout=30)
        conn = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        conn.sendall(
            b"POST /evs/rest/validations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/xml\r\nContent-Length: 209715200\r\n\r\n"
        )
        chunk = b"<" * (1 << 20)
        answer = b""
        try:
            for _ in range(200):  # keep sending until the server answers or hangs up
                conn.sendall(chunk)
                conn.setblocking(False)
                with contextlib.suppress(ssl.SSLWantReadError, BlockingIOError):
                    answer += conn.recv(65536)
                conn.setblocking(True)
                if answer:
                    break
        except OSError:
            pass  # the server closed the connection: it refused to read on
        conn.settimeout(10)
        try:
            while b"\r\n\r\n" not in answer:
                more = conn.recv(65536)
                if not more:
                    break
                answer += more
        except OSError:
            pass
        conn.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert rss.growth_mb < 100, f"the server grew by {rss.growth_mb:.0f} MB"


# ---- mail ----------------------------------------------------------------------------------
def test_pathological_mime_is_analysed_in_bounded_time() -> None:
    cases = {
        "5,000-deep multipart": b"".join(
            b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
            for i in range(5000)
        ),
        "a header folded 300,000 times": b"Subject: a\r\n"
        + b"".join(b"\tfold%d\r\n" % i for i in range(300_000))
        + b"\r\nbody",
        "a 10 MB header line": b"Subject: " + b"x" * 10_000_000 + b"\r\n\r\nbody",
        "300,000 parentheses": b"To: " + b"(" * 300_000 + b"\r\n\r\nbody",
    }
    for label, raw in cases.items():
        started = time.perf_counter()
        meta = analyse_message(raw)
        assert time.perf_counter() - started < 3, label
        assert meta["bs"].startswith("(")


def test_huge_smtp_command_line_is_refused_and_the_session_goes_on(
    live: LiveServer, fuzz_box: PerCredentials
) -> None:
    wire = live.smtp("smtps")
    wire.auth(fuzz_box)
    code, text = wire.cmd(b"MAIL FROM:<" + b"a" * (1 << 20) + b"@mssante.localhost>")
    assert code == 500 and b"too long" in text.lower(), text
    assert wire.cmd("NOOP")[0] == 250
    wire.close()


def test_huge_lines_inside_imap_commands_get_bad(
    live: LiveServer, fuzz_box: PerCredentials
) -> None:
    wire = live.imap()
    # a 100 KB SASL continuation
    tag = wire.next_tag()
    wire.send(f"{tag} AUTHENTICATE XOAUTH2\r\n".encode())
    assert wire.response_line().startswith(b"+")
    wire.send(b"A" * 100_000 + b"\r\n")
    answer = wire.until_tagged(tag)[-1]
    assert answer.startswith(tag.encode() + b" BAD") and b"SERVERBUG" not in answer, answer
    wire.login_per(fuzz_box)
    wire.ok("SELECT INBOX")
    # a 100 KB line during IDLE
    tag = wire.next_tag()
    wire.send(f"{tag} IDLE\r\n".encode())
    assert wire.response_line().startswith(b"+")
    wire.send(b"D" * 100_000 + b"\r\n")
    answer = wire.until_tagged(tag)[-1]
    assert answer.startswith(tag.encode() + b" BAD") and b"SERVERBUG" not in answer, answer
    wire.ok("NOOP")
    wire.close()


def test_deeply_nested_imap_lists_and_search_keys_get_bad(
    live: LiveServer, fuzz_box: PerCredentials
) -> None:
    wire = live.imap()
    wire.login_per(fuzz_box)
    wire.ok("SELECT INBOX")
    for command in (
        b"FETCH 1 " + b"(" * 10_000,
        b"SEARCH " + b"(" * 10_000 + b"ALL" + b")" * 10_000,
        b"SEARCH " + b"NOT " * 10_000 + b"ALL",
        b"SEARCH " + b"OR ALL " * 8_000 + b"ALL",
    ):
        answer = wire.command(command)[-1]
        assert b" BAD " in answer[:12] and b"nested" in answer, answer[:200]
    wire.ok("NOOP")
    wire.close()


def test_100_mb_message_over_smtp_gets_552_with_bounded_memory(
    live: LiveServer, fuzz_box: PerCredentials
) -> None:
    wire = live.smtp("smtps")
    wire.auth(fuzz_box)
    code, text = wire.cmd(f"MAIL FROM:<{fuzz_box.address}> SIZE=104857600")
    assert code == 552, text  # refused at once when declared
    assert wire.cmd("RSET")[0] == 250
    # undeclared: the server must read and discard it, not keep it
    assert wire.cmd(f"MAIL FROM:<{fuzz_box.address}>")[0] == 250
    assert wire.cmd(f"RCPT TO:<{fuzz_box.address}>")[0] == 250
    assert wire.cmd("DATA")[0] == 354
    line = b"x" * 998 + b"\r\n"
    megabyte = line * ((1 << 20) // len(line))
    started = time.perf_counter()
    with RssSampler(live.server.pid) as rss:
        wire.send(b"Subject: 100 MB\r\n\r\n")
        for _ in range(100):
            wire.send(megabyte)
        wire.send(b".\r\n")
        code, text = wire.reply()
    elapsed = time.perf_counter() - started
    assert code == 552 and b"size" in text.lower(), text
    assert elapsed < 60, elapsed
    assert rss.growth_mb < 64, f"the server grew by {rss.growth_mb:.0f} MB for a 100 MB message"
    assert wire.cmd("NOOP")[0] == 250  # and the session goes on
    wire.close()


def test_a_message_slow_to_analyse_does_not_freeze_other_sessions(
    live: LiveServer, fuzz_box: PerCredentials
) -> None:
    """8 MB of named addresses takes seconds to analyse: IMAP must keep answering."""
    hostile = (
        b"From: <dr.fuzz@mssante.localhost>\r\nTo: "
        + b",\r\n ".join(b'"N %d" <a%d@b.c>' % (i, i) for i in range(400_000))
        + b"\r\nSubject: slow\r\n\r\nbody\r\n"
    )
    assert len(hostile) < 20 * 1024 * 1024
    watcher = live.imap()
    watcher.login_per(fuzz_box)
    sender = live.smtp("smtps")
    sender.auth(fuzz_box)
    assert sender.cmd(f"MAIL FROM:<{fuzz_box.address}>")[0] == 250
    assert sender.cmd(f"RCPT TO:<{fuzz_box.address}>")[0] == 250
    assert sender.cmd("DATA")[0] == 354
    result: list[tuple[int, bytes]] = []

    def send() -> None:
        sender.send(hostile.replace(b"\r\n.", b"\r\n..") + b".\r\n")
        result.append(sender.reply())

    thread = threading.Thread(target=send)
    started = time.perf_counter()
    thread.start()
    latencies = []
    while thread.is_alive() and time.perf_counter() - started < 120:
        t0 = time.perf_counter()
        watcher.ok("NOOP")
        latencies.append(time.perf_counter() - t0)
        time.sleep(0.02)
    thread.join(120)
    assert result and result[0][0] == 250, result
    assert max(latencies) < 1.0, f"an IMAP NOOP waited {max(latencies):.1f} s"
    sender.close()
    watcher.close()
