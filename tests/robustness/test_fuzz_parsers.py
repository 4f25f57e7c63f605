"""Parser fuzzing: MIME analysis, CDA/XDS XML, XDM zip, HL7 v2, proof bundles.

The generators are structure-aware (real MIME trees, real CDA/ebXML/HL7 fixtures
mutated element by element, real XDM archives and signed bundles mutated entry by
entry), so examples reach deep into the parsers instead of stopping at the first byte.
What each test requires:

- ``analyse_message`` returns usable metadata (part offsets inside the message) and
  ``body_text``/``header_text`` (SEARCH) never raise on what it returned;
- ``validate_bytes`` returns a PASSED/FAILED report that serialises, and the
  last-resort guard (``INPUT-INTERNAL-01``: an exception inside a validator) never
  fires;
- ``verify_bundle`` on a mutated bundle returns a failed result, without raising.

CI runs 100 to 150 examples each; ``SEGUR_SIM_FUZZ_EXAMPLES=N`` runs N.
"""

from __future__ import annotations

import copy
import io
import json
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from lxml import etree

from simulators.core import proof
from simulators.core.pki import TestPKI
from simulators.interop.engine import validate_bytes
from simulators.interop.xds.xdm import METADATA, build_xdm
from simulators.mss.imap.fetch import parse_section, section_data
from simulators.mss.mime import META_VERSION, analyse_message, body_text, header_text

from .support import REPO, examples

FIXTURES = REPO / "fixtures"
CDA_FILES = sorted((FIXTURES / "cda").glob("*.xml"))
HL7_FILES = sorted((FIXTURES / "hl7v2").glob("*.hl7"))


