"""Everything the mail servers share, opened once per data directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simulators.core.config import DataDir, Settings
from simulators.core.pki import TestPKI
from simulators.core.recorder import Recorder
from simulators.core.store.database import Database
from simulators.core.store.mail import MailboxDeletion, SqliteMailStore
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

    def delete_mailbox(self, address: str) -> DeletedMailbox | None:
        """Revoke the mailbox's PSC refresh tokens, then remove it from the store.

        Live SMTP/IMAP sessions are the running server's business
        (``Simulator.drop_mail_sessions``); conformance runs and proof bundles that name
        the address are archives and are not touched. ``None`` for an unknown mailbox.
        """
        box = self.store.get_mailbox(address)
        if box is None:
            return None
        revoked = self.psc.revoke_mailbox_sessions(box)
        deletion = self.store.delete_mailbox(box.id)
        if deletion is None:  # deleted meanwhile by another process
            return None
        return DeletedMailbox(deletion, revoked)


@dataclass(frozen=True)
class DeletedMailbox:
    deletion: MailboxDeletion
    refresh_tokens_revoked: int

    def as_dict(self) -> dict[str, Any]:
        d = self.deletion
        return {
            "address": d.mailbox.address,
            "type": d.mailbox.type.value,
            "folders": d.folders,
            "messages": d.messages,
            "bodies_freed": d.bodies_freed,
            "submissions_kept": d.submissions_kept,
            "refresh_tokens_revoked": self.refresh_tokens_revoked,
        }
