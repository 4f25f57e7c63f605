"""A local Pro Santé Connect (PSC) token service.

It issues RS256 JWT access tokens (short lifetime, about 5 minutes like PSC) and
opaque refresh tokens for the test identity bound to a PER/ORG mailbox, revokes
refresh tokens, publishes its JWKS, and validates the bearer tokens the mail
servers receive over XOAUTH2 (signature, issuer, audience, expiry, mailbox).

Access tokens are stateless JWTs, and the PSC subject derives from the address, so a
deleted mailbox created again under the same address has the same subject. Each access
token therefore names the mailbox it was issued for (the ``segur_sim_mailbox`` claim:
a digest of the mailbox row's id, address and creation time, see
:func:`mailbox_binding`), and validation also refuses a token issued (``iat``) before
the mailbox was created. A token issued before ``bal delete`` is refused after the
address is created again, even within its lifetime.

Refresh tokens are stored as sha256 hashes: the store never holds a usable token.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from simulators.core.pki import load_key, new_key
from simulators.core.store.database import Database, Schema, register_schema
from simulators.core.store.mail import Mailbox, MailboxType

SCHEMA = Schema(
    "psc",
    (
        """
        CREATE TABLE psc_identities (
            mailbox_id INTEGER PRIMARY KEY REFERENCES mailboxes(id) ON DELETE CASCADE,
            subject TEXT NOT NULL
        );
        CREATE TABLE psc_refresh_tokens (
            token_hash TEXT PRIMARY KEY,
            session_id TEXT NOT NULL UNIQUE,
            mailbox_id INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
            subject TEXT NOT NULL,
            issued_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            revoked_at REAL
        )
        """,
    ),
)
register_schema(SCHEMA)

DEFAULT_AUDIENCE = "mssante-simulation"
SCOPE = "openid scope_all"
MAILBOX_CLAIM = "segur_sim_mailbox"


class TokenError(Exception):
    """A token was refused; ``str(exc)`` says why, for the recorder and the verdicts."""


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    session_id: str

    def as_oauth_json(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "refresh_token": self.refresh_token,
            "scope": SCOPE,
            "session_state": self.session_id,
        }


@dataclass(frozen=True)
class TokenInfo:
    subject: str
    session_id: str | None
    expires_at: int
    issued_at: int
    jti: str


def mailbox_binding(mailbox_id: int, address: str, created_at: float) -> str:
    """What an access token's ``segur_sim_mailbox`` claim holds for one mailbox row.

    The address alone is not enough (it can be deleted and created again), nor is the
    row id (SQLite may give a deleted row's id to the next mailbox): the creation time,
    a float with sub-second precision kept as it was written, tells two incarnations of
    one address apart.
    """
    text = f"{int(mailbox_id)}\x00{address.strip().lower()}\x00{float(created_at)!r}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _binding_of(mailbox: Mailbox) -> str:
    return mailbox_binding(mailbox.id, mailbox.address, mailbox.created_at)


def _utc(moment: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(moment))


def rpps_for(address: str) -> str:
    """A deterministic, visibly fake RPPS-shaped idnat for a test identity (8 + 11 digits)."""
    digest = int(hashlib.sha256(address.lower().encode()).hexdigest(), 16)
    return "8" + "99999" + f"{digest % 1_000_000:06d}"


class PscService:
    def __init__(
        self,
        db: Database,
        key_file: Path,
        *,
        issuer: str,
        audience: str = DEFAULT_AUDIENCE,
        access_lifetime: int = 300,
        refresh_lifetime: int = 8 * 3600,
    ) -> None:
        self.db = db
        db.ensure_schema(SCHEMA)
        self.issuer = issuer
        self.audience = audience
        self.access_lifetime = access_lifetime
        self.refresh_lifetime = refresh_lifetime
        self._key = self._load_or_create_key(key_file)
        public_numbers = self._key.public_key().public_numbers()
        self._jwk = {
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "n": _b64u(public_numbers.n.to_bytes((public_numbers.n.bit_length() + 7) // 8, "big")),
            "e": _b64u(public_numbers.e.to_bytes(3, "big")),
        }
        self.kid = hashlib.sha256(self._jwk["n"].encode()).hexdigest()[:16]
        self._jwk["kid"] = self.kid
        self._public_pem = self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @staticmethod
    def _load_or_create_key(path: Path) -> rsa.RSAPrivateKey:
        if path.exists():
            return load_key(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        key = new_key()
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        path.chmod(0o600)
        return key

    def jwks(self) -> dict[str, Any]:
        return {"keys": [dict(self._jwk)]}

    # ---- identities -------------------------------------------------------------------
    def subject_for(self, mailbox: Mailbox) -> str:
        """The PSC subject (idnat) bound to a PER/ORG mailbox, created on first use."""
        if mailbox.type is MailboxType.APP:
            raise TokenError(f"{mailbox.address} is an APP mailbox: it uses a certificate, not PSC")
        row = self.db.read_one(
            "SELECT subject FROM psc_identities WHERE mailbox_id = ?", (mailbox.id,)
        )
        if row:
            return str(row[0])
        subject = rpps_for(mailbox.address)
        self.db.write_sync(
            lambda conn: conn.execute(
                "INSERT OR IGNORE INTO psc_identities(mailbox_id, subject) VALUES (?, ?)",
                (mailbox.id, subject),
            )
        )
        return subject

    # ---- issuing ----------------------------------------------------------------------
    def issue(self, mailbox: Mailbox, *, access_lifetime: int | None = None) -> TokenPair:
        """Log the test identity in (what a CPS/e-CPS login does) and return tokens."""
        subject = self.subject_for(mailbox)
        refresh = secrets.token_urlsafe(32)
        session_id = secrets.token_hex(8)
        now = time.time()
        self.db.write_sync(
            lambda conn: conn.execute(
                "INSERT INTO psc_refresh_tokens(token_hash, session_id, mailbox_id, subject,"
                " issued_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                (_hash(refresh), session_id, mailbox.id, subject, now, now + self.refresh_lifetime),
            )
        )
        lifetime = access_lifetime or self.access_lifetime
        access = self._access_token(subject, session_id, lifetime, _binding_of(mailbox))
        return TokenPair(access, refresh, lifetime, session_id)

    def refresh(self, refresh_token: str) -> TokenPair:
        row = self.db.read_one(
            "SELECT r.*, m.address AS mailbox_address, m.created_at AS mailbox_created_at "
            "FROM psc_refresh_tokens r LEFT JOIN mailboxes m ON m.id = r.mailbox_id "
            "WHERE r.token_hash = ?",
            (_hash(refresh_token),),
        )
        if row is None:
            raise TokenError("unknown refresh token")
        if row["revoked_at"] is not None:
            raise TokenError("refresh token revoked")
        if row["expires_at"] < time.time():
            raise TokenError("refresh token expired")
        created_at = row["mailbox_created_at"]
        if created_at is None or row["issued_at"] < created_at:
            # its mailbox was deleted (and maybe its row id given to a new one)
            raise TokenError("refresh token of a deleted mailbox")
        binding = mailbox_binding(row["mailbox_id"], row["mailbox_address"], created_at)
        access = self._access_token(
            row["subject"], row["session_id"], self.access_lifetime, binding
        )
        return TokenPair(access, refresh_token, self.access_lifetime, row["session_id"])

    def revoke(self, refresh_token: str) -> bool:
        """Revoke a refresh token (RFC 7009 semantics: unknown tokens are not an error)."""
        digest = _hash(refresh_token)

        def job(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "UPDATE psc_refresh_tokens SET revoked_at = ? "
                "WHERE token_hash = ? AND revoked_at IS NULL",
                (time.time(), digest),
            ).rowcount

        return bool(self.db.write_sync(job))

    def revoke_mailbox_sessions(self, mailbox: Mailbox) -> int:
        """Revoke every live refresh token of a mailbox (the "refresh revoked" test)."""

        def job(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "UPDATE psc_refresh_tokens SET revoked_at = ? "
                "WHERE mailbox_id = ? AND revoked_at IS NULL",
                (time.time(), mailbox.id),
            ).rowcount

        return int(self.db.write_sync(job))

    def session_revoked(self, session_id: str) -> bool:
        row = self.db.read_one(
            "SELECT revoked_at FROM psc_refresh_tokens WHERE session_id = ?", (session_id,)
        )
        return bool(row and row[0] is not None)

    def _access_token(self, subject: str, session_id: str, lifetime: int, binding: str) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.audience,
            "azp": "segur-sim-lps",
            "iat": now,
            "exp": now + lifetime,
            "jti": secrets.token_hex(12),
            "sid": session_id,
            "preferred_username": subject,
            "scope": SCOPE,
            "acr": "eidas2",
            "SubjectNameID": subject,
            MAILBOX_CLAIM: binding,
            "simulation": True,
        }
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid})

    # ---- validation -------------------------------------------------------------------
    def validate(self, token: str, mailbox: Mailbox) -> TokenInfo:
        """Check a bearer token presented for ``mailbox``; raise TokenError with the reason."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenError(f"malformed token: {exc}") from exc
        if header.get("alg") != "RS256":
            raise TokenError(f"token algorithm {header.get('alg')!r}, expected RS256")
        try:
            claims = jwt.decode(
                token,
                self._public_pem,
                algorithms=["RS256"],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iat", "sub", "aud", "iss"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenError("token expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise TokenError(f"wrong audience (expected {self.audience})") from exc
        except jwt.InvalidIssuerError as exc:
            raise TokenError(f"wrong issuer (expected {self.issuer})") from exc
        except jwt.InvalidSignatureError as exc:
            raise TokenError("bad signature: not issued by this PSC") from exc
        except jwt.PyJWTError as exc:
            raise TokenError(f"invalid token: {exc}") from exc
        if mailbox.type is MailboxType.APP:
            raise TokenError(f"{mailbox.address} is an APP mailbox: PSC tokens are not accepted")
        expected = self.subject_for(mailbox)
        if claims["sub"] != expected:
            raise TokenError(
                f"token subject {claims['sub']} has no right on {mailbox.address} "
                f"(bound to {expected})"
            )
        self._check_mailbox_binding(claims, mailbox)
        return TokenInfo(
            claims["sub"],
            claims.get("sid"),
            int(claims["exp"]),
            int(claims["iat"]),
            str(claims.get("jti", "")),
        )

    @staticmethod
    def _check_mailbox_binding(claims: dict[str, Any], mailbox: Mailbox) -> None:
        """Refuse a token issued for an earlier mailbox of the same address.

        ``iat`` has second granularity: a token issued in the second the mailbox was
        created is not "before" it (``iat`` is compared with the creation second). The
        claim settles the rest, such as a token of the deleted mailbox issued in that
        same second.
        """
        created = mailbox.created_at
        issued = int(claims["iat"])
        if issued < int(created):
            raise TokenError(
                f"token issued at {_utc(issued)}, before {mailbox.address} was created "
                f"({_utc(created)}): it belongs to a deleted mailbox of the same address; "
                "log in again"
            )
        bound = claims.get(MAILBOX_CLAIM)
        if bound is None:
            raise TokenError(
                f"token not bound to a mailbox (no {MAILBOX_CLAIM} claim); log in again"
            )
        if bound != _binding_of(mailbox):
            raise TokenError(
                f"token issued for a deleted mailbox of the same address ({mailbox.address} "
                f"was created again at {_utc(created)}); log in again"
            )


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
