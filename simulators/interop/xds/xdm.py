"""IHE XDM media (IHE_XDM.ZIP): generation for the MSS reference client, and validation.

Layout (IHE ITI TF-1 16, as used by MSSanté): INDEX.HTM and README.TXT at the
root, then IHE_XDM/SUBSET01/METADATA.XML and the documents its URI slots name.
"""

from __future__ import annotations

import hashlib
import html
import io
import zipfile
from datetime import UTC, datetime

from simulators import DISCLAIMER
from simulators.interop.cda.header import CdaHeader, read_cda_header
from simulators.interop.xds.ebrim import DocumentInput, MetadataOptions, build_metadata

SUBSET = "IHE_XDM/SUBSET01/"
METADATA = SUBSET + "METADATA.XML"

# ZIP timestamps are fixed so that the same input gives the same archive
_FIXED_DATE = (2020, 1, 1, 0, 0, 0)


def build_xdm(
    cda_documents: list[bytes],
    *,
    patient_id: str | None = None,
    options: MetadataOptions | None = None,
    readme: str | None = None,
) -> bytes:
    """IHE_XDM.ZIP bytes for the CDA documents (first document's INS unless given)."""
    if not cda_documents:
        raise ValueError("build_xdm needs at least one CDA document")
    options = options or MetadataOptions()
    if patient_id is not None:
        options.patient_id = patient_id
    inputs = []
    headers: list[CdaHeader] = []
    for i, content in enumerate(cda_documents, start=1):
        header = read_cda_header(content)
        headers.append(header)
        inputs.append(DocumentInput(content=content, header=header, uri=f"DOC{i:04d}.XML"))
    metadata = build_metadata(inputs, options)
    index_rows = "".join(
        f'<li><a href="{SUBSET}{d.uri}">{html.escape(h.title or d.uri)}</a></li>'
        for d, h in zip(inputs, headers, strict=True)
    )
    index = (
        '<html><head><meta charset="utf-8"><title>IHE XDM</title></head><body>'
        f"<p>{html.escape(DISCLAIMER)}</p><ul>{index_rows}</ul></body></html>"
    ).encode()
    readme_text = readme or (
        "IHE XDM media produced by segur-sim (simulated exchange).\r\n"
        f"{DISCLAIMER}\r\nCreated {datetime.now(UTC).strftime('%Y-%m-%d')}\r\n"
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:

        def put(name: str, data: bytes) -> None:
            archive.writestr(
                zipfile.ZipInfo(name, _FIXED_DATE), data, compress_type=zipfile.ZIP_DEFLATED
            )

        put("INDEX.HTM", index)
        put("README.TXT", readme_text.encode("utf-8"))
        put(METADATA, metadata)
        for doc in inputs:
            put(SUBSET + doc.uri, doc.content)
    return buffer.getvalue()


def sha1_hex(content: bytes) -> str:
    return hashlib.sha1(content).hexdigest()
