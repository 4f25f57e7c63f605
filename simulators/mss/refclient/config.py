"""The driver contract (docs/mss-conformance.md) read from the environment.

``endpoints.json`` (``SEGUR_SIM_ENDPOINTS``) fills what a variable leaves out, so the
client also runs by hand with only SEGUR_SIM_ENDPOINTS, SEGUR_SIM_BAL and
SEGUR_SIM_ACTION set. Variables always win: the runner decides.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

# Same value as simulators.mss.http_routes.TEST_LOGIN_GRANT, repeated here so the
# client does not import the server's web stack.
DEFAULT_TEST_LOGIN_GRANT = "urn:segur-sim:params:oauth:grant-type:test-login"

ACTIONS = (
    "send-mail",
    "send-mail-with-cda",
    "read-mail",
    "send-and-read",
    "autoconfig-then-connect",
    "keep-session-open",
    "reply-to-mail",
    "return-mdn",
    "send-to-patient",
)


class ConfigError(ValueError):
    """A variable the action needs is missing or malformed."""


@dataclass(frozen=True)
class ClientConfig:
    action: str
    bal: str
    bal_type: str  # PER, ORG or APP
    nil: str
    correspondent: str
    domain: str
    host: str
    smtp_port: int
    smtps_port: int
    imap_port: int
    imaps_port: int
    http_port: int
    https_port: int
    ca_file: Path
    crl_url: str
    autoconfig_url: str
    resolve: str  # curl --resolve format: name:port:address
    psc_token_endpoint: str
    psc_test_login_grant: str
    client_cert: Path | None
    client_key: Path | None
    client_p12: Path | None
    client_p12_password: str | None
    data_dir: Path | None  # from endpoints.json: where the simulated PKI lives
    # refclient-only knobs (SEGUR_SIM_REFCLIENT_*), all optional
    fault: str | None
    cache_dir: Path
    backoff: float  # first back-off delay after a refused authentication, seconds
    keepalive: float  # NOOP period of keep-session-open, seconds
    refresh_every: float | None  # refresh the PSC token at least this often, seconds
    cda_file: Path | None  # a CDA to send instead of the built-in template
    alt_cert: Path | None  # certificate for the personal-cert / expired-client-cert faults
    alt_key: Path | None
    extra_ca: Path | None  # the non-IGC root trusted by trust-foreign-ca (default: data dir's)
    timeout: float  # socket timeout, seconds

    @property
    def is_app(self) -> bool:
        return self.bal_type == "APP"

    @property
    def https_base(self) -> str:
        return f"https://{_url_host(self.host)}:{self.https_port}"

    @property
    def resolve_parts(self) -> tuple[str, int, str]:
        """(name, port, address) of SEGUR_SIM_RESOLVE, or what the autoconfig URL implies."""
        if self.resolve:
            # the name has no colon; the address may (IPv6, with or without brackets)
            name, port, address = self.resolve.split(":", 2)
            return name, int(port), address.strip("[]")
        url = urlsplit(self.autoconfig_url)
        return url.hostname or "", url.port or 443, self.host


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _load_endpoints(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read SEGUR_SIM_ENDPOINTS={path}: {exc}") from exc
    return data if isinstance(data, dict) else {}


def from_env(env: Mapping[str, str] | None = None, *, fault: str | None = None) -> ClientConfig:
    env = os.environ if env is None else env
    info = _load_endpoints(env.get("SEGUR_SIM_ENDPOINTS"))
    eps: dict[str, Any] = info.get("endpoints", {})
    psc: dict[str, Any] = info.get("psc", {})

    def get(name: str, default: Any = None) -> Any:
        value = env.get("SEGUR_SIM_" + name)
        return value if value not in (None, "") else default

    def port(name: str, endpoint: str) -> int:
        value = get(name, eps.get(endpoint, {}).get("port"))
        if value is None:
            return 0
        try:
            return int(value)
        except ValueError as exc:
            raise ConfigError(f"SEGUR_SIM_{name} is not a port number: {value!r}") from exc

    def number(name: str, default: float | None) -> float | None:
        value = get(name, default)
        try:
            return None if value is None else float(value)
        except ValueError as exc:
            raise ConfigError(f"SEGUR_SIM_{name} is not a number: {value!r}") from exc

    def path(name: str, default: Any = None) -> Path | None:
        value = get(name, default)
        return Path(value) if value else None

    action = get("ACTION")
    if action not in ACTIONS:
        raise ConfigError(f"SEGUR_SIM_ACTION must be one of {', '.join(ACTIONS)} (got {action!r})")
    bal = get("BAL")
    if not bal or "@" not in bal:
        raise ConfigError(f"SEGUR_SIM_BAL must be a mailbox address (got {bal!r})")
    bal_type = str(get("BAL_TYPE", "PER")).upper()
    if bal_type not in ("PER", "ORG", "APP"):
        raise ConfigError(f"SEGUR_SIM_BAL_TYPE must be PER, ORG or APP (got {bal_type!r})")
    host = get("HOST", info.get("host", "127.0.0.1"))
    domain = get("DOMAIN", info.get("domain", bal.rsplit("@", 1)[1]))
    https_port = port("HTTPS_PORT", "https")
    ca_file = path("CA_FILE", info.get("ca_bundle"))
    if ca_file is None:
        raise ConfigError("SEGUR_SIM_CA_FILE (the simulated IGC Santé root) is required")
    data_dir = Path(info["data_dir"]) if info.get("data_dir") else None
    cache_default = (
        data_dir / "refclient-cache"
        if data_dir
        else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "segur-sim-refclient"
    )
    return ClientConfig(
        action=action,
        bal=bal,
        bal_type=bal_type,
        nil=get("NIL", ""),
        correspondent=get("CORRESPONDENT", ""),
        domain=domain,
        host=host,
        smtp_port=port("SMTP_PORT", "smtp_starttls"),
        smtps_port=port("SMTPS_PORT", "smtps"),
        imap_port=port("IMAP_PORT", "imap_starttls"),
        imaps_port=port("IMAPS_PORT", "imaps"),
        http_port=port("HTTP_PORT", "http"),
        https_port=https_port,
        ca_file=ca_file,
        crl_url=get("CRL_URL", info.get("crl_url", "")),
        autoconfig_url=get(
            "AUTOCONFIG_URL",
            f"https://autoconfig.{domain}:{https_port}/mail/config-v1.1.xml",
        ),
        resolve=get("RESOLVE", ""),
        psc_token_endpoint=get("PSC_TOKEN_ENDPOINT", psc.get("token_endpoint", "")),
        psc_test_login_grant=get("PSC_TEST_LOGIN_GRANT", DEFAULT_TEST_LOGIN_GRANT),
        client_cert=path("CLIENT_CERT"),
        client_key=path("CLIENT_KEY"),
        client_p12=path("CLIENT_P12"),
        client_p12_password=get("CLIENT_P12_PASSWORD"),
        data_dir=data_dir,
        fault=fault or get("REFCLIENT_FAULT"),
        cache_dir=path("REFCLIENT_CACHE_DIR") or cache_default,
        backoff=number("REFCLIENT_BACKOFF", 1.0) or 0.0,
        keepalive=number("REFCLIENT_KEEPALIVE", 0.5) or 0.5,
        refresh_every=number("REFCLIENT_REFRESH_EVERY", None),
        cda_file=path("REFCLIENT_CDA"),
        alt_cert=path("REFCLIENT_ALT_CERT"),
        alt_key=path("REFCLIENT_ALT_KEY"),
        extra_ca=path("REFCLIENT_EXTRA_CA"),
        timeout=number("REFCLIENT_TIMEOUT", 15.0) or 15.0,
    )
