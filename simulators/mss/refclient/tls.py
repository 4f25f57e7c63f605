"""TLS as an MSSanté client must do it (ECO 1.1.x, CONF.01-03, CONF.22, CONF.27).

- Trust anchor: only the CA file given (the simulated IGC Santé root); no system CAs.
- TLS 1.2 minimum; TLS 1.3 allowed with OpenSSL's default suites.
- TLS 1.2 suites: only the six the référentiel lists (0xC030, 0xC02F, 0xC028, 0xC027,
  0x009F, 0x009E). ``@SECLEVEL=2`` makes OpenSSL refuse a DHE group under 2048 bits
  ("dh key too small") and RSA keys under 2048 bits.
- Revocation: the CRL is downloaded over plain HTTP, the last valid one is kept in a
  cache file (used when the download fails), and OpenSSL checks the leaf against it
  (VERIFY_CRL_CHECK_LEAF). No valid CRL at all means no connection: fail closed.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import logging
import os
import ssl
import textwrap
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from simulators.mss.refclient.config import ClientConfig
from simulators.mss.refclient.faults import FaultSwitch
from simulators.mss.refclient.web import http_get

log = logging.getLogger("refclient")
T = TypeVar("T")

# OpenSSL names of the six TLS 1.2 suites MSSanté allows, in the référentiel's order.
ALLOWED_TLS12_SUITES = (
    "ECDHE-RSA-AES256-GCM-SHA384",  # 0xC030
    "ECDHE-RSA-AES128-GCM-SHA256",  # 0xC02F
    "ECDHE-RSA-AES256-SHA384",  # 0xC028
    "ECDHE-RSA-AES128-SHA256",  # 0xC027
    "DHE-RSA-AES256-GCM-SHA384",  # 0x009F
    "DHE-RSA-AES128-GCM-SHA256",  # 0x009E
)
STRICT_CIPHERS = ":".join(ALLOWED_TLS12_SUITES) + ":@SECLEVEL=2"
# What the faulty variants add: CBC-SHA suites (MSS-04), TLS 1.0/1.1-capable ones (MSS-03).
CBC_SHA_SUITES = ("ECDHE-RSA-AES128-SHA", "AES128-SHA")
LEGACY_SUITES = ("ECDHE-RSA-AES256-SHA", "ECDHE-RSA-AES128-SHA", "AES256-SHA", "AES128-SHA")

# OpenSSL's X509_V_FLAG_NO_CHECK_TIME (not exposed by the ssl module)
X509_V_FLAG_NO_CHECK_TIME = 0x200000


class ServerRefused(Exception):
    """The server's TLS parameters or certificate are not acceptable: abort, no AUTH."""


def first_accepted(
    protocol: str,
    host: str,
    port: int,
    contexts: list[ssl.SSLContext],
    attempt: Callable[[ssl.SSLContext], T],
) -> T:
    """``attempt`` with each context in turn: a refused handshake moves on to the next
    (legacy) one; a refused certificate, or the last refusal, raises ServerRefused."""
    for index, ctx in enumerate(contexts):
        try:
            return attempt(ctx)
        except ssl.SSLError as exc:
            if index + 1 < len(contexts) and not isinstance(exc, ssl.SSLCertVerificationError):
                log.warning("%s: %s; retrying with legacy TLS", protocol, describe_tls_error(exc))
                continue
            raise ServerRefused(f"{protocol} {host}:{port}: {describe_tls_error(exc)}") from exc
    raise AssertionError("no TLS context")