def fuzz(default: int) -> settings:
    return settings(
        max_examples=examples(default),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def assert_report(content: bytes, *, name: str, kind: str) -> None:
    report = validate_bytes(content, name=name, kind=kind)
    assert report.result.value in ("PASSED", "FAILED")
    internal = [c.description for c in report.walk() if c.constraint_id == "INPUT-INTERNAL-01"]
    assert not internal, internal
    report.to_gvr_bytes()
    report.to_json_bytes()
    report.to_text()


# ---- MIME ----------------------------------------------------------------------------------
_CHARSETS = [
    "utf-8", "us-ascii", "iso-8859-1", "windows-1252", "utf-16", "utf-7", "idna", "punycode",
    "undefined", "rot13", "base64", "x-unknown", "", '"utf-8', "utf-8'fr'", "unicode_escape",
]  # fmt: skip
_ENCODINGS = ["7bit", "8bit", "binary", "base64", "quoted-printable", "x-uuencode", "BASE64", ""]
_junk = st.binary(max_size=80).map(lambda b: b.replace(b"\n", b" ").replace(b"\r", b" "))


@st.composite
def _header_value(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return draw(_junk)
    if kind == 1:  # RFC 2047 encoded words with hostile charsets
        charset = draw(st.sampled_from(_CHARSETS)).encode()
        return (
            b"=?"
            + charset
            + b"?"
            + draw(st.sampled_from([b"B", b"Q", b"X"]))
            + b"?"
            + (draw(st.binary(max_size=20)).hex().encode())
            + b"?="
        )
    if kind == 2:  # addresses, groups, comments, quotes
        return draw(
            st.sampled_from(
                [
                    b'"Dr \\"X\\"" <a@b.c>, c@d.e',
                    b"group: a@b, c@d;, (comment) e@f",
                    b"<<<>>> ,,, @@@",
                    b'"unterminated <a@b>',
                    b"\xc3\xa9l\xc3\xa8ve <e@x.fr>",
                    b"a@b.c (Dr (nested (comment)))",
                    b"undisclosed-recipients:;",
                ]
            )
        )
    if kind == 3:  # folded
        return draw(_junk) + b"\r\n\t" + draw(_junk) + b"\r\n " + draw(_junk)
    if kind == 4:
        return b"x" * draw(st.sampled_from([0, 998, 5000]))
    return draw(st.sampled_from([b"Mon, 3 Jun 2024 10:00:00 +0200", b"99 Foo 2024", b"",
                                 b"Thu, 31 Feb 2024 25:61:61 -9999"]))  # fmt: skip


@st.composite
def mime_entity(draw: st.DrawFn, depth: int = 0) -> bytes:
    headers = [
        (draw(st.sampled_from([b"Subject", b"From", b"To", b"Cc", b"Date", b"Message-ID",
                               b"In-Reply-To", b"X-MSS-NIL", b"Content-Disposition",
                               b"Content-ID", b"Content-Language", b"Bad Name", b""])),
         draw(_header_value()))
        for _ in range(draw(st.integers(0, 4)))
    ]  # fmt: skip
    kind = draw(
        st.sampled_from(["text", "multipart", "rfc822", "binary"] if depth < 4 else ["text"])
    )
    charset = draw(st.sampled_from(_CHARSETS)).encode()
    cte = draw(st.sampled_from(_ENCODINGS)).encode()
    if kind == "multipart":
        boundary = draw(st.sampled_from([b"b1", b"b" + str(depth).encode(), b"", b'"q b"', b"-"]))
        subtype = draw(st.sampled_from([b"mixed", b"alternative", b"related", b"signed"]))
        ctype = b"multipart/" + subtype + b"; boundary=" + boundary
        mark = boundary.strip(b'"')
        parts = [draw(mime_entity(depth + 1)) for _ in range(draw(st.integers(0, 3)))]
        body = b"preamble\r\n"
        for part in parts:
            body += b"--" + mark + b"\r\n" + part + b"\r\n"
        if draw(st.booleans()):
            body += b"--" + mark + b"--\r\n"
        body += draw(_junk)
    elif kind == "rfc822":
        ctype = b"message/rfc822"
        body = draw(mime_entity(depth + 1))
    elif kind == "binary":
        ctype = draw(
            st.sampled_from([b"application/zip", b"application/pdf", b"image/png; name=x"])
        )
        body = draw(st.binary(max_size=200))
    else:
        ctype = draw(st.sampled_from([b"text/plain", b"text/html", b"text/xml", b"text", b"/"]))
        ctype += b"; charset=" + charset
        body = draw(st.binary(max_size=200))
    headers.append((b"Content-Type", ctype))
    headers.append((b"Content-Transfer-Encoding", cte))
    draw(st.randoms()).shuffle(headers)
    head = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    separator = draw(st.sampled_from([b"\r\n", b"\r\n", b"", b"\n"]))
    return head + separator + body


@fuzz(150)
@given(
    raw=st.one_of(mime_entity(), st.binary(max_size=2000)),
    line_ends=st.sampled_from(["crlf", "lf", "mixed"]),
)
def test_mime_analysis_never_raises_and_is_usable(raw: bytes, line_ends: str) -> None:
    if line_ends == "lf":
        raw = raw.replace(b"\r\n", b"\n")
    elif line_ends == "mixed":
        raw = raw.replace(b"\r\n", b"\n", raw.count(b"\r\n") // 2)
    meta = analyse_message(raw)
    assert meta["v"] == META_VERSION
    assert json.loads(json.dumps(meta)) == meta
    for key in ("env", "bs", "body"):
        assert meta[key].startswith("(") and meta[key].endswith(")"), meta[key][:80]
    stack = [meta["tree"]]
    while stack:  # every part's offsets are inside the message, in order
        node = stack.pop()
        h_start, b_start = node["h"]
        b_end = node["b"][1]
        assert 0 <= h_start <= b_start <= b_end <= len(raw), node
        stack.extend(node.get("c", []))
        if "m" in node:
            stack.append(node["m"])
    # what SEARCH and FETCH do with it
    assert isinstance(body_text(raw, meta), str)
    assert isinstance(header_text(raw, meta), str)
    assert section_data(raw, meta["tree"], parse_section("")) == raw
    for spec in ("1", "1.MIME", "2.1", "TEXT", "HEADER", "1.1.1.1"):
        data = section_data(raw, meta["tree"], parse_section(spec))
        assert data is None or isinstance(data, bytes)


# ---- XML: CDA and XDS metadata -------------------------------------------------------------
def _xml_mutations(draw: st.DrawFn, root: etree._Element) -> None:
    elements = [e for e in root.iter() if isinstance(e.tag, str)]
    for _ in range(draw(st.integers(1, 4))):
        target = elements[draw(st.integers(0, len(elements) - 1))]
        op = draw(st.integers(0, 8))
        parent = target.getparent()
        text = draw(st.text(max_size=30))
        text = "".join(c for c in text if c.isprintable() and c not in "\ud800\udfff")
        if op == 0 and parent is not None:
            parent.remove(target)
        elif op == 1 and parent is not None:
            parent.insert(parent.index(target), copy.deepcopy(target))
        elif op == 2 and target.attrib:
            name = draw(st.sampled_from(sorted(target.attrib)))
            target.attrib[name] = draw(
                st.sampled_from(
                    [
                        "",
                        "x",
                        "1.2.3",
                        "-1",
                        "99999999999999999999",
                        "20240230",
                        "2.16.840.1.113883.6.1",
                        text,
                    ]
                )
            )
        elif op == 3 and target.attrib:
            del target.attrib[draw(st.sampled_from(sorted(target.attrib)))]
        elif op == 4:
            target.text = text
        elif op == 5:
            etree.SubElement(target, draw(st.sampled_from(["{urn:hl7-org:v3}id", "unknown",
                                                           "{urn:x}y"]))).text = text  # fmt: skip
        elif op == 6:
            target.tag = draw(st.sampled_from(["{urn:hl7-org:v3}code", "renamed", "{urn:x}z"]))
        elif op == 7 and len(target):
            children = list(target)
            draw(st.randoms()).shuffle(children)
            target[:] = children
        else:
            name = draw(st.sampled_from(["nullFlavor", "code", "root", "extension", "value"]))
            target.set(name, text)


@st.composite
def mutated_cda(draw: st.DrawFn) -> bytes:
    source = draw(st.sampled_from(CDA_FILES)).read_bytes()
    root = etree.fromstring(source)
    _xml_mutations(draw, root)
    data = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    if draw(st.integers(0, 5)) == 0:  # then a byte-level cut or splice
        cut = draw(st.integers(0, len(data)))
        data = data[:cut] + draw(st.binary(max_size=8)) + data[cut + draw(st.integers(0, 50)) :]
    return data


@pytest.fixture(scope="module")
def xdm_archive() -> bytes:
    return build_xdm([p.read_bytes() for p in CDA_FILES])


@fuzz(100)
@given(content=mutated_cda(), kind=st.sampled_from(["cda", "auto"]))
def test_cda_validation_of_mutated_documents_never_fails_internally(
    content: bytes, kind: str
) -> None:
    assert_report(content, name="mutated.xml", kind=kind)


@fuzz(100)
@given(data=st.data())
def test_xds_metadata_validation_of_mutated_metadata_never_fails_internally(
    xdm_archive: bytes, data: st.DataObject
) -> None:
    with zipfile.ZipFile(io.BytesIO(xdm_archive)) as archive:
        root = etree.fromstring(archive.read(METADATA))
    _xml_mutations(data.draw, root)
    content = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    assert_report(content, name="METADATA.XML", kind=data.draw(st.sampled_from(["xds", "auto"])))


# ---- XDM zip -------------------------------------------------------------------------------
_ZIP_NAMES = [
    "IHE_XDM/SUBSET01/DOC0001.XML", "IHE_XDM/SUBSET01/METADATA.XML", "INDEX.HTM", "README.TXT",
    "../evil", "/abs", "C:/x", "a\\b", "IHE_XDM/SUBSET01/../../x", "IHE_XDM/", "", "dir/",
    "IHE_XDM/SUBSET02/METADATA.XML", "ihe_xdm/subset01/doc0001.xml", "é.xml",
]  # fmt: skip


@fuzz(120)
@given(data=st.data())
def test_xdm_validation_of_mutated_archives_never_fails_internally(
    xdm_archive: bytes, data: st.DataObject
) -> None:
    draw = data.draw
    with zipfile.ZipFile(io.BytesIO(xdm_archive)) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.integers(0, 5))
        names = sorted(entries)
        if op == 0 and names:
            del entries[draw(st.sampled_from(names))]
        elif op == 1:
            entries[draw(st.sampled_from(_ZIP_NAMES))] = draw(st.binary(max_size=300))
        elif op == 2 and names:
            name = draw(st.sampled_from(names))
            entries[draw(st.sampled_from(_ZIP_NAMES))] = entries.pop(name)
        elif op == 3 and METADATA in entries:
            try:
                root = etree.fromstring(entries[METADATA])
            except etree.XMLSyntaxError:
                continue  # an earlier operation already broke it: nothing left to mutate
            _xml_mutations(draw, root)
            entries[METADATA] = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
        elif op == 4 and names:
            name = draw(st.sampled_from(names))
            blob = entries[name]
            cut = draw(st.integers(0, len(blob)))
            entries[name] = blob[:cut] + draw(st.binary(max_size=10)) + blob[cut + 5 :]
        else:
            entries["IHE_XDM/SUBSET01/DOC0001.XML"] = draw(mutated_cda())
    buffer = io.BytesIO()
    method = draw(st.sampled_from([zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED]))
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, blob in entries.items():
            info = zipfile.ZipInfo(name or "x", (2020, 1, 1, 0, 0, 0))
            if draw(st.integers(0, 9)) == 0:
                info.external_attr = 0o120777 << 16  # a symbolic link
            archive.writestr(info, blob, compress_type=method)
    content = buffer.getvalue()
    if draw(st.integers(0, 4)) == 0:  # byte-level damage to the archive itself
        position = draw(st.integers(0, len(content) - 1))
        content = content[:position] + bytes([content[position] ^ 0xFF]) + content[position + 1 :]
    assert_report(content, name="IHE_XDM.ZIP", kind=draw(st.sampled_from(["xdm", "auto"])))


# ---- HL7 v2 --------------------------------------------------------------------------------
_HL7_PIECES = [
    "", "^", "~", "\\", "&", "|", "^^^", "\\X0D\\", "\\H\\", "\\E\\", "\\Zxx\\", "\\.br\\",
    "20240230", "99999999999999", "ORU^R01^ORU_R01", "2.5", "2.9", "P", "AL", "x" * 300,
    "MSH", "PID", "OBX", "\x00", "é", "\\",
]  # fmt: skip


@st.composite
def mutated_hl7(draw: st.DrawFn) -> bytes:
    text = draw(st.sampled_from(HL7_FILES)).read_bytes().decode("utf-8")
    segments = [s for s in text.replace("\r\n", "\r").replace("\n", "\r").split("\r") if s]
    for _ in range(draw(st.integers(1, 4))):
        index = draw(st.integers(0, len(segments) - 1))
        op = draw(st.integers(0, 5))
        if op == 0 and len(segments) > 1:
            del segments[index]
        elif op == 1:
            segments.insert(index, segments[index])
        elif op == 2:
            draw(st.randoms()).shuffle(segments)
        elif op == 3:  # the MSH encoding characters
            seg = segments[0]
            chars = draw(st.text(alphabet="^~\\&|#!x", min_size=0, max_size=6))
            segments[0] = seg[:3] + chars + seg[8:]
        else:
            fields = segments[index].split("|")
            position = draw(st.integers(0, len(fields) + 2))
            piece = draw(st.one_of(st.sampled_from(_HL7_PIECES), st.text(max_size=20)))
            if position < len(fields):
                fields[position] = piece
            else:
                fields.append(piece)
            segments[index] = "|".join(fields)
    separator = draw(st.sampled_from(["\r", "\r", "\n", "\r\n"]))
    framed = separator.join(segments)
    if draw(st.integers(0, 6)) == 0:
        framed = "\x0b" + framed + "\x1c\r"  # MLLP framing
    return framed.encode("utf-8", "surrogatepass")


@fuzz(150)
@given(content=mutated_hl7(), kind=st.sampled_from(["hl7v2", "auto"]))
def test_hl7v2_validation_of_mutated_messages_never_fails_internally(
    content: bytes, kind: str
) -> None:
    assert_report(content, name="message.hl7", kind=kind)


# ---- proof bundles -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pristine_bundle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, TestPKI]]:
    root = tmp_path_factory.mktemp("proof")
    pki = TestPKI.load_or_create(root / "pki", "mssante.localhost")
    bundle = proof.write_bundle(
        root / "bundle",
        kind="mss",
        predicate={"passedTests": ["MSS-SMTP-01"], "failedTests": [], "suite": "fuzz"},
        artefacts={"smtp/transcript.txt": b"220 ready\r\n", "message.eml": b"Subject: x\r\n\r\n"},
        html="<p>fuzz</p>",
        pki=pki,
        run_id="fuzz-1",
    )
    assert proof.verify_bundle(bundle, ca_file=pki.root_cert_path).ok
    yield bundle, pki


def _json_value(draw: st.DrawFn) -> object:
    return draw(
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=300),
            lambda children: (
                st.lists(children, max_size=3)
                | st.dictionaries(st.text(max_size=10), children, max_size=3)
            ),
            max_leaves=6,
        )
    )


