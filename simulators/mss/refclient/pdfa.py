"""A small PDF that declares PDF/A-1b: the "same document as PDF/A-1" twin (CONF.23).

Hand-written PDF 1.4 (PDF/A-1 is based on it): one A4 page of Helvetica text, the
binary comment after the header, an uncompressed XMP packet with ``pdfaid:part`` 1 and
``pdfaid:conformance`` B that agrees with the Info dictionary, a trailer ``/ID`` and
exact xref offsets. Known gaps for a full PDF/A-1b validator (veraPDF): the font is
not embedded and there is no OutputIntent ICC profile; what MSSanté receivers and the
simulator check is the PDF structure and the PDF/A identification.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from xml.sax.saxutils import escape

PAGE_WIDTH, PAGE_HEIGHT = 595, 842  # A4 in points
_MARGIN, _LEADING, _FONT_SIZE, _WRAP = 56, 15, 11, 90


def _pdf_string(text: str) -> bytes:
    """A literal string in WinAnsiEncoding (Helvetica's), with PDF escapes."""
    raw = text.encode("cp1252", "replace")
    return b"(" + raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)") + b")"


def _wrap(lines: list[str]) -> list[str]:
    out: list[str] = []
    for line in lines:
        while len(line) > _WRAP:
            cut = line.rfind(" ", 0, _WRAP)
            cut = cut if cut > 0 else _WRAP
            out.append(line[:cut])
            line = line[cut:].lstrip()
        out.append(line)
    return out


def _xmp(title: str, created: dt.datetime) -> bytes:
    stamp = created.isoformat(timespec="seconds")
    return f"""<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about="" xmlns:pdfaid="http://www.aiim.org/pdfa/ns/id/">
   <pdfaid:part>1</pdfaid:part>
   <pdfaid:conformance>B</pdfaid:conformance>
  </rdf:Description>
  <rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/">
   <dc:format>application/pdf</dc:format>
   <dc:title><rdf:Alt><rdf:li xml:lang="x-default">{escape(title)}</rdf:li></rdf:Alt></dc:title>
  </rdf:Description>
  <rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/">
   <xmp:CreateDate>{stamp}</xmp:CreateDate>
   <xmp:ModifyDate>{stamp}</xmp:ModifyDate>
   <xmp:CreatorTool>segur-sim refclient (SIMULATION)</xmp:CreatorTool>
  </rdf:Description>
  <rdf:Description rdf:about="" xmlns:pdf="http://ns.adobe.com/pdf/1.3/">
   <pdf:Producer>segur-sim refclient (SIMULATION)</pdf:Producer>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>""".encode()


def _pdf_date(when: dt.datetime) -> bytes:
    offset = when.strftime("%z") or "+0000"
    return f"D:{when.strftime('%Y%m%d%H%M%S')}{offset[:3]}'{offset[3:]}'".encode()


def build_pdfa(title: str, lines: list[str], *, created: dt.datetime | None = None) -> bytes:
    created = (created or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    text = [b"BT", b"/F1 14 Tf", f"{_MARGIN} {PAGE_HEIGHT - _MARGIN} Td".encode()]
    text += [_pdf_string(title) + b" Tj", f"/F1 {_FONT_SIZE} Tf".encode(), b"0 -24 Td"]
    max_lines = (PAGE_HEIGHT - 2 * _MARGIN - 24) // _LEADING
    for line in _wrap(lines)[:max_lines]:
        text += [_pdf_string(line) + b" Tj", f"0 -{_LEADING} Td".encode()]
    text.append(b"ET")
    content = b"\n".join(text)
    xmp = _xmp(title, created)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R /Metadata 5 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %d %d] "
        b"/Resources << /Font << /F1 4 0 R >> >> /Contents 6 0 R >>" % (PAGE_WIDTH, PAGE_HEIGHT),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Type /Metadata /Subtype /XML /Length %d >>\nstream\n" % len(xmp)
        + xmp
        + b"\nendstream",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Title "
        + _pdf_string(title)
        + b" /Producer (segur-sim refclient \\(SIMULATION\\)) /CreationDate ("
        + _pdf_date(created)
        + b") /ModDate ("
        + _pdf_date(created)
        + b") >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref_at = len(out)
    out += b"xref\n0 %d\n" % (len(objects) + 1)
    out += b"0000000000 65535 f \n"
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    file_id = hashlib.md5(bytes(out), usedforsecurity=False).hexdigest().encode()
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 7 0 R /ID [<%s> <%s>] >>\n" % (
        len(objects) + 1,
        file_id,
        file_id,
    )
    out += b"startxref\n%d\n%%%%EOF\n" % xref_at
    return bytes(out)
