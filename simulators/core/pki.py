"""A simulated IGC Santé test PKI, generated on first use and reused afterwards.

Hierarchy (every name says SIMULATION):

- ``root``: AC RACINE IGC-SANTE SIMULATION
  - ``org``: AC IGC-SANTE ELEMENTAIRE ORGANISATIONS SIMULATION. It issues the mail
    server certificates and the ORG AUTH_CLI client certificates of APP mailboxes,
    and publishes a CRL.
  - ``per``: AC IGC-SANTE ELEMENTAIRE PERSONNES SIMULATION. It issues personal
    certificates, which an APP mailbox must refuse.
  - a proof-signing certificate for the signed proof bundles.
- ``foreign``: a root outside IGC Santé, for the "foreign certificate" cases.

Server certificates carry the CRL distribution point of the running instance, so
they are re-issued (for the key they already have) when that URL changes. Every key is
RSA: the six cipher suites MSSanté allows all use RSA authentication. ``serve`` has the
keys of a new PKI generated in a background thread while it imports (``new_key``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import ssl
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

P12_PASSWORD = b"segur-sim"  # test credentials: a known password, printed in the docs
_KEY_SIZE = 2048
_NOW_SKEW = dt.timedelta(minutes=5)

# OpenSSL's X509_V_FLAG_NO_CHECK_TIME: we judge client certificate dates ourselves so
# that an expired certificate is recorded and refused with a readable reason.
_X509_V_FLAG_NO_CHECK_TIME = 0x200000


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _name(cn: str, ou: str | None = None, o: str = "SEGUR-SIM SIMULATION") -> x509.Name:
    attrs = [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, o),
    ]
    if ou:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def _generate_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=_KEY_SIZE)


class _KeysAhead:
    """RSA keys generated in a background thread before anyone asks for them.

    OpenSSL releases the GIL while it looks for primes, so at ``serve`` start-up the
    keys of a new PKI are generated on another core while the main thread imports the
    web stack. Each key is handed out once, to whichever caller comes first.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._ready: list[rsa.RSAPrivateKey] = []
        self._to_start = 0  # keys the thread has yet to begin
        self._in_flight = 0  # keys it is generating now
        self._waiting = 0  # callers of take() waiting for one of those

    def start(self, count: int) -> None:
        if count <= 0:
            return
        with self._cond:
            self._to_start += count
        threading.Thread(target=self._run, name="segur-sim-keygen", daemon=True).start()

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._to_start <= 0:
                    return
                self._to_start -= 1
                self._in_flight += 1
            key = _generate_key()
            with self._cond:
                self._in_flight -= 1
                self._ready.append(key)
                self._cond.notify_all()

    def take(self) -> rsa.RSAPrivateKey:
        with self._cond:
            while not self._ready:
                if self._to_start > 0:
                    self._to_start -= 1  # not begun yet: make it here, on another core
                    break
                if self._in_flight <= self._waiting:
                    break  # nothing coming for this caller
                self._waiting += 1  # one is half-way through: wait for it
                self._cond.wait()
                self._waiting -= 1
            else:
                return self._ready.pop(0)
        return _generate_key()


_keys_ahead = _KeysAhead()


def generate_keys_ahead(count: int) -> None:
    """Start generating ``count`` RSA keys in the background for the next :func:`new_key`."""
    _keys_ahead.start(count)


def new_key() -> rsa.RSAPrivateKey:
    """A new RSA key (a prepared one if :func:`generate_keys_ahead` made some)."""
    return _keys_ahead.take()


def load_key(path: Path) -> rsa.RSAPrivateKey:
    """An RSA private key this simulator generated and wrote itself (mode 0600).

    OpenSSL 3's RSA key consistency check costs some 40 ms per 2048-bit key; it guards
    against keys from untrusted sources, which these files are not, so it is skipped.
    """
    key = serialization.load_pem_private_key(
        path.read_bytes(), None, unsafe_skip_rsa_key_validation=True
    )
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def _kept_key(path: Path) -> rsa.RSAPrivateKey | None:
    """The key already at ``path``; None if there is none, or only a torn write of one."""
    try:
        return load_key(path)
    except (OSError, ValueError, TypeError, UnsupportedAlgorithm, AssertionError):
        return None


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


