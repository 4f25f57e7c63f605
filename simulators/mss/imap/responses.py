"""Server-side IMAP formatting: capabilities, flags, dates, strings.

Responses are built as latin-1 ``str`` (one character per octet) and encoded once per
command: that keeps message bytes exact and makes one ``write()`` per response cheap.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from simulators import __version__
from simulators.mss.mime import imap_string

__all__ = [
    "SYSTEM_FLAGS",
    "capabilities",
    "format_flags",
    "imap_string",
    "internal_date",
    "normalise_flag",
]

SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
_SYSTEM_BY_UPPER = {f.upper(): f for f in (*SYSTEM_FLAGS, "\\Recent")}

# What every state advertises; TLS and auth state add or remove the rest.
_BASE = "IMAP4rev1 LITERAL+ ID ENABLE IDLE NAMESPACE UNSELECT UIDPLUS MOVE SPECIAL-USE CHILDREN"

SERVER_ID = {
    "name": "segur-sim",
    "vendor": "segur-sim (SIMULATION - not an ANS or operator server)",
    "version": __version__,
    "support-url": "https://github.com/segur-sim",
    "remarks": "MSSante test simulator",
}


def capabilities(*, tls: bool, authenticated: bool, starttls_available: bool) -> str:
    if authenticated:
        return _BASE
    if not tls:
        # RFC 3501 6.2.1 / 7.2.1: before TLS, no mechanism and LOGINDISABLED.
        return _BASE + (" STARTTLS" if starttls_available else "") + " LOGINDISABLED"
    return _BASE + " SASL-IR AUTH=XOAUTH2 AUTH=PLAIN"


def normalise_flag(flag: str) -> str:
    """System flags are case-insensitive (``\\seen`` is ``\\Seen``); keywords keep case."""
    if flag.startswith("\\"):
        return _SYSTEM_BY_UPPER.get(flag.upper(), flag)
    return flag


def format_flags(flags: Iterable[str]) -> str:
    return "(" + " ".join(sorted(flags)) + ")"


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def internal_date(stamp: float) -> str:
    """RFC 3501 date-time, in UTC: ``"03-Jun-2024 08:00:00 +0000"``."""
    t = time.gmtime(stamp)
    return (
        f'"{t.tm_mday:2d}-{_MONTHS[t.tm_mon - 1]}-{t.tm_year:04d} '
        f'{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"'
    )


def parse_date(text: str) -> tuple[int, int, int]:
    """SEARCH date ``1-Feb-1994`` -> (1994, 2, 1). Raises ValueError."""
    day, month, year = text.strip('"').split("-")
    return int(year), _MONTHS.index(month.capitalize()) + 1, int(day)


def parse_date_time(text: str) -> float:
    """APPEND date-time ``"17-Jul-1996 02:44:25 -0700"`` -> epoch. Raises ValueError."""
    date, clock, zone = text.strip().split(" ")
    year, month, day = parse_date(date.strip())
    hour, minute, second = (int(x) for x in clock.split(":"))
    if len(zone) != 5 or zone[0] not in "+-":
        raise ValueError(zone)
    offset = (int(zone[1:3]) * 3600 + int(zone[3:5]) * 60) * (1 if zone[0] == "+" else -1)
    import calendar

    return float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)) - offset)
