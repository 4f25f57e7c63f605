"""The MSS reference client: an LPS stand-in that follows the MSSanté client rules.

``python -m simulators.mss.refclient`` reads the driver contract of
docs/mss-conformance.md from the environment and performs ``$SEGUR_SIM_ACTION``.
``--fault NAME`` (or ``SEGUR_SIM_REFCLIENT_FAULT``) makes it break exactly one rule,
so the conformance runner can prove each unit test fails when it should
(``--list-faults``).

Modules: ``config`` (environment), ``faults`` (the variants), ``tls`` (contexts, CRL),
``tokens`` (PSC), ``identity`` (mailbox label, client certificate), ``smtp`` / ``imap``
(sessions), ``cda`` / ``pdfa`` / ``mails`` (what is sent), ``autoconfig``,
``keepalive`` (keep-session-open), ``actions`` and ``__main__``.
"""
