"""Mailbox (folder) names, LIST/LSUB pattern matching and SPECIAL-USE attributes.

Names are kept as the client sends them (modified UTF-7 is ASCII, so it round-trips
untouched); ``/`` is the hierarchy delimiter; ``INBOX`` is case-insensitive.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from simulators.core.store.mail import Folder
from simulators.mss.imap.parser import Value, text_arg
from simulators.mss.mime import imap_string

DELIMITER = "/"
SPECIAL_USE = {"Sent": "\\Sent", "Trash": "\\Trash", "Drafts": "\\Drafts", "Junk": "\\Junk"}


def decode_name(value: Value) -> str:
    name = text_arg(value, "mailbox name")
    return "INBOX" if name.upper() == "INBOX" else name


def encode_name(name: str) -> str:
    wire = name if name.isascii() else name.encode("utf-8").decode("latin-1")
    return imap_string(wire)


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = []
    for ch in pattern:
        if ch == "*":
            out.append(".*")
        elif ch == "%":
            out.append("[^/]*")
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out) + r"\Z", re.S)


def _matches(regex: re.Pattern[str], name: str) -> bool:
    if regex.match(name):
        return True
    # INBOX is case-insensitive, also as the first level of a pattern.
    return name == "INBOX" and any(regex.match(v) for v in ("inbox", "Inbox", "INBOX"))


def list_lines(
    folders: Iterable[Folder], reference: str, patterns: list[str], *, lsub: bool
) -> list[str]:
    """The ``* LIST`` / ``* LSUB`` lines for ``reference`` + each pattern."""
    command = "LSUB" if lsub else "LIST"
    all_folders = list(folders)
    names = {f.name for f in all_folders}
    subscribed = {f.name for f in all_folders if f.subscribed}
    # Parents that exist only implicitly ("A" for "A/B") are listed as \Noselect.
    implicit: set[str] = set()
    for name in names:
        parts = name.split(DELIMITER)
        for depth in range(1, len(parts)):
            parent = DELIMITER.join(parts[:depth])
            if parent not in names:
                implicit.add(parent)
    lines: list[str] = []
    seen: set[str] = set()
    for pattern in patterns:
        if pattern == "" and not lsub:
            # RFC 3501: the hierarchy delimiter and root name.
            lines.append(f'* LIST (\\Noselect) "{DELIMITER}" ""\r\n')
            continue
        full = pattern
        if reference:
            full = reference + pattern
        regex = _pattern_regex(full)
        for name in sorted(names | implicit, key=lambda n: (n != "INBOX", n)):
            if name in seen or not _matches(regex, name):
                continue
            if lsub and name not in subscribed:
                continue
            seen.add(name)
            attrs: list[str] = []
            if name in implicit:
                attrs.append("\\Noselect")
            has_children = any(n.startswith(name + DELIMITER) for n in names)
            attrs.append("\\HasChildren" if has_children else "\\HasNoChildren")
            special = SPECIAL_USE.get(name)
            if special:
                attrs.append(special)
            lines.append(f'* {command} ({" ".join(attrs)}) "{DELIMITER}" {encode_name(name)}\r\n')
    return lines
