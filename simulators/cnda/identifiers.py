"""Identifiers the CNDA mock issues. Every one is visibly fake.

They all start with ``SIMU-`` and contain hyphens, so none can be mistaken for a
real authorization number (the TLSi/INSi ``IDAM`` is 12 characters ``[A-Z0-9]``).
"""

from __future__ import annotations

import re
import secrets

# No 0/O or 1/I: the numbers get read aloud and typed from screenshots.
_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
PREFIXES = {
    "editor": "SIMU-NIE",
    "software": "SIMU-NIL",
    "request": "SIMU-DOS",
    "provisional": "SIMU-PROV",
    "production": "SIMU-PROD",
}
SIMULATED_ID = re.compile(r"^SIMU-(NIE|NIL|DOS|PROV|PROD)-[2-9A-HJ-NP-Z]{6}$")
REAL_AUTHORIZATION_SHAPE = re.compile(r"^[A-Z0-9]{12}$")


def new_id(kind: str) -> str:
    suffix = "".join(secrets.choice(_ALPHABET) for _ in range(6))
    identifier = f"{PREFIXES[kind]}-{suffix}"
    assert not REAL_AUTHORIZATION_SHAPE.match(identifier)  # by construction; kept as a guard
    return identifier