@dataclass(frozen=True)
class Authority:
    name: str
    cert: x509.Certificate
    key: rsa.RSAPrivateKey


@dataclass(frozen=True)
class Credentials:
    """A certificate, its key and chain, as files on disk."""

    cert_path: Path
    key_path: Path
    chain_path: Path  # leaf + intermediates, PEM: what a server or client presents
    cert: x509.Certificate

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.cert)

    @property
    def subject(self) -> str:
        return self.cert.subject.rfc4514_string()


@dataclass(frozen=True)
class ClientCredentials(Credentials):
    p12_path: Path


SERVER_KINDS = ("valid", "expired", "revoked", "foreign")
CLIENT_KINDS = ("valid", "expired", "revoked", "foreign", "personal")


@dataclass(frozen=True)
class ClientCertVerdict:
    """What the server concluded about a presented client certificate."""

    ok: bool
    reason: str
    subject: str
    issuer: str
    fingerprint: str
    addresses: tuple[str, ...]


class TestPKI:
    """Files live in ``pki_dir``; call :meth:`load_or_create` to get one."""

    __test__ = False  # not a pytest class, despite the name

    def __init__(self, pki_dir: Path, domain: str) -> None:
        self.dir = pki_dir
        self.domain = domain
        self._lock = threading.Lock()
        self.root = self._load_authority("root")
        self.org = self._load_authority("org")
        self.per = self._load_authority("per")
        self.foreign = self._load_authority("foreign")

    # ---- creation -------------------------------------------------------------------
    @staticmethod
    def keys_to_create(pki_dir: Path) -> int:
        """How many RSA keys opening ``pki_dir`` and serving from it will generate."""
        count = 0 if (pki_dir / "root.pem").exists() else 4  # root, foreign, org, per
        if not (pki_dir / "server" / "valid" / "key.pem").exists():
            count += 1  # the mail and HTTPS server certificate
        return count

    @classmethod
    def load_or_create(cls, pki_dir: Path, domain: str) -> TestPKI:
        pki_dir.mkdir(parents=True, exist_ok=True)
        if not (pki_dir / "root.pem").exists():
            cls._create_authorities(pki_dir)
        return cls(pki_dir, domain)

    @staticmethod
    def _create_authorities(pki_dir: Path) -> None:
        now = _utcnow()
        root_key = new_key()
        root_name = _name("AC RACINE IGC-SANTE SIMULATION", "IGC-SANTE TEST")
        root = _ca_cert(root_name, root_key, root_name, root_key, now, years=20, path_len=1)
        foreign_key = new_key()
        foreign_name = _name("FOREIGN ROOT CA SIMULATION", o="NOT IGC-SANTE")
        foreign = _ca_cert(foreign_name, foreign_key, foreign_name, foreign_key, now, 20, 1)
        org_key = new_key()
        org = _ca_cert(
            _name("AC IGC-SANTE ELEMENTAIRE ORGANISATIONS SIMULATION", "IGC-SANTE TEST"),
            org_key,
            root_name,
            root_key,
            now,
            years=10,
            path_len=0,
        )
        per_key = new_key()
        per = _ca_cert(
            _name("AC IGC-SANTE ELEMENTAIRE PERSONNES SIMULATION", "IGC-SANTE TEST"),
            per_key,
            root_name,
            root_key,
            now,
            years=10,
            path_len=0,
        )
        for name, cert, key in (
            ("root", root, root_key),
            ("foreign", foreign, foreign_key),
            ("org", org, org_key),
            ("per", per, per_key),
        ):
            (pki_dir / f"{name}.key").write_bytes(_pem_key(key))
            (pki_dir / f"{name}.key").chmod(0o600)
            (pki_dir / f"{name}.pem").write_bytes(_pem_cert(cert))
        (pki_dir / "revoked.json").write_text("[]")

    def _load_authority(self, name: str) -> Authority:
        cert = x509.load_pem_x509_certificate((self.dir / f"{name}.pem").read_bytes())
        return Authority(name, cert, load_key(self.dir / f"{name}.key"))

    # ---- bundles --------------------------------------------------------------------
    @property
    def ca_bundle_path(self) -> Path:
        """The trust anchor a client of the simulator needs: the simulated IGC root."""
        path = self.dir / "ca-bundle.pem"
        if not path.exists():
            path.write_bytes(_pem_cert(self.root.cert))
        return path

    @property
    def root_cert_path(self) -> Path:
        return self.dir / "root.pem"

    @property
    def foreign_root_path(self) -> Path:
        return self.dir / "foreign.pem"

    # ---- server certificates --------------------------------------------------------
    def server_credentials(self, kind: str = "valid", crl_url: str | None = None) -> Credentials:
        """The mail server certificate, or one of its broken variants."""
        if kind not in SERVER_KINDS:
            raise ValueError(f"unknown server certificate kind {kind!r}")
        base = self.dir / "server" / kind
        meta_path = base / "meta.json"
        wanted = {"crl_url": crl_url, "domain": self.domain}
        with self._lock:
            if meta_path.exists() and json.loads(meta_path.read_text()) == wanted:
                return self._read_credentials(base)
            base.mkdir(parents=True, exist_ok=True)
            issuer = self.foreign if kind == "foreign" else self.org
            names = [
                "localhost",
                self.domain,
                f"*.{self.domain}",
                f"smtp.{self.domain}",
                f"imap.{self.domain}",
                f"autoconfig.{self.domain}",
            ]
            # A new CRL URL (a new HTTP port) re-issues the certificate for the key it
            # already has: a renewal, which costs a signature instead of a key search.
            kept = _kept_key(base / "key.pem")
            key = kept if kept is not None else new_key()
            now = _utcnow()
            if kind == "expired":
                not_before, not_after = now - dt.timedelta(days=400), now - dt.timedelta(days=30)
            else:
                not_before, not_after = now - _NOW_SKEW, now + dt.timedelta(days=825)
            builder = (
                x509.CertificateBuilder()
                .subject_name(_name(f"{self.domain} ({kind}) SIMULATION", "MSSANTE OPERATEUR"))
                .issuer_name(issuer.cert.subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(not_before)
                .not_valid_after(not_after)
                .add_extension(
                    x509.SubjectAlternativeName(
                        [x509.DNSName(n) for n in names]
                        + [
                            x509.IPAddress(IPv4Address("127.0.0.1")),
                            x509.IPAddress(IPv6Address("::1")),
                        ]
                    ),
                    critical=False,
                )
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(
                    x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
                )
                .add_extension(_leaf_key_usage(), critical=True)
                .add_extension(
                    x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
                    critical=False,
                )
            )
            if crl_url and kind != "foreign":
                builder = builder.add_extension(_crl_dp(crl_url), critical=False)
            cert = builder.sign(issuer.key, hashes.SHA256())
            self._write_credentials(base, cert, None if kept else key, [issuer.cert])
            if kind == "revoked":
                self._add_revoked(cert.serial_number)
            meta_path.write_text(json.dumps(wanted))
            return self._read_credentials(base)

    # ---- client certificates (APP mailboxes) ----------------------------------------
    def client_credentials(
        self, address: str, entity: str, kind: str = "valid"
    ) -> ClientCredentials:
        """The ORG AUTH_CLI certificate of an APP mailbox, or a broken variant of it.

        Issued once per (address, kind) and kept; the mailbox address is in the SAN so
        that the server can tie the certificate to the mailbox.
        """
        if kind not in CLIENT_KINDS:
            raise ValueError(f"unknown client certificate kind {kind!r}")
        safe = hashlib.sha256(address.lower().encode()).hexdigest()[:16]
        base = self.dir / "clients" / f"{safe}-{kind}"
        with self._lock:
            if (base / "cert.pem").exists():
                creds = self._read_credentials(base)
                return ClientCredentials(**creds.__dict__, p12_path=base / "client.p12")
            base.mkdir(parents=True, exist_ok=True)
            issuer = {"foreign": self.foreign, "personal": self.per}.get(kind, self.org)
            key = new_key()
            now = _utcnow()
            if kind == "expired":
                not_before, not_after = now - dt.timedelta(days=400), now - dt.timedelta(days=1)
            else:
                not_before, not_after = now - _NOW_SKEW, now + dt.timedelta(days=3 * 365)
            ou = "PERSONNE AUTH" if kind == "personal" else "ORG AUTH_CLI"
            cert = (
                x509.CertificateBuilder()
                .subject_name(_name(f"{address} SIMULATION", ou, o=f"{entity} (SIMULATION)"))
                .issuer_name(issuer.cert.subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(not_before)
                .not_valid_after(not_after)
                .add_extension(
                    x509.SubjectAlternativeName([x509.RFC822Name(address)]), critical=False
                )
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(
                    x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
                )
                .add_extension(_leaf_key_usage(), critical=True)
                .sign(issuer.key, hashes.SHA256())
            )
            self._write_credentials(base, cert, key, [issuer.cert])
            p12 = pkcs12.serialize_key_and_certificates(
                name=address.encode(),
                key=key,
                cert=cert,
                cas=[issuer.cert],
                encryption_algorithm=serialization.BestAvailableEncryption(P12_PASSWORD),
            )
            (base / "client.p12").write_bytes(p12)
            if kind == "revoked":
                self._add_revoked(cert.serial_number)
            creds = self._read_credentials(base)
            return ClientCredentials(**creds.__dict__, p12_path=base / "client.p12")

    def judge_client_certificate(
        self, der: bytes, *, at: dt.datetime | None = None
    ) -> ClientCertVerdict:
        """Decide whether a presented certificate is a valid ORG AUTH_CLI certificate."""
        cert = x509.load_der_x509_certificate(der)
        now = at or _utcnow()
        subject = cert.subject.rfc4514_string()
        issuer = cert.issuer.rfc4514_string()
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            addresses = tuple(a.lower() for a in san.get_values_for_type(x509.RFC822Name))
        except x509.ExtensionNotFound:
            addresses = ()

        def verdict(ok: bool, reason: str) -> ClientCertVerdict:
            return ClientCertVerdict(ok, reason, subject, issuer, fingerprint(cert), addresses)

        if cert.issuer != self.org.cert.subject:
            if cert.issuer == self.per.cert.subject:
                return verdict(False, "personal certificate (AC PERSONNES), not ORG AUTH_CLI")
            return verdict(False, f"issuer {issuer} is not the IGC Santé ORG authority")
        try:
            cert.verify_directly_issued_by(self.org.cert)
        except (ValueError, TypeError, Exception):  # signature mismatch: forged certificate
            return verdict(False, "signature does not verify against the ORG authority")
        if now < cert.not_valid_before_utc:
            return verdict(False, f"not valid before {cert.not_valid_before_utc.isoformat()}")
        if now > cert.not_valid_after_utc:
            return verdict(False, f"expired on {cert.not_valid_after_utc.isoformat()}")
        if cert.serial_number in self.revoked_serials():
            return verdict(False, f"revoked (serial {cert.serial_number:x} is in the CRL)")
        return verdict(True, "valid ORG AUTH_CLI certificate")

    # ---- revocation -----------------------------------------------------------------
    def revoked_serials(self) -> set[int]:
        return set(json.loads((self.dir / "revoked.json").read_text()))

    def _add_revoked(self, serial: int) -> None:
        serials = self.revoked_serials() | {serial}
        (self.dir / "revoked.json").write_text(json.dumps(sorted(serials)))

    def revoke(self, cert: x509.Certificate) -> None:
        with self._lock:
            self._add_revoked(cert.serial_number)

    def crl_der(self, *, next_update_days: int = 7) -> bytes:
        """A fresh CRL of the ORG authority, DER encoded."""
        now = _utcnow()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.org.cert.subject)
            .last_update(now - _NOW_SKEW)
            .next_update(now + dt.timedelta(days=next_update_days))
        )
        for serial in sorted(self.revoked_serials()):
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(now - dt.timedelta(days=1))
                .build()
            )
        return builder.sign(self.org.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)

    # ---- proof signing --------------------------------------------------------------
    def signing_credentials(self) -> Credentials:
        """The certificate that signs proof bundles and attestations."""
        base = self.dir / "signing"
        with self._lock:
            if (base / "cert.pem").exists():
                return self._read_credentials(base)
            base.mkdir(parents=True, exist_ok=True)
            key = new_key()
            now = _utcnow()
            cert = (
                x509.CertificateBuilder()
                .subject_name(_name("SEGUR-SIM PROOF SIGNING (SIMULATION - NOT ANS)", "PROOFS"))
                .issuer_name(self.org.cert.subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - _NOW_SKEW)
                .not_valid_after(now + dt.timedelta(days=5 * 365))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(
                    x509.KeyUsage(
                        digital_signature=True,
                        content_commitment=True,
                        key_encipherment=False,
                        data_encipherment=False,
                        key_agreement=False,
                        key_cert_sign=False,
                        crl_sign=False,
                        encipher_only=False,
                        decipher_only=False,
                    ),
                    critical=True,
                )
                .add_extension(
                    x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
                )
                .sign(self.org.key, hashes.SHA256())
            )
            self._write_credentials(base, cert, key, [self.org.cert])
            return self._read_credentials(base)

    def load_signing_key(self) -> rsa.RSAPrivateKey:
        return load_key(self.dir / "signing" / "key.pem")

    # ---- TLS contexts ---------------------------------------------------------------
    def server_ssl_context(
        self,
        kind: str = "valid",
        *,
        crl_url: str | None = None,
        request_client_cert: bool = True,
    ) -> ssl.SSLContext:
        """A server context for the mail endpoints.

        It requests (never requires) a client certificate and trusts every simulated
        root, including the foreign one, so that a wrong certificate reaches the
        application, gets recorded and is refused with a readable reason.
        """
        creds = self.server_credentials(kind, crl_url)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(creds.chain_path, creds.key_path)
        if request_client_cert:
            ctx.verify_mode = ssl.CERT_OPTIONAL
            for path in (self.root_cert_path, self.foreign_root_path):
                ctx.load_verify_locations(cafile=str(path))
            ctx.load_verify_locations(cadata=_pem_cert(self.org.cert).decode())
            ctx.load_verify_locations(cadata=_pem_cert(self.per.cert).decode())
            ctx.verify_flags = ssl.VerifyFlags(int(ctx.verify_flags) | _X509_V_FLAG_NO_CHECK_TIME)
        return ctx

    def client_ssl_context(self, client: Credentials | None = None) -> ssl.SSLContext:
        """What a well-behaved client uses: trust only the simulated IGC Santé root."""
        ctx = ssl.create_default_context(cafile=str(self.root_cert_path))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if client is not None:
            ctx.load_cert_chain(client.chain_path, client.key_path)
        return ctx

    # ---- files ----------------------------------------------------------------------
    @staticmethod
    def _write_credentials(
        base: Path,
        cert: x509.Certificate,
        key: rsa.RSAPrivateKey | None,  # None: key.pem is already there
        chain: Iterable[x509.Certificate],
    ) -> None:
        if key is not None:
            (base / "key.pem").write_bytes(_pem_key(key))
            (base / "key.pem").chmod(0o600)
        (base / "cert.pem").write_bytes(_pem_cert(cert))
        (base / "chain.pem").write_bytes(_pem_cert(cert) + b"".join(_pem_cert(c) for c in chain))

    @staticmethod
    def _read_credentials(base: Path) -> Credentials:
        cert = x509.load_pem_x509_certificate((base / "cert.pem").read_bytes())
        return Credentials(base / "cert.pem", base / "key.pem", base / "chain.pem", cert)


def _ca_cert(
    subject: x509.Name,
    key: rsa.RSAPrivateKey,
    issuer_name: x509.Name,
    issuer_key: rsa.RSAPrivateKey,
    now: dt.datetime,
    years: int,
    path_len: int,
) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _NOW_SKEW)
        .not_valid_after(now + dt.timedelta(days=365 * years))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_len), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(issuer_key, hashes.SHA256())
    )


def _leaf_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=True,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _crl_dp(url: str) -> x509.CRLDistributionPoints:
    return x509.CRLDistributionPoints(
        [
            x509.DistributionPoint(
                full_name=[x509.UniformResourceIdentifier(url)],
                relative_name=None,
                reasons=None,
                crl_issuer=None,
            )
        ]
    )