def _mutate_statement(draw: st.DrawFn, statement: dict[str, object]) -> None:
    subjects = statement["subject"]
    assert isinstance(subjects, list)
    op = draw(st.integers(0, 6))
    if op == 0 and subjects:  # a subject's name
        subjects[draw(st.integers(0, len(subjects) - 1))]["name"] = draw(
            st.one_of(
                st.sampled_from(
                    [
                        "../../etc/passwd",
                        "/etc/passwd",
                        "a" * 300,
                        "a/" * 3000,
                        "report.json",
                        "ca",
                        ".",
                        "",
                        "x\x00y",
                        "C:/x",
                        "a\\b",
                    ]
                ),
                st.text(max_size=40),
            )
        )
    elif op == 1 and subjects:  # a digest
        subjects[draw(st.integers(0, len(subjects) - 1))]["digest"] = _json_value(draw)
    elif op == 2:
        statement["subject"] = _json_value(draw)
    elif op == 3:
        key = draw(st.sampled_from(["_type", "predicateType", "predicate", "extra"]))
        statement[key] = _json_value(draw)
    elif op == 4 and subjects:
        del subjects[draw(st.integers(0, len(subjects) - 1))]
    elif op == 5:
        subjects.append(_json_value(draw))
    else:
        statement.pop(draw(st.sampled_from(sorted(statement))))


