"""Shared helpers of the message checks: reading a submitted mail without trusting it.

Everything here is hostile-input safe: a broken MIME tree, bad base64, a zip bomb or
malformed XML becomes an error text that the checks turn into a FAIL, never an
exception.

- :func:`view` reads one :class:`ObservedMessage`: its top-level headers (parsed from
  the raw bytes, all occurrences kept), its MIME leaves and a readable structure.
- :func:`xdm_archives` finds the ``IHE_XDM.ZIP`` attachments (file name, case
  insensitive) and opens them with :func:`simulators.interop.safe_zip.read_zip` and
  its default limits; the CDA documents are the ``.XML`` files under ``IHE_XDM/``
  other than ``METADATA.XML`` that hold a ``ClinicalDocument``.
- :func:`pdfa_part` reads the PDF/A identification of a PDF: the ``pdfaid:part``
  value of its XMP packet. PDF/A-1 requires that packet to be unfiltered, so it is
  searched in the raw bytes. Full PDF/A conformance is *not* checked here.
- :func:`ins_is_qualified` says whether a CDA header carries a qualified INS: an INS
  OID (INS-NIR ``.4.8``, INS-NIA ``.4.9``, test ``.4.10``, demonstration ``.4.11``)
  with the identity traits birth name, first birth given name, birth date and sex
  (the requirements' definition; ``CdaHeader.ins_qualified`` is stricter: it also
  wants the birthplace and leaves out the demonstration OID).
- :class:`Finding` and :func:`conclude` turn per-mail findings into one verdict.
"""

from __future__ import annotations

import base64
import binascii
import functools
import html
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage, Message
from typing import ParamSpec

from simulators.core.verdict import Evidence, Verdict
from simulators.interop.cda.header import CdaHeader, read_cda_header
from simulators.interop.cda.valuesets import INS_OIDS
from simulators.interop.safe_xml import UnsafeOrInvalidXml
from simulators.interop.safe_zip import UnsafeZip, read_zip
from simulators.interop.xds.xdm import METADATA
from simulators.mss.conformance.observed import JudgeContext, ObservedMessage
from simulators.mss.mime import decode_words, parse_addresses

MAX_DEPTH = 24  # deeper MIME nesting is refused (hostile input)
XDM_NAME = "IHE_XDM.ZIP"
PDFA_NS = b"http://www.aiim.org/pdfa/ns/id/"
PDFA_NOT_CHECKED = "full PDF/A conformance is not checked here"
TEXT_CHARSETS = ("utf-8", "utf8", "us-ascii")
PATIENT_DOMAIN = "patient.mssante.fr"

_MSG_ID = re.compile(r"<[^<>\s]+>")


