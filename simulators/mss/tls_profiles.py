"""The TLS behaviours the mail endpoints can present.

``normal`` is what a real MSSanté operator offers (TLS 1.2+, an IGC Santé certificate),
with one twist for observation: after the six suites the requirements allow, the server
also accepts every other suite, so that what a client *offers* shows up in
``shared_ciphers()`` and the cipher-suite test can judge it. The server prefers the
allowed suites, so a well-behaved client always negotiates one of them.

The other profiles stage the faults of the MOTCO2 unit tests: legacy TLS only, a weak
DH group, expired / revoked / foreign certificates.
"""

from __future__ import annotations

import ssl
import warnings
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dh

from simulators.core.pki import TestPKI

# ECO.1.1.3 / SC.MSS/CONF.03: 0xC030, 0xC02F, 0xC028, 0xC027, 0x009F, 0x009E.
ALLOWED_TLS12_SUITES = (
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES256-SHA384",
    "ECDHE-RSA-AES128-SHA256",
    "DHE-RSA-AES256-GCM-SHA384",
    "DHE-RSA-AES128-GCM-SHA256",
)
ALLOWED_SUITE_CODES = {
    "ECDHE-RSA-AES256-GCM-SHA384": "0xC030",
    "ECDHE-RSA-AES128-GCM-SHA256": "0xC02F",
    "ECDHE-RSA-AES256-SHA384": "0xC028",
    "ECDHE-RSA-AES128-SHA256": "0xC027",
    "DHE-RSA-AES256-GCM-SHA384": "0x009F",
    "DHE-RSA-AES128-GCM-SHA256": "0x009E",
}
OBSERVING_CIPHERS = ":".join(ALLOWED_TLS12_SUITES) + ":ALL:@SECLEVEL=0"

# RFC 2409 Oakley group 2 (1024 bits): a well-known weak group for the weak-DH stage.
_OAKLEY_GROUP_2 = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A0879"
    "8E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B"
    "0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE65381FFFFFFFFFFFFFFFF",
    16,
)
_DH_2048 = 2048  # a DHE group below this is a fault (ECO.1.1.3)

PROFILES = ("normal", "tls-legacy-only", "weak-dh", "cert-expired", "cert-revoked", "cert-foreign")


def is_allowed_suite(name: str) -> bool:
    """TLS 1.3 suites (``TLS_...``) are allowed by ECO.1.1.2; TLS 1.2 ones must be listed."""
    return name.startswith("TLS_") or name in ALLOWED_SUITE_CODES


def _weak_dh_file(pki: TestPKI) -> Path:
    path = pki.dir / "dh1024.pem"
    if not path.exists():
        numbers = dh.DHParameterNumbers(_OAKLEY_GROUP_2, 2)
        path.write_bytes(
            numbers.parameters().parameter_bytes(
                serialization.Encoding.PEM, serialization.ParameterFormat.PKCS3
            )
        )
    return path


def server_context(pki: TestPKI, profile: str, crl_url: str | None) -> ssl.SSLContext:
    """A server context for one profile (see the module docstring)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown TLS profile {profile!r}; known: {PROFILES}")
    kind = profile.removeprefix("cert-") if profile.startswith("cert-") else "valid"
    ctx = pki.server_ssl_context(kind, crl_url=crl_url)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0/1.1 on purpose
        if profile == "tls-legacy-only":
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        elif profile == "weak-dh":
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
            ctx.set_ciphers("DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:@SECLEVEL=0")
            ctx.load_dh_params(str(_weak_dh_file(pki)))
        else:
            ctx.set_ciphers(OBSERVING_CIPHERS)
    return ctx