@fuzz(120)
@given(data=st.data())
def test_mutated_proof_bundles_fail_verification_without_raising(
    pristine_bundle: tuple[Path, TestPKI], data: st.DataObject
) -> None:
    draw = data.draw
    pristine, pki = pristine_bundle
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "bundle"
        shutil.copytree(pristine, bundle, symlinks=True)
        files = sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file())
        op = draw(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 6, 6, 7, 8]))  # statement edits x3
        target = bundle / draw(st.sampled_from(files))
        if op == 0:  # flip one byte anywhere
            blob = bytearray(target.read_bytes())
            position = draw(st.integers(0, len(blob) - 1))
            blob[position] ^= draw(st.integers(1, 255))
            target.write_bytes(bytes(blob))
        elif op == 1:  # truncate or extend
            blob = target.read_bytes()
            cut = draw(st.integers(0, len(blob)))
            target.write_bytes(blob[:cut] + draw(st.binary(max_size=20)))
        elif op == 2:
            target.unlink()
        elif op == 3:  # an extra file, possibly deep
            extra = bundle / draw(
                st.sampled_from(["extra.txt", "artefacts/x", "ca/y.pem", "a/b/c"])
            )
            extra.parent.mkdir(parents=True, exist_ok=True)
            extra.write_bytes(draw(st.binary(max_size=50)))
        elif op == 4:  # a symbolic link instead of a file
            target.unlink()
            target.symlink_to(draw(st.sampled_from(["/etc/hostname", "../report.json", "nowhere"])))
        elif op == 5:  # a directory instead of a file
            target.unlink()
            target.mkdir()
        elif op == 6:  # structural edit of the statement, re-serialised canonically
            statement = json.loads((bundle / "report.json").read_bytes())
            _mutate_statement(draw, statement)
            (bundle / "report.json").write_bytes(proof.canonical_json(statement))
        elif op == 7:  # the signature replaced by random or re-used DER
            (bundle / "report.json.p7s").write_bytes(
                draw(st.one_of(st.binary(max_size=200), st.just(pki.root_cert_path.read_bytes())))
            )
        else:  # the trust anchor in the bundle replaced
            (bundle / "ca" / "root.pem").write_bytes(
                draw(st.sampled_from([b"", b"garbage", pki.foreign_root_path.read_bytes()]))
            )
        before = {p: p.read_bytes() for p in pristine.rglob("*") if p.is_file()}
        after = {
            pristine / p.relative_to(bundle): p.read_bytes()
            for p in bundle.rglob("*")
            if p.is_file() and not p.is_symlink()
        }
        assume(before != after or op in (4, 5))  # a no-op mutation proves nothing
        use_openssl = draw(st.integers(0, 9)) == 0
        trusted = draw(st.booleans())
        result = proof.verify_bundle(
            bundle, ca_file=pki.root_cert_path if trusted else None, use_openssl=use_openssl
        )
        assert not result.ok, f"mutation {op} on {target.name} was not detected"
        assert result.problems and all(isinstance(p, str) for p in result.problems)
        json.dumps(result.as_dict(), default=str)
