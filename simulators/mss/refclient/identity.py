"""Who the client is: the mailbox (display name, entity, sender label) and, for an
APP mailbox, the ORG AUTH_CLI certificate it presents in TLS."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from simulators.mss.refclient.config import ClientConfig, ConfigError
from simulators.mss.refclient.faults import FaultSwitch
from simulators.mss.refclient.web import Session, request

log = logging.getLogger("refclient")

_TITLES = {
    "dr": "Dr",
    "docteur": "Dr",
    "pr": "Pr",
    "professeur": "Pr",
    "m": "M.",
    "mme": "Mme",
    "mr": "M.",
}


@dataclass(frozen=True)
class MailboxInfo:
    address: str
    type: str
    display_name: str
    entity: str


def fetch_mailbox_info(
    cfg: ClientConfig, context: Callable[[], ssl.SSLContext], session: Session | None = None
) -> MailboxInfo:
    """GET /api/mss/mailboxes/{address}: what the operator's directory says about the
    mailbox. Falls back to what the address gives if the directory is unreachable."""
    fallback = MailboxInfo(cfg.bal, cfg.bal_type, cfg.bal.split("@")[0], cfg.domain.upper())
    url = f"{cfg.https_base}/api/mss/mailboxes/{quote(cfg.bal, safe='@')}"
    get = session.request if session is not None else request
    try:
        status, _h, body = get("GET", url, context=context(), timeout=cfg.timeout)
        data = json.loads(body) if status == 200 else None
    except (OSError, ValueError) as exc:
        log.warning("mailbox directory unreachable (%s): using the address as label", exc)
        return fallback
    if not isinstance(data, dict):
        log.warning("mailbox directory answered HTTP %s: using the address as label", status)
        return fallback
    return MailboxInfo(
        address=str(data.get("address", cfg.bal)),
        type=str(data.get("type", cfg.bal_type)),
        display_name=str(data.get("display_name") or fallback.display_name),
        entity=str(data.get("entity") or fallback.entity),
    )


def sender_label(info: MailboxInfo, bal_type: str) -> str:
    """ECO 2.2.7: PER ``[Title]_[First name]_[NAME]_[Entity]``, ORG/APP ``[Entity]``.

    The PER parts come from the display name (``Dr Jean MARTIN``, ``dr.martin``...);
    a part the display name does not give stays empty rather than invented.
    """
    if bal_type != "PER":
        return info.entity
    words = [w for w in re.split(r"[\s._]+", info.display_name) if w]
    title = ""
    if words and words[0].lower().rstrip(".") in _TITLES:
        title = _TITLES[words[0].lower().rstrip(".")]
        words = words[1:]
    first = ""
    if len(words) >= 2:
        first = "-".join(p.capitalize() for p in words[0].split("-"))
        words = words[1:]
    name = " ".join(words).upper()
    return "_".join((title, first, name, info.entity))


class ClientCertificate:
    """The (certificate, key) PEM files an APP mailbox presents, or None.

    Normal runs use SEGUR_SIM_CLIENT_CERT/KEY (or the P12, converted to PEM files in a
    private temporary directory removed at exit). The personal-cert and
    expired-client-cert variants use SEGUR_SIM_REFCLIENT_ALT_CERT/KEY when given, else
    they issue themselves the certificate from the simulated PKI of the data directory
    named in endpoints.json (the runner has no such certificate to give).
    """

    def __init__(self, cfg: ClientConfig, faults: FaultSwitch, entity: Callable[[], str]) -> None:
        self.cfg = cfg
        self.faults = faults
        self._entity = entity
        self._paths: tuple[Path, Path] | None = None
        self._resolved = False
        self._tmp: Path | None = None  # the PEM files converted from the P12

    def close(self) -> None:
        """Remove the PEM files converted from the P12 (the private key among them)."""
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def paths(self) -> tuple[Path, Path] | None:
        if not self._resolved:
            self._paths = self._resolve()
            self._resolved = True
        return self._paths

    def _resolve(self) -> tuple[Path, Path] | None:
        cfg = self.cfg
        if not cfg.is_app:
            return None
        if self.faults.on("app-no-client-cert"):
            log.info("no client certificate (fault app-no-client-cert)")
            return None
        kind = (
            "personal"
            if self.faults.on("personal-cert")
            else "expired"
            if self.faults.on("expired-client-cert")
            else None
        )
        if kind is not None:
            return self._alternative(kind)
        if cfg.client_cert and cfg.client_key:
            return cfg.client_cert, cfg.client_key
        if cfg.client_p12:
            tmp = Path(tempfile.mkdtemp(prefix="refclient-"))  # mode 0700
            self._tmp = tmp
            return _p12_to_pem(cfg.client_p12, cfg.client_p12_password, tmp)
        raise ConfigError(
            "an APP mailbox needs SEGUR_SIM_CLIENT_CERT and SEGUR_SIM_CLIENT_KEY "
            "(or SEGUR_SIM_CLIENT_P12) for its ORG AUTH_CLI certificate"
        )

    def _alternative(self, kind: str) -> tuple[Path, Path]:
        cfg = self.cfg
        if cfg.alt_cert and cfg.alt_key:
            log.info("presenting %s (fault: %s certificate)", cfg.alt_cert, kind)
            return cfg.alt_cert, cfg.alt_key
        if cfg.data_dir is None:
            raise ConfigError(
                f"the {kind} certificate needs SEGUR_SIM_REFCLIENT_ALT_CERT/KEY or "
                "SEGUR_SIM_ENDPOINTS (for the data directory's PKI)"
            )
        from simulators.core.pki import TestPKI  # only the faulty variants need the PKI

        pki = TestPKI.load_or_create(cfg.data_dir / "pki", cfg.domain)
        creds = pki.client_credentials(cfg.bal, self._entity(), kind)
        log.info("presenting a %s certificate: %s", kind, creds.subject)
        return creds.chain_path, creds.key_path


def _p12_to_pem(p12: Path, password: str | None, tmp: Path) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    key, cert, extra = pkcs12.load_key_and_certificates(
        p12.read_bytes(), password.encode() if password else None
    )
    if key is None or cert is None:
        raise ConfigError(f"{p12} holds no key and certificate")
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    chain = cert.public_bytes(serialization.Encoding.PEM) + b"".join(
        c.public_bytes(serialization.Encoding.PEM) for c in extra
    )
    cert_path.write_bytes(chain)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_path, key_path
