"""The pytest plugin, used as an editor would: its fixtures come from the ``pytest11``
entry point (segur-sim installed), not from a conftest."""

from __future__ import annotations

import email
import imaplib
from typing import Any

import pytest

from simulators.pytest_plugin import (
    SegurMailbox,
    assert_suite_passed,
    run_suite,
    segur_make_mailbox,
)


def test_per_org_and_app_mailboxes_exchange_mail_over_real_sockets(
    segur_sim: Any,
    segur_per_mailbox: SegurMailbox,
    segur_org_mailbox: SegurMailbox,
    segur_app_mailbox: SegurMailbox,
) -> None:
    assert segur_per_mailbox.type == "PER" and segur_per_mailbox.access_token
    assert segur_org_mailbox.type == "ORG" and segur_org_mailbox.refresh_token
    assert segur_app_mailbox.p12_path is not None and segur_app_mailbox.p12_path.exists()
    assert segur_app_mailbox.cert_path is not None and segur_app_mailbox.key_path is not None

    # PER -> APP over SMTP STARTTLS + XOAUTH2
    message = (
        f"From: <{segur_per_mailbox.address}>\r\nTo: <{segur_app_mailbox.address}>\r\n"
        "Subject: plugin\r\nX-Mss-Sample: yes\r\n\r\nBonjour\r\n"
    )
    with segur_per_mailbox.smtp() as smtp:
        smtp.sendmail(segur_per_mailbox.address, [segur_app_mailbox.address], message)
    # the APP mailbox reads it over IMAP STARTTLS with its client certificate
    imap = segur_app_mailbox.imap()
    try:
        imap.select("INBOX")
        _typ, data = imap.uid("SEARCH", "ALL")
        uids = data[0].split()
        assert len(uids) == 1
        _typ, fetched = imap.uid("FETCH", uids[0], "(RFC822)")
        first = fetched[0]
        assert isinstance(first, tuple)
        parsed = email.message_from_bytes(first[1])
        assert parsed["Subject"] == "plugin" and parsed["X-Mss-Sample"] == "yes"
    finally:
        imap.logout()

    # ORG: XOAUTH2 on IMAP; a wrong token is refused
    org = segur_org_mailbox.imap()
    org.logout()
    anonymous = segur_org_mailbox.imap(login=False)
    try:
        with pytest.raises(imaplib.IMAP4.error):
            anonymous.authenticate(
                "XOAUTH2", lambda _c: segur_org_mailbox.xoauth2("not-a-token").encode()
            )
    finally:
        anonymous.shutdown()

    # helpers: the store view and more mailboxes on the same simulator
    assert len(segur_app_mailbox.inbox()) == 1
    extra = segur_make_mailbox(segur_sim, "PER", "dr.extra")
    assert extra.address == f"dr.extra@{segur_sim.services.domain}"
    assert segur_sim.endpoints["simulation"] is True
    assert segur_per_mailbox.https_url.startswith("https://127.0.0.1:")


def test_the_scope_option_is_registered(request: pytest.FixtureRequest) -> None:
    assert request.config.getoption("--segur-sim-scope") in (None, "function", "module", "session")
    assert request.config.getini("segur_sim_scope") == "function"


def test_a_conformance_suite_runs_against_the_reference_client(
    segur_run_suite: Any, segur_per_mailbox: SegurMailbox
) -> None:
    run = segur_run_suite(
        "per-org", segur_per_mailbox, "DEV935997", tests=["MSS-08", "MSS-14"], step_timeout=20
    )
    assert_suite_passed(run)
    assert [t.test_id for t in run.tests] == ["MSS-08", "MSS-14"]
    assert run.proof_dir is not None


def test_assert_suite_passed_lists_the_failed_tests(
    segur_sim: Any, segur_per_mailbox: SegurMailbox
) -> None:
    run = run_suite(
        segur_sim,
        "per-org",
        segur_per_mailbox,
        "DEV935997",
        tests=["MSS-08"],
        step_timeout=20,
        fault="wrong-nil",
    )
    with pytest.raises(AssertionError) as failed:
        assert_suite_passed(run)
    text = str(failed.value)
    assert "MSS-08 X-MSS-NIL [fail]" in text
    assert "expected:" in text and "observed:" in text
    assert "requirements: ECO.2.4.3" in text
