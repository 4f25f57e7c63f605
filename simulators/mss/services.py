"""Everything the mail servers share, opened once per data directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simulators.core.config import DataDir, Settings
from simulators.core.pki import TestPKI
from simulators.core.recorder import Recorder
from simulators.core.store.database import Database
from simulators.core.store.mail import SqliteMailStore
from simulators.mss.auth import Authenticator, Throttle
from simulators.mss.psc import PscService


@dataclass
class MssServices:
    data: DataDir
    db: Database
    store: SqliteMailStore
    recorder: Recorder
    pki: TestPKI
    psc: PscService
    auth: Authenticator

    @property
    def settings(self) -> Settings:
        return self.data.settings

    @property
    def domain(self) -> str:
        return self.settings.domain

    @classmethod
    def open(cls, root: Path | str | None = None, **overrides: Any) -> MssServices:
        data = DataDir.open(root, **overrides)
        settings = data.settings
        db = Database(data.db_path)
        store = SqliteMailStore(db, [settings.domain])
        recorder = Recorder(db)
        pki = TestPKI.load_or_create(data.pki_dir, settings.domain)
        psc = PscService(
            db,
            data.psc_key_file,
            issuer=f"https://psc.{settings.domain}/auth/realms/esante-wallet",
            access_lifetime=settings.access_token_lifetime,
            refresh_lifetime=settings.refresh_token_lifetime,
        )
        throttle = Throttle(settings.auth_failure_delay, settings.auth_failure_delay_max)
        auth = Authenticator(store, psc, pki, throttle)
        return cls(data, db, store, recorder, pki, psc, auth)

    def close(self) -> None:
        self.db.close()