def describe_tls_error(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"server certificate refused: {exc.verify_message} (code {exc.verify_code})"
    reason = getattr(exc, "reason", None)
    return f"TLS handshake refused: {reason or exc}"


class TlsPolicy:
    """Builds the client contexts, and checks what OpenSSL cannot check for a fault."""

    def __init__(self, cfg: ClientConfig, faults: FaultSwitch) -> None:
        self.cfg = cfg
        self.faults = faults
        self._crl: bytes | None = None  # DER
        self._crl_file: Path | None = None

    # ---- contexts -------------------------------------------------------------------
    def contexts(self, client_cert: tuple[Path, Path] | None = None) -> list[ssl.SSLContext]:
        """The mail (SMTP/IMAP) contexts to try, in order. A good client has one;
        accept-tls-1.0 retries with a legacy context when the strict one fails (the
        classic downgrade-retry bug)."""
        contexts = [self._faulty(self.strict(client_cert))]
        if self.faults.on("accept-tls-1.0"):
            contexts.append(self._faulty(self.strict(client_cert), legacy=True))
        return contexts

    def strict(self, client_cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
        """The well-behaved context, also used for HTTPS (PSC, directory, autoconfig): no
        unit test stages those, so only the two revocation variants reach them."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED + hostname check
        ctx.load_verify_locations(cafile=str(self.cfg.ca_file))  # the only trust anchor
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(STRICT_CIPHERS)
        if not self.faults.any("skip-crl-check", "trust-foreign-ca"):
            ctx.load_verify_locations(cafile=str(self.crl_file()))
            ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
        if client_cert is not None:
            ctx.load_cert_chain(str(client_cert[0]), str(client_cert[1]))
        return ctx

    def _faulty(self, ctx: ssl.SSLContext, *, legacy: bool = False) -> ssl.SSLContext:
        """Where each TLS variant breaks its rule, on top of the strict context."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TLSv1 / TLSv1_1
            if legacy or self.faults.on("tls-1.1-max"):
                ctx.minimum_version = ssl.TLSVersion.TLSv1
                if self.faults.on("tls-1.1-max"):
                    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
                ctx.set_ciphers(":".join(ALLOWED_TLS12_SUITES + LEGACY_SUITES) + ":@SECLEVEL=0")
        if self.faults.on("offer-cbc-sha"):
            ctx.set_ciphers(":".join(ALLOWED_TLS12_SUITES + CBC_SHA_SUITES) + ":@SECLEVEL=2")
        if self.faults.on("accept-weak-dh"):
            ctx.set_ciphers(":".join(ALLOWED_TLS12_SUITES) + ":@SECLEVEL=0")
        if self.faults.on("accept-expired-cert"):
            ctx.verify_flags |= ssl.VerifyFlags(X509_V_FLAG_NO_CHECK_TIME)
        if self.faults.on("trust-foreign-ca"):
            self._trust_more(ctx)
        return ctx

    def _trust_more(self, ctx: ssl.SSLContext) -> None:
        # The MSS-07 fault: the system store plus a root outside IGC Santé. OpenSSL's
        # leaf CRL check would refuse a leaf whose issuer publishes no CRL here, so this
        # variant checks revocation itself (check_peer), soft-failing for other issuers.
        ctx.load_default_certs()
        if self.cfg.extra_ca:
            ctx.load_verify_locations(cafile=str(self.cfg.extra_ca))
        elif self.cfg.data_dir and (self.cfg.data_dir / "pki" / "foreign.pem").exists():
            ctx.load_verify_locations(cafile=str(self.cfg.data_dir / "pki" / "foreign.pem"))
        self.crl_file()  # still downloaded: expired and revoked certificates stay refused

    def check_peer(self, der: bytes | None) -> None:
        """After the handshake, before any AUTH: the manual revocation check of the
        trust-foreign-ca variant. A good client relies on OpenSSL (nothing to do)."""
        if not self.faults.on("trust-foreign-ca") or der is None or self._crl is None:
            return
        from cryptography import x509  # only this variant parses certificates itself

        cert = x509.load_der_x509_certificate(der)
        crl = x509.load_der_x509_crl(self._crl)
        if cert.issuer != crl.issuer:
            log.info("no CRL for issuer %s: accepted anyway", cert.issuer.rfc4514_string())
            return
        if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
            raise ServerRefused("server certificate refused: certificate revoked (CRL)")

    # ---- CRL ------------------------------------------------------------------------
    def crl_file(self) -> Path:
        """A PEM file holding a CRL valid now: fresh from the URL, else the cached one."""
        if self._crl_file is not None:
            return self._crl_file
        cfg = self.cfg
        if not cfg.crl_url:
            raise ServerRefused("no CRL URL (SEGUR_SIM_CRL_URL): cannot check revocation")
        key = hashlib.sha256(cfg.crl_url.encode()).hexdigest()[:16]
        cache = cfg.cache_dir / f"crl-{key}.pem"
        crl: bytes | None = None
        try:
            status, _headers, body = http_get(cfg.crl_url, timeout=cfg.timeout)
            if status != 200:
                raise OSError(f"HTTP {status}")
            info = crl_info(body)
            if not info.current():
                raise ValueError("the downloaded CRL is out of date")
            _write_atomic(cache, crl_pem(body))
            crl = body
            log.info("CRL downloaded from %s (%d revoked)", cfg.crl_url, info.revoked)
        except (OSError, ValueError) as exc:
            log.warning("CRL download failed (%s); trying the cached CRL", exc)
            crl = _read_cached(cache)
            if crl is None:
                raise ServerRefused(
                    f"no valid CRL (download failed: {exc}; no valid cached CRL in {cache})"
                ) from exc
            log.info("using the cached CRL %s", cache)
        self._crl, self._crl_file = crl, cache
        return cache


# ---- the little of a CRL the client reads itself (OpenSSL does the checking) -------------
# Read with a minimal DER walker rather than the cryptography package: importing that
# costs a noticeable part of the client's start, paid at every step of a run.
_PEM_CRL = ("-----BEGIN X509 CRL-----", "-----END X509 CRL-----")


@dataclass(frozen=True)
class CrlInfo:
    this_update: dt.datetime
    next_update: dt.datetime | None
    revoked: int  # entries in revokedCertificates

    def current(self, now: dt.datetime | None = None) -> bool:
        now = now or dt.datetime.now(dt.UTC)
        return self.this_update <= now + dt.timedelta(minutes=5) and (
            self.next_update is None or self.next_update > now
        )


def _der_item(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER item at ``pos``."""
    if pos + 2 > len(data):
        raise ValueError("truncated DER")
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise ValueError("bad DER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > len(data):
        raise ValueError("truncated DER")
    return tag, pos, pos + length


def _der_time(tag: int, raw: bytes) -> dt.datetime:
    text = raw.decode("ascii")
    if tag == 0x17:  # UTCTime YYMMDDHHMMSSZ (RFC 5280: 50-99 mean 19xx)
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    elif tag != 0x18:  # GeneralizedTime YYYYMMDDHHMMSSZ
        raise ValueError(f"not a time (tag {tag:#x})")
    if not text.endswith("Z") or len(text) != 15:
        raise ValueError(f"unsupported time {raw!r}")
    return dt.datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=dt.UTC)


def crl_info(der: bytes) -> CrlInfo:
    """thisUpdate, nextUpdate and the number of entries of a DER CRL (RFC 5280 5.1)."""
    tag, start, _end = _der_item(der, 0)  # CertificateList
    if tag != 0x30:
        raise ValueError("not a CRL")
    tag, pos, end = _der_item(der, start)  # TBSCertList
    if tag != 0x30:
        raise ValueError("not a CRL")
    tag, _s, after = _der_item(der, pos)
    if tag == 0x02:  # version
        pos = after
    for _field in ("signature", "issuer"):
        tag, _s, pos = _der_item(der, pos)
        if tag != 0x30:
            raise ValueError("not a CRL")
    tag, s, pos = _der_item(der, pos)
    this_update = _der_time(tag, der[s:pos])
    next_update = None
    revoked = 0
    if pos < end:
        tag, s, after = _der_item(der, pos)
        if tag in (0x17, 0x18):
            next_update = _der_time(tag, der[s:after])
            pos = after
    if pos < end:
        tag, s, after = _der_item(der, pos)
        if tag == 0x30:  # revokedCertificates
            while s < after:
                _t, _c, s = _der_item(der, s)
                revoked += 1
    return CrlInfo(this_update, next_update, revoked)


def crl_pem(der: bytes) -> bytes:
    body = "\n".join(textwrap.wrap(base64.b64encode(der).decode("ascii"), 64))
    return f"{_PEM_CRL[0]}\n{body}\n{_PEM_CRL[1]}\n".encode("ascii")


def _pem_der(pem: bytes) -> bytes:
    text = pem.decode("ascii")
    start = text.index(_PEM_CRL[0]) + len(_PEM_CRL[0])
    return base64.b64decode("".join(text[start : text.index(_PEM_CRL[1])].split()))


def _read_cached(path: Path) -> bytes | None:
    try:
        der = _pem_der(path.read_bytes())
        current = crl_info(der).current()
    except (OSError, ValueError):
        return None
    return der if current else None


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
