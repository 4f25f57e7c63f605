"""Mail autoconfiguration (ECO 1.1.9, CONF.04): the Thunderbird config-v1.1 XML at
``https://autoconfig.<domain>/mail/config-v1.1.xml?emailaddress=<mailbox>``.

On loopback, ``autoconfig.<domain>`` may not resolve: like ``curl --resolve``, the
client connects to the address of SEGUR_SIM_RESOLVE and still sends the name in SNI
and Host, and checks the certificate against that name.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from simulators.interop.safe_xml import UnsafeOrInvalidXml, parse_xml
from simulators.mss.refclient.client import GiveUp, RefClient
from simulators.mss.refclient.web import request

log = logging.getLogger("refclient")


@dataclass(frozen=True)
class ServerSettings:
    kind: str  # imap or smtp
    hostname: str
    port: int
    socket_type: str  # STARTTLS, SSL or plain
    authentication: str

    @property
    def starttls(self) -> bool:
        return self.socket_type.upper() == "STARTTLS"


def fetch(client: RefClient) -> dict[str, ServerSettings]:
    """The incoming (imap) and outgoing (smtp) servers the domain publishes."""
    cfg = client.cfg
    url = f"{cfg.autoconfig_url}?emailaddress={quote(cfg.bal, safe='@')}"
    name, port, address = cfg.resolve_parts
    target = urlsplit(cfg.autoconfig_url)
    connect_to = address if (target.hostname, target.port or 443) == (name, port) else None
    log.info("autoconfig: GET %s%s", url, f" (connecting to {connect_to})" if connect_to else "")
    try:
        status, _h, body = request(
            "GET", url, context=client.https_context(), connect_to=connect_to, timeout=cfg.timeout
        )
    except OSError as exc:
        raise GiveUp(f"autoconfig: {url} unreachable: {exc}") from exc
    if status != 200:
        raise GiveUp(f"autoconfig: {url} answered HTTP {status}")
    try:
        root = parse_xml(body).getroot()
    except UnsafeOrInvalidXml as exc:
        raise GiveUp(f"autoconfig: unreadable XML: {exc}") from exc
    servers: dict[str, ServerSettings] = {}
    for tag in ("incomingServer", "outgoingServer"):
        for el in root.iter(tag):
            kind = (el.get("type") or "").lower()
            if kind not in ("imap", "smtp") or kind in servers:
                continue
            try:
                servers[kind] = ServerSettings(
                    kind=kind,
                    hostname=(el.findtext("hostname") or "").strip(),
                    port=int((el.findtext("port") or "0").strip()),
                    socket_type=(el.findtext("socketType") or "").strip(),
                    authentication=(el.findtext("authentication") or "").strip(),
                )
            except ValueError as exc:
                raise GiveUp(f"autoconfig: bad {kind} port: {exc}") from exc
    for kind, settings in servers.items():
        log.info(
            "autoconfig: %s %s:%d %s %s",
            kind,
            settings.hostname,
            settings.port,
            settings.socket_type,
            settings.authentication,
        )
    return servers
