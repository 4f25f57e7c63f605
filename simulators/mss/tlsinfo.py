"""What a TLS session tells us about the client, in the recorder's field names."""

from __future__ import annotations

import ssl
from typing import Any

from simulators.core.pki import fingerprint
from simulators.core.recorder import SessionRecord


def tls_fields(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> dict[str, Any]:
    """Version, suite, the suites the client offered (that we share), client cert."""
    if ssl_object is None:
        return {"tls": False}
    cipher = ssl_object.cipher()
    shared = ssl_object.shared_ciphers() or []
    fields: dict[str, Any] = {
        "tls": True,
        "tls_version": ssl_object.version(),
        "tls_cipher": cipher[0] if cipher else None,
        # The server enables a wide list on purpose, so this is close to what the
        # client offered; the cipher-suite test judges from it.
        "tls_offered": sorted({c[0] for c in shared}),
    }
    der = ssl_object.getpeercert(binary_form=True)
    if der:
        from cryptography import x509

        cert = x509.load_der_x509_certificate(der)
        fields["client_cert_subject"] = cert.subject.rfc4514_string()
        fields["client_cert_issuer"] = cert.issuer.rfc4514_string()
        fields["client_cert_fingerprint"] = fingerprint(cert)
    return fields


def peer_cert_der(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> bytes | None:
    if ssl_object is None:
        return None
    return ssl_object.getpeercert(binary_form=True)


def record_tls(
    record: SessionRecord, ssl_object: ssl.SSLObject | ssl.SSLSocket | None, *, starttls: bool
) -> None:
    fields = tls_fields(ssl_object)
    fields["starttls"] = starttls
    record.set(**fields)
    record.note(
        f"TLS established: {fields.get('tls_version')} {fields.get('tls_cipher')}"
        + (
            f", client certificate {fields['client_cert_subject']}"
            if "client_cert_subject" in fields
            else ", no client certificate"
        )
    )


def handshake_failure_reason(exc: BaseException) -> str:
    """What the recorder keeps: OpenSSL's reason code when there is one."""
    cause = exc.__cause__ or exc
    reason = getattr(cause, "reason", None) or str(cause) or type(cause).__name__
    return str(reason)


def record_tls_failure(record: SessionRecord, exc: BaseException) -> None:
    """A failed handshake, for the certificate and TLS-version tests to judge from."""
    reason = handshake_failure_reason(exc)
    record.set(tls_error=reason)
    record.note(f"TLS handshake failed: {reason}")
