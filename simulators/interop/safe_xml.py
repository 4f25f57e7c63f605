"""One hostile-input-safe way to parse XML, shared by every validator.

Validated objects come from people under test: no DTD loading, no entity
expansion, no network, no huge trees. A DOCTYPE that declares entities is
refused outright (billion-laughs style payloads never reach the parser).
"""

from __future__ import annotations

import re

from lxml import etree

# A DOCTYPE with an internal subset or an external id: refused before parsing.
_DOCTYPE_RE = re.compile(rb"<!DOCTYPE[^>\[]*(\[|SYSTEM|PUBLIC)", re.IGNORECASE)
_ENTITY_RE = re.compile(rb"<!ENTITY", re.IGNORECASE)

MAX_XML_BYTES = 64 * 1024 * 1024


class UnsafeOrInvalidXml(ValueError):
    """The input is not well-formed, not decodable, or uses forbidden XML features."""

    def __init__(self, message: str, *, line: int | None = None, column: int | None = None):
        super().__init__(message)
        self.line = line
        self.column = column


def safe_parser(*, remove_comments: bool = False) -> etree.XMLParser:
    """The project's only XML parser configuration for untrusted input."""
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=remove_comments,
        collect_ids=False,
    )


def check_prolog(content: bytes) -> None:
    """Refuse entity declarations and external DTDs (XXE, expansion bombs)."""
    head = content[:65536]
    if _ENTITY_RE.search(head) or _ENTITY_RE.search(content):
        raise UnsafeOrInvalidXml("the document declares XML entities (<!ENTITY>), refused")
    if _DOCTYPE_RE.search(head):
        raise UnsafeOrInvalidXml("the document has a DOCTYPE with a DTD reference, refused")


def parse_xml(content: bytes) -> etree._ElementTree:
    """Parse untrusted bytes; raise UnsafeOrInvalidXml with a readable reason."""
    if len(content) > MAX_XML_BYTES:
        raise UnsafeOrInvalidXml(f"the document is larger than {MAX_XML_BYTES} bytes")
    if not content.strip():
        raise UnsafeOrInvalidXml("the document is empty")
    check_prolog(content)
    try:
        root = etree.fromstring(content, parser=safe_parser())
    except etree.XMLSyntaxError as exc:
        line, column = exc.position if exc.position else (None, None)
        msg = str(exc.msg or exc)
        if "encoding" in msg.lower() or "utf-8" in msg.lower() or "char" in msg.lower():
            msg = f"not decodable in its declared encoding (UTF-8 expected): {msg}"
        raise UnsafeOrInvalidXml(f"not well-formed XML: {msg}", line=line, column=column) from None
    except ValueError as exc:  # e.g. unicode strings with encoding declaration
        raise UnsafeOrInvalidXml(f"not parseable XML: {exc}") from None
    if root is None:
        raise UnsafeOrInvalidXml("the document has no root element")
    tree = root.getroottree()
    if tree.docinfo.internalDTD is not None or tree.docinfo.doctype:
        # no entities got here (checked above), but a DTD is still not CDA/ebXML
        raise UnsafeOrInvalidXml("the document carries a DOCTYPE, refused")
    return tree


def local_name(element: etree._Element) -> str:
    return etree.QName(element).localname if isinstance(element.tag, str) else ""


def readable_path(element: etree._Element) -> str:
    """``/ClinicalDocument/recordTarget[1]/patientRole[1]/id[2]``: local names with
    positions among same-named siblings (what Gazelle shows, minus prefixes)."""
    steps: list[str] = []
    el: etree._Element | None = element
    while el is not None and isinstance(el.tag, str):
        parent = el.getparent()
        name = local_name(el)
        if parent is None:
            steps.append(name)
        else:
            same = [c for c in parent if c.tag == el.tag]
            steps.append(f"{name}[{same.index(el) + 1}]")
        el = parent
    return "/" + "/".join(reversed(steps))
