"""A small ER7 reader that keeps positions (segment index, line) and every segment,
including PRT, which hl7apy drops before v2.7."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_MESSAGE_BYTES = 32 * 1024 * 1024


class Er7Error(ValueError):
    pass


@dataclass
class Segment:
    name: str
    fields: list[str]  # fields[0] is the segment name; for MSH fields[1] is the separator
    line: int
    index: int  # position among all segments, from 1
    occurrence: int  # position among segments with the same name, from 1

    def field(self, n: int) -> str:
        """Field n as numbered by HL7 (MSH-1 is the field separator)."""
        return self.fields[n] if n < len(self.fields) else ""

    def label(self, n: int | None = None) -> str:
        base = f"{self.name}[{self.occurrence}]" if self.occurrence > 1 else self.name
        return f"{base}-{n}" if n is not None else base


@dataclass
class Message:
    segments: list[Segment] = field(default_factory=list)
    component_sep: str = "^"
    repetition_sep: str = "~"
    escape: str = "\\"
    subcomponent_sep: str = "&"
    text: str = ""

    def all(self, name: str) -> list[Segment]:
        return [s for s in self.segments if s.name == name]

    def first(self, name: str) -> Segment | None:
        found = self.all(name)
        return found[0] if found else None

    def components(self, value: str) -> list[str]:
        return value.split(self.component_sep)

    def repetitions(self, value: str) -> list[str]:
        return value.split(self.repetition_sep) if value else []


def decode(content: bytes) -> str:
    if len(content) > MAX_MESSAGE_BYTES:
        raise Er7Error(f"message larger than {MAX_MESSAGE_BYTES} bytes")
    body = content.strip(b"\x0b\x1c\r\n \t")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        # MSH-18 may declare 8859/1; anything else is refused with a clear reason
        head = body[:500]
        if b"8859" in head:
            return body.decode("latin-1")
        raise Er7Error(f"not UTF-8 text (byte {exc.start}); MSH-18 declares no 8859/1") from None


def parse_er7(content: bytes) -> Message:
    text = decode(content)
    if not text.startswith("MSH") or len(text) < 8:
        raise Er7Error("an HL7 v2 message SHALL start with an MSH segment")
    field_sep = text[3]
    encoding = text[4:8]
    msg = Message(text=text)
    if len(encoding) == 4 and field_sep not in encoding:
        msg.component_sep = encoding[0]
        msg.repetition_sep = encoding[1]
        msg.escape = encoding[2]
        msg.subcomponent_sep = encoding[3]
    counts: dict[str, int] = {}
    line = 1
    for raw in re.split(r"(\r\n|\r|\n)", text):
        if raw in ("\r\n", "\r", "\n"):
            line += 1
            continue
        if not raw.strip():
            continue
        name = raw[:3]
        parts = raw.split(field_sep)
        if name == "MSH":
            parts = ["MSH", field_sep, *parts[1:]]
        counts[name] = counts.get(name, 0) + 1
        msg.segments.append(Segment(name, parts, line, len(msg.segments) + 1, counts[name]))
    return msg
