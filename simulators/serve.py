"""``segur-sim serve``: every simulator in one asyncio loop, on loopback.

Start order matters: the HTTP socket is bound first, because its port goes into
the CRL distribution point of the server certificates the mail listeners present.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import os
import signal
import socket
import ssl
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from simulators import DISCLAIMER, __version__
from simulators.core import eventloop
from simulators.core.config import DEFAULT_DATA_DIR

# The servers' modules are imported by Simulator.running, once the keys of a new data
# directory are being generated in the background (see _prepare_start).
if TYPE_CHECKING:
    from simulators.mss.conformance.api import RunService
    from simulators.mss.services import MssServices
    from simulators.mss.smtp import SmtpListener

log = logging.getLogger("segur_sim")


_START_MODULES = (
    "simulators.mss.services",
    "simulators.mss.smtp",
    "simulators.mss.tls_profiles",
    "simulators.mss.imap",
    "simulators.mss.http_routes",  # FastAPI
    "uvicorn",
    "simulators.web.app",
    "simulators.cnda.api",
    "simulators.interop.api",
    "simulators.web.console",
    "simulators.mss.conformance.api",
)


def _prepare_start(data_dir: Path | str, overrides: dict[str, Any]) -> None:
    """Overlap the two slow parts of a first start: RSA key generation and imports.

    A new data directory needs six RSA keys (the PKI's four authorities, the server
    certificate, the PSC signing key). OpenSSL generates them without the GIL, so a
    background thread makes them on another core while this thread imports what the
    servers and the web app need; :func:`simulators.core.pki.new_key` hands them out.
    """
    from simulators.core.config import DataDir
    from simulators.core.pki import TestPKI, generate_keys_ahead

    data = DataDir.open(data_dir, **overrides)
    psc_key = 0 if data.psc_key_file.exists() else 1
    generate_keys_ahead(TestPKI.keys_to_create(data.pki_dir) + psc_key)
    # What start() uses, in the order it uses it.
    for module in _START_MODULES:
        # A module that fails to import here fails again where start() imports it,
        # which reports it (or, for the IMAP server, logs that it is missing).
        with contextlib.suppress(ImportError):
            importlib.import_module(module)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise click.ClickException(
            f"cannot listen on {host}:{port}: {exc.strerror}. "
            "Is another segur-sim running? Choose another --port-base."
        ) from exc
    sock.listen(128)
    sock.setblocking(False)
    return sock


class Simulator:
    """The running servers of one data directory. Use :meth:`running` in tests."""

    def __init__(self, services: MssServices) -> None:
        self.services = services
        self.endpoints: dict[str, Any] = {}
        self.smtp: dict[str, SmtpListener] = {}
        self.imap: dict[str, Any] = {}
        self._http_servers: list[Any] = []
        self._sockets: list[socket.socket] = []
        self._tls_cache: dict[str, ssl.SSLContext] = {}
        self.tls_profile = "normal"
        self.crl_url: str | None = None
        self.runs: RunService | None = None  # conformance runs started over HTTP
        self.started_at = 0.0

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, data_dir: Path | str, **overrides: Any) -> AsyncIterator[Simulator]:
        _prepare_start(data_dir, overrides)
        from simulators.mss.services import MssServices

        services = MssServices.open(data_dir, **overrides)
        sim = cls(services)
        try:
            await sim.start()
            yield sim
        finally:
            await sim.stop()
            services.close()

    # ---- lifecycle ----------------------------------------------------------------------
    async def start(self) -> dict[str, Any]:
        self.started_at = time.time()
        services = self.services
        settings = services.settings
        host = settings.host
        http_sock = _bind(host, settings.port("http"))
        https_sock = _bind(host, settings.port("https"))
        self._sockets += [http_sock, https_sock]
        http_port = http_sock.getsockname()[1]
        https_port = https_sock.getsockname()[1]
        url_host = f"[{host}]" if ":" in host else host
        crl_url = f"http://{url_host}:{http_port}/crl/org.crl"
        self.crl_url = crl_url
        ctx = self._tls_context("normal")
        from simulators.mss.smtp import SmtpListener

        ports: dict[str, int] = {"http": http_port, "https": https_port}
        for name, implicit in (("smtp_starttls", False), ("smtps", True)):
            listener = SmtpListener(services, endpoint=name, implicit_tls=implicit, ssl_context=ctx)
            ports[name] = await listener.start(host, settings.port(name))
            self.smtp[name] = listener
        ports.update(await self._start_imap(host, ctx))

        self.endpoints = self._describe(host, url_host, ports, crl_url)
        await self._start_http(http_sock, https_sock, crl_url)
        services.data.endpoints_file.write_text(json.dumps(self.endpoints, indent=2))
        return self.endpoints

    # ---- staged server behaviour (the conformance runner uses these) -------------------
    def _tls_context(self, profile: str) -> ssl.SSLContext:
        if profile not in self._tls_cache:
            from simulators.mss.tls_profiles import server_context

            self._tls_cache[profile] = server_context(self.services.pki, profile, self.crl_url)
        return self._tls_cache[profile]

    def set_tls_profile(self, profile: str) -> None:
        """Make every mail endpoint present ``profile`` to new connections and STARTTLS."""
        ctx = self._tls_context(profile)
        for listener in self.smtp.values():
            listener.ssl_context = ctx
        for server in self.imap.values():
            server.ssl_context = ctx
        self.tls_profile = profile

    async def drop_mail_sessions(self, address: str, reason: str = "server-drop") -> int:
        """Close the live SMTP and IMAP sessions of one mailbox from the server side."""
        count = sum(listener.drop_sessions(address, reason) for listener in self.smtp.values())
        for server in self.imap.values():
            count += await server.drop_sessions(address, reason)
            break  # the IMAP listeners share one session registry
        return count

    async def _start_imap(self, host: str, ctx: Any) -> dict[str, int]:
        try:
            from simulators.mss.imap import ImapServer
        except ImportError:
            log.warning("IMAP server not available in this build")
            return {}
        ports: dict[str, int] = {}
        settings = self.services.settings
        for name, implicit in (("imap_starttls", False), ("imaps", True)):
            server = ImapServer(self.services)
            port = await server.start(
                host,
                settings.port(name),
                implicit_tls=implicit,
                ssl_context=ctx,
                endpoint_name=name,
            )
            ports[name] = int(port) if port is not None else settings.port(name)
            self.imap[name] = server
        return ports

    async def _start_http(
        self, http_sock: socket.socket, https_sock: socket.socket, crl_url: str
    ) -> None:
        import uvicorn

        from simulators.web.app import create_app

        app = create_app(self.services, lambda: self.endpoints)
        from simulators.mss.conformance.api import RunService
        from simulators.mss.conformance.api import build_router as build_runs_router

        self.runs = RunService(self)
        app.state.runs = self.runs  # the console's runs pages start runs through it
        app.include_router(build_runs_router(self.runs))
        creds = self.services.pki.server_credentials("valid", crl_url)
        for sock, tls in ((http_sock, False), (https_sock, True)):
            config = uvicorn.Config(
                app,
                log_level="warning",
                access_log=False,
                lifespan="off",
                ssl_certfile=str(creds.chain_path) if tls else None,
                ssl_keyfile=str(creds.key_path) if tls else None,
            )
            config.load()
            server = uvicorn.Server(config)
            # serve() would also capture signals; we own them, so run its steps directly.
            server.lifespan = config.lifespan_class(config)
            await server.startup(sockets=[sock])
            self._http_servers.append(server)

    async def stop(self) -> None:
        if self.runs is not None:
            await self.runs.stop()
        for server in self._http_servers:
            server.should_exit = True
            with contextlib.suppress(Exception):
                await server.shutdown()
        self._http_servers = []
        for listener in self.smtp.values():
            await listener.stop()
        for imap in self.imap.values():
            with contextlib.suppress(Exception):
                await imap.stop()
        self.smtp, self.imap = {}, {}
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()
        self._sockets = []
        with contextlib.suppress(Exception):
            self.services.recorder.flush()

    # ---- description --------------------------------------------------------------------
    def _describe(
        self, host: str, url_host: str, ports: dict[str, int], crl_url: str
    ) -> dict[str, Any]:
        services = self.services
        tls_modes = {
            "smtp_starttls": "starttls",
            "smtps": "implicit",
            "imap_starttls": "starttls",
            "imaps": "implicit",
            "http": "none",
            "https": "implicit",
        }
        https = f"https://{url_host}:{ports['https']}"
        from simulators.mss.http_routes import (
            AUTOCONFIG_PATH,
            PSC_JWKS_PATH,
            PSC_REVOKE_PATH,
            PSC_TOKEN_PATH,
        )

        return {
            "simulation": True,
            "disclaimer": DISCLAIMER,
            "version": __version__,
            "pid": os.getpid(),
            "event_loop": eventloop.loop_name(asyncio.get_running_loop()),
            "data_dir": str(services.data.root),
            "host": host,
            "domain": services.domain,
            "endpoints": {
                name: {"host": host, "port": port, "tls": tls_modes[name]}
                for name, port in ports.items()
            },
            "ca_bundle": str(services.pki.ca_bundle_path),
            "crl_url": crl_url,
            "console_url": https + "/",
            "autoconfig_url": https + AUTOCONFIG_PATH,
            "psc": {
                "issuer": services.psc.issuer,
                "audience": services.psc.audience,
                "token_endpoint": https + PSC_TOKEN_PATH,
                "jwks_uri": https + PSC_JWKS_PATH,
                "revocation_endpoint": https + PSC_REVOKE_PATH,
            },
        }


def describe_for_humans(endpoints: dict[str, Any], ready_in: float) -> str:
    eps = endpoints["endpoints"]
    lines = [
        f"segur-sim {endpoints['version']} ready in {ready_in:.2f} s"
        f"  (data: {endpoints['data_dir']})",
        f"  {DISCLAIMER}",
        f"  domain          {endpoints['domain']}",
    ]
    labels = {
        "smtp_starttls": "SMTP submission (STARTTLS)",
        "smtps": "SMTP submission (implicit TLS)",
        "imap_starttls": "IMAP (STARTTLS)",
        "imaps": "IMAP (implicit TLS)",
        "http": "HTTP (CRL, autoconfig)",
        "https": "HTTPS (console, API, PSC)",
    }
    for name, label in labels.items():
        if name in eps:
            lines.append(f"  {label:32} {eps[name]['host']}:{eps[name]['port']}")
    lines += [
        f"  CA bundle       {endpoints['ca_bundle']}",
        f"  PSC token       {endpoints['psc']['token_endpoint']}",
        f"  autoconfig      {endpoints['autoconfig_url']}",
        f"  console         {endpoints['console_url']}",
        "  Ctrl-C or SIGTERM stops it.",
    ]
    return "\n".join(lines)


async def _serve_forever(data_dir: Path, overrides: dict[str, Any], quiet: bool) -> None:
    started = time.perf_counter()
    async with Simulator.running(data_dir, **overrides) as sim:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if not quiet:
            click.echo(describe_for_humans(sim.endpoints, time.perf_counter() - started))
        sys.stdout.flush()
        await stop.wait()
        if not quiet:
            click.echo("segur-sim: stopping")
    # The validation worker processes (started on the first HTTP validation) end with
    # the server, not whenever the interpreter gets round to it.
    if "simulators.interop.pool" in sys.modules:
        sys.modules["simulators.interop.pool"].close_shared_pool()


@click.command("serve")
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=DEFAULT_DATA_DIR,
    show_default=True,
    help="Where the store, PKI and proofs live.",
)
@click.option("--host", default=None, help="Loopback address to bind (127.0.0.1 or ::1).")
@click.option(
    "--port-base",
    type=int,
    default=None,
    help="Ports are BASE+587, +465, +143, +993, +80, +443 (default 10000; 0 = free ports).",
)
@click.option("--quiet", is_flag=True, help="Print nothing; read DIR/endpoints.json instead.")
def serve_command(data_dir: Path, host: str | None, port_base: int | None, quiet: bool) -> None:
    """Start every simulator (SMTP, IMAP, PSC, web) until Ctrl-C or SIGTERM."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    try:
        with asyncio.Runner(loop_factory=eventloop.loop_factory()) as runner:
            runner.run(_serve_forever(data_dir, {"host": host, "port_base": port_base}, quiet))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
