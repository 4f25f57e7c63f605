"""HTTP side of the MSS simulator: PSC (OpenID Connect token endpoint, JWKS,
revocation), the ORG authority's CRL, and the mail autoconfiguration XML.

Paths follow the real services where a client hard-codes them: the PSC realm path of
Keycloak, and Thunderbird's ``/mail/config-v1.1.xml``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from fastapi import APIRouter, Form, HTTPException, Request, Response
from fastapi.responses import JSONResponse

from simulators import DISCLAIMER
from simulators.core.store.mail import MailboxType
from simulators.mss.psc import TokenError
from simulators.mss.services import MssServices

PSC_REALM = "/psc/auth/realms/esante-wallet"
PSC_TOKEN_PATH = f"{PSC_REALM}/protocol/openid-connect/token"
PSC_JWKS_PATH = f"{PSC_REALM}/protocol/openid-connect/certs"
PSC_REVOKE_PATH = f"{PSC_REALM}/protocol/openid-connect/revoke"
CRL_PATH = "/crl/org.crl"
AUTOCONFIG_PATH = "/mail/config-v1.1.xml"

# A test login: the simulated PSC has no CPS card; the LPS names the mailbox instead.
TEST_LOGIN_GRANT = "urn:segur-sim:params:oauth:grant-type:test-login"


def _oauth_error(status: int, error: str, description: str) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


def build_router(services: MssServices, endpoints: Callable[[], dict[str, Any]]) -> APIRouter:
    router = APIRouter()

    @router.get(f"{PSC_REALM}/.well-known/openid-configuration", tags=["psc"])
    def openid_configuration(request: Request) -> dict[str, Any]:
        base = str(request.base_url).rstrip("/")
        return {
            "issuer": services.psc.issuer,
            "token_endpoint": base + PSC_TOKEN_PATH,
            "jwks_uri": base + PSC_JWKS_PATH,
            "revocation_endpoint": base + PSC_REVOKE_PATH,
            "grant_types_supported": ["refresh_token", "password", TEST_LOGIN_GRANT],
            "id_token_signing_alg_values_supported": ["RS256"],
            "simulation": True,
        }

    @router.get(PSC_JWKS_PATH, tags=["psc"])
    def jwks() -> dict[str, Any]:
        return services.psc.jwks()

    @router.post(PSC_TOKEN_PATH, tags=["psc"])
    def token(
        request: Request,
        grant_type: str = Form(...),
        refresh_token: str | None = Form(None),
        username: str | None = Form(None),
        mailbox: str | None = Form(None),
    ) -> JSONResponse:
        if grant_type == "refresh_token":
            if not refresh_token:
                return _oauth_error(400, "invalid_request", "refresh_token is required")
            try:
                pair = services.psc.refresh(refresh_token)
            except TokenError as exc:
                record_http(services, request, 400, grant_type=grant_type, error=str(exc))
                return _oauth_error(400, "invalid_grant", str(exc))
            record_http(services, request, 200, grant_type=grant_type)
            return JSONResponse(pair.as_oauth_json())
        if grant_type in {"password", TEST_LOGIN_GRANT}:
            address = mailbox or username
            if not address:
                return _oauth_error(400, "invalid_request", "username (the mailbox) is required")
            box = services.store.get_mailbox(address)
            if box is None:
                return _oauth_error(400, "invalid_grant", f"unknown mailbox {address}")
            if box.type is MailboxType.APP:
                return _oauth_error(400, "invalid_grant", f"{address} is an APP mailbox")
            record_http(services, request, 200, grant_type=grant_type, mailbox=box.address)
            return JSONResponse(services.psc.issue(box).as_oauth_json())
        return _oauth_error(400, "unsupported_grant_type", grant_type)

    @router.post(PSC_REVOKE_PATH, tags=["psc"])
    def revoke(token: str = Form(...)) -> Response:
        services.psc.revoke(token)
        return Response(status_code=200)  # RFC 7009: 200 even for unknown tokens

    @router.get(CRL_PATH, tags=["pki"])
    def crl() -> Response:
        return Response(services.pki.crl_der(), media_type="application/pkix-crl")

    @router.get("/pki/ca-bundle.pem", tags=["pki"])
    def ca_bundle() -> Response:
        return Response(
            services.pki.ca_bundle_path.read_bytes(), media_type="application/x-pem-file"
        )

    @router.get(AUTOCONFIG_PATH, tags=["autoconfig"])
    def autoconfig(request: Request, emailaddress: str | None = None) -> Response:
        info = endpoints()
        record_http(services, request, 200, emailaddress=emailaddress)
        return Response(autoconfig_xml(services, info, emailaddress), media_type="application/xml")

    @router.get("/endpoints.json", tags=["simulator"])
    def endpoints_json() -> dict[str, Any]:
        return endpoints()

    @router.get("/healthz", tags=["simulator"])
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "simulation": True}

    @router.get("/api/mss/mailboxes/{address}", tags=["mailboxes"])
    def get_mailbox(address: str) -> dict[str, Any]:
        box = services.store.get_mailbox(address)
        if box is None:
            raise HTTPException(404, f"unknown mailbox {address}")
        return box.as_dict()

    return router


def record_http(services: MssServices, request: Request, status: int, **fields: Any) -> None:
    """Put one HTTP exchange into the wire recorder (the autoconfig test judges from it)."""
    peer = (request.client.host, request.client.port) if request.client else None
    record = services.recorder.open_session("http", request.url.scheme, peer)
    record.set(
        method=request.method,
        path=request.url.path,
        host=request.headers.get("host", ""),
        user_agent=request.headers.get("user-agent", ""),
        status=status,
        **fields,
    )
    record.client(
        f"{request.method} {request.url.path}?{request.url.query} Host: "
        f"{request.headers.get('host', '')}"
    )
    record.server(f"{status}")
    record.close("http-done")


def autoconfig_xml(services: MssServices, info: dict[str, Any], emailaddress: str | None) -> bytes:
    """Thunderbird autoconfig v1.1, as MSSanté operators publish it (STARTTLS + OAuth2)."""
    eps = info["endpoints"]
    host = info["host"]
    domain = services.domain
    user = escape(emailaddress or "%EMAILADDRESS%")
    incoming = ""
    if "imap_starttls" in eps:
        incoming = f"""
    <incomingServer type="imap">
      <hostname>{escape(host)}</hostname>
      <port>{eps["imap_starttls"]["port"]}</port>
      <socketType>STARTTLS</socketType>
      <authentication>OAuth2</authentication>
      <username>{user}</username>
    </incomingServer>"""
    xml = f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- {escape(DISCLAIMER)} -->
<clientConfig version="1.1">
  <emailProvider id={quoteattr(domain)}>
    <domain>{escape(domain)}</domain>
    <displayName>MSSante SIMULATION ({escape(domain)})</displayName>
    <displayShortName>MSSante SIMULATION</displayShortName>{incoming}
    <outgoingServer type="smtp">
      <hostname>{escape(host)}</hostname>
      <port>{eps["smtp_starttls"]["port"]}</port>
      <socketType>STARTTLS</socketType>
      <authentication>OAuth2</authentication>
      <username>{user}</username>
    </outgoingServer>
  </emailProvider>
  <oAuth2>
    <issuer>{escape(services.psc.issuer)}</issuer>
    <scope>openid scope_all</scope>
    <tokenURL>{escape(info["psc"]["token_endpoint"])}</tokenURL>
  </oAuth2>
</clientConfig>
"""
    return xml.encode("utf-8")
