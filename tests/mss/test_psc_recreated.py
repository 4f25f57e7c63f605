"""A PSC access token must not outlive the mailbox it was issued for.

Access tokens are stateless JWTs and the PSC subject derives from the address: without
a binding, a token issued before ``bal delete`` would log in again once the same
address is created again, within its lifetime. Each token names the mailbox row it was
issued for (``segur_sim_mailbox``), and a token issued before the mailbox was created is
refused; both with the reason the authentication layer gives for any refused token.

End to end: a real simulator on loopback, the mailbox deleted and created again over
its REST API (httpx, HTTPS), the tokens presented with the standard library's smtplib
and imaplib over STARTTLS + XOAUTH2. Then the two rules one by one on the service.
"""

from __future__ import annotations

import base64
import dataclasses
import imaplib
import smtplib
import ssl
from collections.abc import Iterator

import httpx
import jwt
import pytest

from simulators.controller import SimulatorController
from simulators.core.store.mail import Mailbox
from simulators.mss.http_routes import TEST_LOGIN_GRANT
from simulators.mss.psc import MAILBOX_CLAIM, TokenError
from tests.conftest import DOMAIN, make_per

API = "/api/mss/mailboxes"


@pytest.fixture
def http(sim: SimulatorController) -> Iterator[httpx.Client]:
    base = str(sim.endpoints["console_url"]).rstrip("/")
    trust = ssl.create_default_context(cafile=sim.endpoints["ca_bundle"])
    with httpx.Client(base_url=base, verify=trust, timeout=30) as client:
        yield client


def xoauth2_raw(address: str, token: str) -> str:
    return f"user={address}\x01auth=Bearer {token}\x01\x01"


def xoauth2(address: str, token: str) -> str:
    return base64.b64encode(xoauth2_raw(address, token).encode()).decode()


def smtp_login(sim: SimulatorController, address: str, token: str) -> tuple[int, bytes]:
    """AUTH XOAUTH2 over STARTTLS with smtplib; the server's final answer."""
    assert sim.services is not None
    with smtplib.SMTP("127.0.0.1", sim.port("smtp_starttls"), timeout=10) as client:
        client.ehlo("lps.example")
        client.starttls(context=sim.services.pki.client_ssl_context(None))
        client.ehlo("lps.example")
        code, answer = client.docmd("AUTH", "XOAUTH2 " + xoauth2(address, token))
        if code == 334:  # the RFC 7628 error challenge: an empty line gets the final answer
            code, answer = client.docmd("")
        return code, answer


def imap_login(sim: SimulatorController, address: str, token: str) -> str:
    """AUTHENTICATE XOAUTH2 over STARTTLS with imaplib: "OK", or the refusal text."""
    assert sim.services is not None
    client = imaplib.IMAP4("127.0.0.1", sim.port("imap_starttls"), timeout=10)
    client.starttls(sim.services.pki.client_ssl_context(None))
    try:
        typ, _data = client.authenticate(  # imaplib does the base64
            "XOAUTH2", lambda _c: xoauth2_raw(address, token).encode()
        )
    except imaplib.IMAP4.error as refused:
        client.shutdown()
        return str(refused)
    client.logout()
    return str(typ)


def test_a_token_of_the_deleted_mailbox_is_refused_after_it_is_created_again(
    sim: SimulatorController, http: httpx.Client
) -> None:
    assert sim.services is not None
    before = make_per(sim, "dr.recree")
    address = before.address
    assert smtp_login(sim, address, before.token)[0] == 235
    assert imap_login(sim, address, before.token) == "OK"

    deleted = http.delete(f"{API}/{address}")
    assert deleted.status_code == 200, deleted.text
    created = http.post(API, json={"address": address, "type": "PER"})
    assert created.status_code == 201, created.text
    again = sim.services.store.get_mailbox(address)
    assert again is not None and again.created_at > before.mailbox.created_at

    # the old token: same subject, same signature, still within its lifetime; refused
    code, answer = smtp_login(sim, address, before.token)
    assert code == 535, answer
    assert b"PSC token refused: token issued" in answer and b"a deleted mailbox" in answer
    refused = imap_login(sim, address, before.token)
    assert "AUTHENTICATIONFAILED" in refused and "PSC token refused: token issued" in refused
    assert "a deleted mailbox" in refused
    recorder = sim.services.recorder  # the reason is kept for the verdicts too
    recorder.flush()
    last = recorder.sessions(endpoint="imap_starttls")[-1].fields
    assert "a deleted mailbox" in str(last.get("auth_error"))
    # and its refresh token went with the mailbox
    refresh = http.post(
        sim.endpoints["psc"]["token_endpoint"],
        data={"grant_type": "refresh_token", "refresh_token": before.refresh_token},
    )
    assert refresh.status_code == 400 and "unknown refresh token" in refresh.text

    # a token of the new mailbox works, over both protocols, at once
    login = http.post(
        sim.endpoints["psc"]["token_endpoint"],
        data={"grant_type": TEST_LOGIN_GRANT, "mailbox": address},
    )
    assert login.status_code == 200, login.text
    fresh = login.json()
    assert smtp_login(sim, address, fresh["access_token"])[0] == 235
    assert imap_login(sim, address, fresh["access_token"]) == "OK"
    # refreshed tokens are bound to the new mailbox as well
    refreshed = sim.services.psc.refresh(fresh["refresh_token"])
    assert imap_login(sim, address, refreshed.access_token) == "OK"


def claims_of(token: str) -> dict[str, object]:
    decoded: dict[str, object] = jwt.decode(token, options={"verify_signature": False})
    return decoded


def test_the_rules_one_by_one(sim: SimulatorController) -> None:
    """Second granularity of iat, and the binding when the row id is given again."""
    assert sim.services is not None
    psc = sim.services.psc
    box = make_per(sim, "dr.regles").mailbox
    token = psc.issue(box).access_token
    iat = int(claims_of(token)["iat"])  # type: ignore[call-overload]
    assert claims_of(token)[MAILBOX_CLAIM]

    # A token issued in the second its mailbox was created still works, even when the
    # creation time (sub-second) is later than the issue time read as a whole second.
    late_in_the_second = dataclasses.replace(box, created_at=iat + 0.75)
    same_second = psc.issue(late_in_the_second).access_token
    assert int(claims_of(same_second)["iat"]) >= iat  # type: ignore[call-overload]
    assert psc.validate(same_second, late_in_the_second).subject == psc.subject_for(box)

    # The same row id (SQLite may give a deleted row's id to the next mailbox), the same
    # address, created again within the same second: only the binding tells them apart.
    recreated: Mailbox = dataclasses.replace(box, created_at=iat + 0.5)
    with pytest.raises(TokenError, match="token issued for a deleted mailbox of the same address"):
        psc.validate(token, recreated)

    # Created again a later second: iat is before the creation.
    later: Mailbox = dataclasses.replace(box, created_at=iat + 5.0)
    with pytest.raises(TokenError, match=r"token issued at .* before dr\.regles@"):
        psc.validate(token, later)
    assert later.address == f"dr.regles@{DOMAIN}"
