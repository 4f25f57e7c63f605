"""Fixtures of the robustness suite: one ``segur-sim serve`` subprocess shared by the
fuzzing and hostile-input modules (auth back-off made tiny so that fuzzed AUTH
failures do not slow the run down; the brute-force test has its own server)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .support import LiveServer, PerCredentials, live_server


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("live")
    with live_server(root, auth_failure_delay=0.001, auth_failure_delay_max=0.005) as server:
        yield server
        # A test may break a session; none may break the server.
        assert server.server.alive(), "the server died:\n" + server.server.stderr_tail()
        assert not server.tracebacks(), server.tracebacks()[0]


@pytest.fixture(scope="session")
def fuzz_box(live: LiveServer) -> PerCredentials:
    return live.per("dr.fuzz")
