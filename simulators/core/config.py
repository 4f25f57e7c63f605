"""Settings of a simulator instance and the layout of its data directory.

A data directory holds everything one instance owns: the SQLite store, the test PKI,
the PSC signing key, proof bundles and ``endpoints.json``. Settings come from
defaults, then ``DIR/config.toml`` if present, then explicit overrides (CLI flags).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

DEFAULT_DATA_DIR = Path(os.environ.get("SEGUR_SIM_DATA_DIR", "./segur-sim-data"))

# The simulated MSSanté domain. ``*.localhost`` names resolve to loopback in curl and
# browsers (RFC 6761), so ``autoconfig.mssante.localhost`` reaches the simulator.
DEFAULT_DOMAIN = "mssante.localhost"

# Port offsets added to --port-base: the real port number, so 10000 gives 10587, 10143...
PORT_OFFSETS: dict[str, int] = {
    "smtp_starttls": 587,
    "smtps": 465,
    "imap_starttls": 143,
    "imaps": 993,
    "http": 80,  # plain HTTP: CRL distribution point, autoconfig, PSC
    "https": 443,  # console, REST API, autoconfig, PSC over TLS
}


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port_base: int = 10000  # 0: every listener takes a free ephemeral port (tests)
    domain: str = DEFAULT_DOMAIN
    max_message_size: int = 20 * 1024 * 1024  # SMTP SIZE; MSSanté operators cap near this
    access_token_lifetime: int = 300  # seconds; PSC tokens live about 5 minutes
    refresh_token_lifetime: int = 8 * 3600
    auth_failure_delay: float = 0.5  # seconds added per consecutive failure (brute force)
    auth_failure_delay_max: float = 5.0
    smtp_timeout: int = 300  # idle timeout of an SMTP session, seconds
    imap_idle_timeout: int = 1800

    def port(self, name: str) -> int:
        if self.port_base == 0:
            return 0
        return self.port_base + PORT_OFFSETS[name]

    def with_overrides(self, **overrides: Any) -> Settings:
        known = {f.name for f in fields(self)}
        clean = {k: v for k, v in overrides.items() if v is not None and k in known}
        return replace(self, **clean)


def _check_loopback(host: str) -> None:
    # The simulator must never listen beyond this machine.
    if host not in {"127.0.0.1", "::1", "localhost"} and not host.startswith("127."):
        raise ValueError(f"refusing to bind {host!r}: segur-sim binds loopback addresses only")


@dataclass
class DataDir:
    """Paths inside a data directory. Creating it is idempotent."""

    root: Path
    settings: Settings = field(default_factory=Settings)

    @classmethod
    def open(cls, root: Path | str | None = None, **overrides: Any) -> DataDir:
        path = Path(root) if root is not None else DEFAULT_DATA_DIR
        path = path.expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        settings = Settings()
        config_file = path / "config.toml"
        if config_file.exists():
            with config_file.open("rb") as fh:
                settings = settings.with_overrides(**tomllib.load(fh))
        settings = settings.with_overrides(**overrides)
        _check_loopback(settings.host)
        return cls(path, settings)

    @property
    def db_path(self) -> Path:
        return self.root / "segur-sim.sqlite3"

    @property
    def pki_dir(self) -> Path:
        return self.root / "pki"

    @property
    def proofs_dir(self) -> Path:
        return self.root / "proofs"

    @property
    def endpoints_file(self) -> Path:
        return self.root / "endpoints.json"

    @property
    def psc_key_file(self) -> Path:
        return self.root / "psc" / "signing-key.pem"