# ---- small text helpers ------------------------------------------------------------------
def fold(text: str) -> str:
    """For tolerant comparisons: no accents, casefolded, ``_`` as space, spaces collapsed."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(plain.replace("_", " ").casefold().split())


def shown(value: str | None, limit: int = 120) -> str:
    """A header value as it can be printed in a verdict (decoded, one line, bounded)."""
    if value is None:
        return "(absent)"
    try:
        text = decode_words(value)
    except Exception:
        text = value
    text = " ".join(text.split())
    printable = "".join(c if c.isprintable() else "?" for c in text)
    return printable if len(printable) <= limit else printable[: limit - 1] + "…"


def join_limited(items: Iterable[str], limit: int = 6, sep: str = "; ") -> str:
    """Distinct items joined, the first ``limit`` of them and a count of the rest."""
    unique = list(dict.fromkeys(i for i in items if i))
    if len(unique) <= limit:
        return sep.join(unique)
    return sep.join(unique[:limit]) + f"{sep}… and {len(unique) - limit} more"


def msg_ids(value: str | None) -> list[str]:
    """The ``<id>`` tokens of a Message-ID / In-Reply-To / References value."""
    return _MSG_ID.findall(value or "")


def normalise_msg_id(value: str) -> str:
    """``abc@x`` or `` <abc@x> `` -> ``<abc@x>``."""
    value = value.strip()
    found = msg_ids(value)
    if found:
        return found[0]
    return f"<{value.strip('<>')}>"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


# ---- raw headers -------------------------------------------------------------------------
def _header_block(raw: bytes) -> bytes:
    if raw.startswith((b"\r\n", b"\n")):
        return b""
    match = re.search(rb"\r?\n\r?\n", raw)
    return raw[: match.start()] if match else raw


def parse_headers(raw: bytes) -> list[tuple[str, str]]:
    """Top-level header fields in order (name lowercased, value unfolded, latin-1 text)."""
    out: list[tuple[str, str]] = []
    for line in _header_block(raw).decode("latin-1").split("\n"):
        line = line.rstrip("\r")
        if line[:1] in (" ", "\t"):
            if out:
                name, value = out[-1]
                out[-1] = (name, value + line)
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip() or " " in name:
            continue
        out.append((name.lower(), value))
    return [(n, v.strip()) for n, v in out]


def addresses(value: str | None) -> list[tuple[str, str]]:
    """(display name, addr-spec) pairs of an address-list header (tolerant)."""
    if not value:
        return []
    out = []
    try:
        parsed = parse_addresses(value)
    except Exception:
        return []
    for name, _adl, local, host in parsed:
        if local is None and host is None:
            continue  # group markers
        if host is None:
            continue
        addr = f"{local}@{host}" if host != "MISSING_DOMAIN" else (local or "")
        try:
            label = decode_words(name) if name else ""
        except Exception:
            label = name or ""
        out.append((label.strip(), addr.strip()))
    return out


# ---- the MIME tree -----------------------------------------------------------------------
@dataclass
class Leaf:
    """One non-multipart MIME part."""

    path: str
    content_type: str
    filename: str | None
    disposition: str | None
    charset: str | None  # the declared charset, lowercased; None when not declared
    cte: str
    part: Message = field(repr=False)

    @property
    def maintype(self) -> str:
        return self.content_type.split("/", 1)[0]

    @property
    def is_attachment(self) -> bool:
        return self.disposition == "attachment" or bool(self.filename)

    @property
    def name(self) -> str:
        """How a verdict names this part."""
        return self.filename or f"part {self.path} ({self.content_type})"

    @property
    def basename(self) -> str:
        return re.split(r"[/\\]", self.filename or "")[-1]

    def payload(self) -> tuple[bytes | None, str | None]:
        """The decoded content, or an error text. Base64 is decoded strictly."""
        try:
            raw = self.part.get_payload(decode=False)
            if isinstance(raw, list):
                return None, "is a container, not content"
            if self.cte == "base64":
                compact = re.sub(r"\s+", "", raw if isinstance(raw, str) else "")
                try:
                    return base64.b64decode(compact.encode("ascii"), validate=True), None
                except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
                    return None, f"invalid base64 content ({exc})"
            data = self.part.get_payload(decode=True)
            if not isinstance(data, bytes):
                return None, "no readable content"
            return data, None
        except Exception as exc:
            return None, f"unreadable content ({type(exc).__name__}: {exc})"

    def text(self) -> str:
        """The content as text (declared charset, else UTF-8; bad bytes replaced)."""
        data, _err = self.payload()
        if data is None:
            return ""
        try:
            return data.decode(self.charset or "utf-8", "replace")
        except LookupError:
            return data.decode("utf-8", "replace")


def is_attachment_part(part: Message) -> bool:
    """An attachment: ``Content-Disposition: attachment`` or a file name."""
    try:
        return part.get_content_disposition() == "attachment" or bool(part.get_filename())
    except Exception:
        return False


def children(part: Message) -> list[Message]:
    """The sub-parts of a multipart (none for a leaf or a multipart without boundary)."""
    if part.get_content_maintype() != "multipart":
        return []
    payload = part.get_payload()
    return [p for p in payload if isinstance(p, Message)] if isinstance(payload, list) else []


def _leaf(part: Message, path: str) -> Leaf:
    try:
        filename = part.get_filename()
    except Exception:
        filename = None
    try:
        charset = part.get_content_charset()
    except Exception:
        charset = "(unreadable)"
    try:
        disposition = part.get_content_disposition()
    except Exception:
        disposition = None
    cte = str(part.get("Content-Transfer-Encoding", "7bit") or "7bit").strip().lower()
    return Leaf(
        path=path,
        content_type=part.get_content_type(),
        filename=str(filename) if filename else None,
        disposition=disposition,
        charset=charset,
        cte=cte,
        part=part,
    )


def _walk(part: Message, path: str, depth: int, out: list[Leaf]) -> None:
    if depth > MAX_DEPTH:
        raise ValueError(f"MIME nesting deeper than {MAX_DEPTH} levels")
    if part.get_content_maintype() == "multipart":
        for i, child in enumerate(children(part), start=1):
            _walk(child, f"{path}.{i}" if path else str(i), depth + 1, out)
        return
    out.append(_leaf(part, path or "1"))


def describe(part: Message, depth: int = 0) -> str:
    """``multipart/mixed(multipart/alternative(text/plain, text/html), application/zip)``."""
    if depth > MAX_DEPTH:
        return "…"
    ctype = part.get_content_type()
    if part.get_content_maintype() == "multipart":
        return f"{ctype}(" + ", ".join(describe(c, depth + 1) for c in children(part)) + ")"
    return ctype


@dataclass
class MailView:
    """One submitted mail, read once for the checks."""

    obs: ObservedMessage
    label: str
    headers: list[tuple[str, str]]
    root: EmailMessage | None
    leaves: list[Leaf]
    structure: str
    mime_error: str | None = None

    def values(self, name: str) -> list[str]:
        key = name.lower()
        return [v for n, v in self.headers if n == key]

    def value(self, name: str) -> str | None:
        found = self.values(name)
        return found[0] if found else None

    @property
    def ref(self) -> str:
        return str(self.obs.submission_id)

    @property
    def content_type(self) -> str:
        try:
            return self.root.get_content_type() if self.root is not None else "text/plain"
        except Exception:
            return "text/plain"

    def body_texts(self) -> list[Leaf]:
        """The text parts that make the body (text/*, not attachments)."""
        return [leaf for leaf in self.leaves if leaf.maintype == "text" and not leaf.is_attachment]

    def attachments(self) -> list[Leaf]:
        return [leaf for leaf in self.leaves if leaf.is_attachment or leaf.maintype != "text"]

    def xdm_leaves(self) -> list[Leaf]:
        return [leaf for leaf in self.leaves if leaf.basename.upper() == XDM_NAME]

    def pdf_leaves(self) -> list[Leaf]:
        return [
            leaf
            for leaf in self.leaves
            if leaf.content_type == "application/pdf"
            or (leaf.filename or "").lower().endswith(".pdf")
        ]

    def sender(self) -> tuple[str | None, str | None]:
        """(display label, address) of the From header; (None, None) without From."""
        found = addresses(self.value("From"))
        if not found:
            return None, None
        return found[0]

    def recipients(self) -> list[str]:
        """Envelope recipients, then To/Cc addresses (lowercased, distinct)."""
        out = [r.strip().strip("<>") for r in self.obs.rcpt_to]
        for name in ("To", "Cc"):
            for value in self.values(name):
                out.extend(addr for _label, addr in addresses(value))
        return list(dict.fromkeys(a.lower() for a in out if a))


def safe_label(obs: ObservedMessage) -> str:
    try:
        return obs.label
    except Exception:
        return f"mail #{obs.submission_id}"


def view(obs: ObservedMessage) -> MailView:
    """Read a mail; a broken one gives a view with ``mime_error`` set, never an exception."""
    label = safe_label(obs)
    try:
        headers = parse_headers(obs.raw)
    except Exception:
        headers = []
    mid = next((v for n, v in headers if n == "message-id"), None)
    if mid and label.startswith("mail #"):
        label = f"mail {shown(mid)}"
    try:
        root = obs.message
        leaves: list[Leaf] = []
        _walk(root, "", 0, leaves)
        return MailView(obs, label, headers, root, leaves, describe(root))
    except Exception as exc:
        return MailView(
            obs, label, headers, None, [], "(unreadable)", f"{type(exc).__name__}: {exc}"
        )


# ---- XDM archives ------------------------------------------------------------------------
@dataclass
class CdaDocument:
    name: str  # path inside the archive
    header: CdaHeader | None
    error: str | None = None

    @property
    def basename(self) -> str:
        return self.name.rsplit("/", 1)[-1]


@dataclass
class XdmArchive:
    leaf: Leaf
    content: bytes | None = None
    entries: dict[str, bytes] | None = None
    error: str | None = None  # unreadable or unsafe archive
    cda: list[CdaDocument] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.leaf.filename or XDM_NAME

    @property
    def metadata(self) -> bytes | None:
        if not self.entries:
            return None
        for name, data in self.entries.items():
            if name.upper() == METADATA:
                return data
        return None

    @property
    def cda_errors(self) -> list[str]:
        return [f"{d.name}: {d.error}" for d in self.cda if d.error]


def open_xdm(leaf: Leaf) -> XdmArchive:
    """Decode and open one IHE_XDM.ZIP attachment safely, and read its CDA headers."""
    archive = XdmArchive(leaf)
    data, err = leaf.payload()
    if data is None:
        archive.error = err or "no content"
        return archive
    archive.content = data
    try:
        archive.entries = read_zip(data)
    except UnsafeZip as exc:
        archive.error = str(exc)
        return archive
    except Exception as exc:  # defensive: read_zip should only raise UnsafeZip
        archive.error = f"unreadable archive ({type(exc).__name__}: {exc})"
        return archive
    for name in sorted(archive.entries):
        upper = name.upper()
        if not upper.startswith("IHE_XDM/") or not upper.endswith(".XML"):
            continue
        if upper.rsplit("/", 1)[-1] == "METADATA.XML":
            continue
        try:
            archive.cda.append(CdaDocument(name, read_cda_header(archive.entries[name])))
        except UnsafeOrInvalidXml as exc:
            archive.cda.append(CdaDocument(name, None, f"unreadable XML ({exc})"))
        except ValueError:
            continue  # well-formed XML that is not a CDA: not a document of ours
        except Exception as exc:
            archive.cda.append(CdaDocument(name, None, f"{type(exc).__name__}: {exc}"))
    return archive


def xdm_archives(mail: MailView) -> list[XdmArchive]:
    return [open_xdm(leaf) for leaf in mail.xdm_leaves()]


def cda_headers(archives: Sequence[XdmArchive]) -> list[tuple[CdaDocument, CdaHeader]]:
    return [(d, d.header) for a in archives for d in a.cda if d.header is not None]


def archive_problem(archives: Sequence[XdmArchive]) -> str | None:
    """Why the CDA documents of these archives cannot be read, or None."""
    problems = [f"{a.name}: {a.error}" for a in archives if a.error]
    problems += [e for a in archives for e in a.cda_errors]
    return join_limited(problems) if problems else None


# ---- INS ---------------------------------------------------------------------------------
def ins_is_qualified(header: CdaHeader) -> bool:
    """An INS OID with the identity traits (see the module docstring)."""
    return bool(
        header.ins_value
        and header.ins_oid in INS_OIDS
        and header.birth_name
        and header.birth_first_name
        and header.birth_date
        and header.gender
    )


def describe_ins(header: CdaHeader) -> str:
    if not header.ins_value:
        return "no INS"
    kind = INS_OIDS.get(header.ins_oid or "", header.ins_oid or "?")
    traits = [
        name
        for name, value in (
            ("birth name", header.birth_name),
            ("first birth given name", header.birth_first_name),
            ("birth date", header.birth_date),
            ("sex", header.gender),
        )
        if not value
    ]
    state = "qualified" if ins_is_qualified(header) else "not qualified"
    missing = f", missing {', '.join(traits)}" if traits else ""
    return f"INS {header.ins_value} ({kind}, {state}{missing})"


# ---- PDF ---------------------------------------------------------------------------------
def is_pdf(data: bytes) -> bool:
    return b"%PDF-" in data[:1024]


def pdfa_part(data: bytes) -> str | None:
    """The ``pdfaid:part`` declared by the PDF's XMP packet (raw, unfiltered), or None."""
    prefixes = {b"pdfaid"}
    for match in re.finditer(
        rb"xmlns:([A-Za-z_][\w.-]*)\s*=\s*[\"']" + re.escape(PDFA_NS).rstrip(b"/") + rb"/?[\"']",
        data,
    ):
        prefixes.add(match.group(1))
    for prefix in sorted(prefixes):
        p = re.escape(prefix)
        found = re.search(rb"\b" + p + rb":part\s*=\s*[\"']\s*(\d+)\s*[\"']", data) or re.search(
            rb"<" + p + rb":part>\s*(\d+)\s*</" + p + rb":part>", data
        )
        if found:
            return found.group(1).decode("ascii")
    return None


def pdf_problem(leaf: Leaf) -> str | None:
    """Why this PDF attachment is not an identified PDF/A-1, or None."""
    data, err = leaf.payload()
    if data is None:
        return f"{leaf.name}: {err}"
    if not is_pdf(data):
        return f"{leaf.name} is not a PDF (no %PDF- header)"
    part = pdfa_part(data)
    if part is None:
        return f"{leaf.name} declares no PDF/A identification (no pdfaid:part in its XMP packet)"
    if part != "1":
        return f"{leaf.name} declares PDF/A-{part}, not PDF/A-1"
    return None


# ---- text --------------------------------------------------------------------------------
def charset_problem(leaf: Leaf) -> str | None:
    """Why this body text part is not declared and encoded as UTF-8 (or US-ASCII)."""
    if leaf.charset is None:
        return f"{leaf.name} declares no charset"
    if leaf.charset not in TEXT_CHARSETS:
        return f"{leaf.name} declares charset={leaf.charset}, not UTF-8"
    data, err = leaf.payload()
    if data is None:
        return f"{leaf.name}: {err}"
    codec = "ascii" if leaf.charset == "us-ascii" else "utf-8"
    try:
        data.decode(codec)
    except UnicodeDecodeError as exc:
        return (
            f"{leaf.name} declares charset={leaf.charset} but is not valid {codec} ({exc.reason})"
        )
    return None


def html_to_text(markup: str) -> str:
    markup = re.sub(r"(?is)<(script|style)\b.*?</\1\s*>", " ", markup)
    return html.unescape(re.sub(r"<[^>]*>", " ", markup))


def body_text(mail: MailView) -> str:
    """The readable text of the body: text/plain parts, then text/html ones as text."""
    out = []
    for leaf in mail.body_texts():
        text = leaf.text()
        out.append(html_to_text(text) if leaf.content_type == "text/html" else text)
    return "\n".join(out)


# ---- verdicts ----------------------------------------------------------------------------
@dataclass
class Finding:
    """What one check found in one mail."""

    mail: MailView
    ok: bool
    message: str  # says what is right or wrong, naming the mail
    observed: str = ""


def conclude(
    findings: Sequence[Finding],
    *,
    requirements: tuple[str, ...],
    expected: str,
    passed: str,
) -> Verdict:
    """Per-mail findings into one verdict: FAIL when any finding failed."""
    failed = [f for f in findings if not f.ok]
    by_mail: dict[int, tuple[MailView, list[Finding]]] = {}
    for f in findings:
        by_mail.setdefault(f.mail.obs.submission_id, (f.mail, []))[1].append(f)
    evidence = []
    for mail, items in by_mail.values():
        bad = [f.message for f in items if not f.ok]
        detail = join_limited(bad) if bad else "conforms: " + join_limited(f.message for f in items)
        evidence.append(Evidence("submission", mail.ref, detail))
    if failed:
        return Verdict.failed(
            join_limited(f.message for f in failed),
            expected=expected,
            observed=join_limited(f.observed for f in failed),
            evidence=evidence,
            requirements=requirements,
        )
    return Verdict.passed(
        f"{passed} ({plural(len(by_mail), 'mail')} checked)",
        expected=expected,
        observed=join_limited(f.observed for f in findings),
        evidence=evidence,
        requirements=requirements,
    )


def none_seen(
    what: str,
    messages: Sequence[ObservedMessage],
    ctx: JudgeContext,
    *,
    requirements: tuple[str, ...],
    expected: str,
    why_not: str = "",
) -> Verdict:
    """FAIL: the mail the step waited for never came (or none of those seen qualifies)."""
    if messages:
        observed = f"{plural(len(messages), 'mail')} seen, none {why_not or 'relevant'}"
        evidence = [
            Evidence("submission", str(m.submission_id), f"seen, but not {what}")
            for m in messages[:20]
        ]
    else:
        observed = f"no mail submitted by {ctx.mailbox.address} in the observation window"
        evidence = []
    return Verdict.failed(
        f"expected {what} from {ctx.mailbox.address}; none was seen",
        expected=expected,
        observed=observed,
        evidence=evidence,
        requirements=requirements,
    )


def judge_each(
    mails: Sequence[MailView],
    check: Callable[[MailView], list[Finding]],
    *,
    needs_mime: bool = True,
) -> list[Finding]:
    """Run a per-mail check; a mail that breaks the analysis becomes a failed finding.

    A check of top-level headers only (``needs_mime=False``) still judges a mail whose
    MIME body cannot be read: its headers come from the raw bytes."""
    out: list[Finding] = []
    for mail in mails:
        if mail.mime_error and needs_mime:
            out.append(
                Finding(
                    mail,
                    False,
                    f"{mail.label} cannot be read as MIME ({mail.mime_error})",
                    f"unreadable MIME in {mail.label}",
                )
            )
            continue
        try:
            out.extend(check(mail))
        except Exception as exc:  # hostile input the helpers did not foresee
            out.append(
                Finding(
                    mail,
                    False,
                    f"{mail.label} could not be analysed ({type(exc).__name__}: {exc})",
                    f"unanalysable {mail.label}",
                )
            )
    return out


P = ParamSpec("P")


def guarded(
    requirements: tuple[str, ...],
) -> Callable[[Callable[P, Verdict]], Callable[P, Verdict]]:
    """A check never raises: an unexpected exception is an ERROR verdict (a simulator bug)."""

    def wrap(fn: Callable[P, Verdict]) -> Callable[P, Verdict]:
        @functools.wraps(fn)
        def inner(*args: P.args, **kwargs: P.kwargs) -> Verdict:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                return Verdict.error(
                    f"{fn.__name__} could not judge: {type(exc).__name__}: {exc}",
                    requirements=requirements,
                )

        return inner

    return wrap
