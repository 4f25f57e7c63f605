"""Shared fixtures: a running simulator on free loopback ports, and test mailboxes."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from simulators.controller import SimulatorController
from simulators.core.pki import ClientCredentials
from simulators.core.store.mail import Mailbox, MailboxType

REPO_ROOT = Path(__file__).resolve().parents[1]
CORPUS = REPO_ROOT.parent / "shared" / "corpus"
DOMAIN = "mssante.localhost"


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimulatorController]:
    # Short auth back-off so that refusal tests stay quick; brute force has its own test.
    with SimulatorController(tmp_path / "data", auth_failure_delay=0.05) as controller:
        yield controller


@dataclass
class PerBox:
    mailbox: Mailbox
    token: str
    refresh_token: str

    @property
    def address(self) -> str:
        return self.mailbox.address

    def xoauth2(self, token: str | None = None) -> str:
        raw = f"user={self.address}\x01auth=Bearer {token or self.token}\x01\x01"
        return base64.b64encode(raw.encode()).decode()


@dataclass
class AppBox:
    mailbox: Mailbox
    creds: ClientCredentials

    @property
    def address(self) -> str:
        return self.mailbox.address


def make_per(sim: SimulatorController, local: str = "dr.martin", type_: str = "PER") -> PerBox:
    assert sim.services is not None
    box = sim.services.store.create_mailbox(f"{local}@{DOMAIN}", MailboxType(type_))
    pair = sim.services.psc.issue(box)
    return PerBox(box, pair.access_token, pair.refresh_token)


def make_app(sim: SimulatorController, local: str = "labo", kind: str = "valid") -> AppBox:
    assert sim.services is not None
    address = f"{local}@{DOMAIN}"
    box = sim.services.store.get_mailbox(address) or sim.services.store.create_mailbox(
        address, MailboxType.APP, entity="LABO SIMU"
    )
    return AppBox(box, sim.services.pki.client_credentials(box.address, box.entity, kind))


@pytest.fixture
def per(sim: SimulatorController) -> PerBox:
    return make_per(sim)


@pytest.fixture
def app_box(sim: SimulatorController) -> AppBox:
    return make_app(sim)


def inbox_raw(sim: SimulatorController, address: str) -> list[bytes]:
    """The raw messages of a mailbox's INBOX, read from the store."""
    assert sim.services is not None
    store = sim.services.store
    box = store.get_mailbox(address)
    assert box is not None
    folder = store.get_folder(box.id, "INBOX")
    assert folder is not None
    rows = store.fetch_rows(folder.id, [uid for uid, _ in store.list_uids(folder.id)])
    return [store.blob(r.blob_id) for r in rows]
