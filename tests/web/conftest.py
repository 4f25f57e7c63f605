"""Fixtures of the web tests: one set of services per module (PKI generated once)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from web_helpers import DOMAIN, Console, build_app

from simulators.core.store.mail import Mailbox, MailboxType
from simulators.mss.services import MssServices

_ids = itertools.count(1)


@pytest.fixture(scope="module")
def web_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MssServices]:
    services = MssServices.open(tmp_path_factory.mktemp("web") / "data")
    yield services
    services.close()


@pytest.fixture(scope="module")
def console(web_services: MssServices) -> Console:
    return Console(build_app(web_services))


@pytest.fixture
def new_box(web_services: MssServices):  # type: ignore[no-untyped-def]
    """A factory of uniquely named mailboxes."""

    def make(type_: str = "PER") -> Mailbox:
        address = f"{type_.lower()}{next(_ids)}@{DOMAIN}"
        return web_services.store.create_mailbox(address, MailboxType(type_))

    return make
