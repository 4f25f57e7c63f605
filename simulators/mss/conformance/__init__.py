"""MOTCO2-like conformance testing of an MSSanté client (the software under test).

- ``catalogue``: the unit tests and referencing cases, loaded from ``testcases/mss``.
- ``checks``: the judgement code, registered by catalogue ID.
- ``staging``: the server misbehaviour some steps need (legacy TLS, bad certificates...).
- ``runner``: runs a suite step by step, waits for the client, keeps the results.
"""
