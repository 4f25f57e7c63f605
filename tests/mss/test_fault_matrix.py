"""Every faulty variant of the reference client over its whole suite.

Each fault must fail its own unit test, and no other test but the ones its catalogue
entry (``Fault.also_fails``) says it genuinely breaks too, with the reason: a client
that cannot log in submits nothing, so the mail tests fail with it. Any other failure
is a check that fires on the wrong thing, and any passing target test is a fault the
simulator did not notice. ``bench/fault_matrix.py`` prints the same matrix by hand.

The runs use the long-lived driver (one reference-client process per run) and the
short CI timings of the benchmark, on one simulator for the whole module.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulators.controller import SimulatorController
from simulators.core.store.mail import MailboxType
from simulators.core.verdict import Status
from simulators.mss.conformance.api import reference_client_command
from simulators.mss.conformance.runner import Runner, RunRequest
from simulators.mss.refclient.faults import FAULTS, Fault

DOMAIN = "mssante.localhost"
PER = f"dr.matrix@{DOMAIN}"
APP = f"labo.matrix@{DOMAIN}"
CI_TIMINGS = {
    "SEGUR_SIM_REFCLIENT_BACKOFF": "0.2",
    "SEGUR_SIM_REFCLIENT_KEEPALIVE": "0.2",
    "SEGUR_SIM_REFCLIENT_REFRESH_EVERY": "0.5",
}


@pytest.fixture(scope="module")
def matrix_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorController]:
    saved = {name: os.environ.get(name) for name in CI_TIMINGS}
    os.environ.update(CI_TIMINGS)
    data_dir = tmp_path_factory.mktemp("fault-matrix") / "data"
    try:
        with SimulatorController(
            Path(data_dir), auth_failure_delay=0.05, access_token_lifetime=2
        ) as sim:
            assert sim.services is not None
            sim.services.store.create_mailbox(PER, MailboxType.PER, "Dr_Alice_MATRIX", "CABINET")
            sim.services.store.create_mailbox(APP, MailboxType.APP, None, "LABO MATRIX")
            yield sim
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def suite_of(fault: Fault) -> tuple[str, str]:
    return fault.suite, APP if fault.suite == "app" else PER


def test_every_declared_consequence_is_in_the_faults_suite() -> None:
    from simulators.mss.conformance.catalogue import default_catalogue

    catalogue = default_catalogue()
    for fault in FAULTS.values():
        suite, _box = suite_of(fault)
        tests = set(catalogue.suite(suite).tests)
        assert fault.test_id in tests, fault.name
        assert set(fault.also_fails) <= tests, (fault.name, set(fault.also_fails) - tests)
        assert fault.test_id not in fault.also_fails, fault.name
        assert bool(fault.also_fails) == bool(fault.because), f"{fault.name}: say why"


@pytest.mark.parametrize("name", list(FAULTS))
def test_a_fault_fails_its_test_and_only_what_it_breaks(
    matrix_sim: SimulatorController, name: str
) -> None:
    fault = FAULTS[name]
    suite, box = suite_of(fault)
    assert matrix_sim.simulator is not None and matrix_sim.services is not None
    request = RunRequest(
        suite,
        box,
        "DEV935997",
        client_cmd=reference_client_command(name, serve=True),
        driver="persistent",
        step_timeout=12,
        settle=0.5,
    )
    runner = Runner(matrix_sim.simulator)
    run = runner.plan(request)
    # Earlier faults' refused logins must not slow this run (per-address throttle).
    matrix_sim.services.auth.throttle.succeeded(matrix_sim.simulator.endpoints["host"])
    matrix_sim.call(runner.execute(run, request), timeout=900)

    expected = {fault.test_id, *fault.also_fails}
    failed = {t.test_id for t in run.tests if t.status is not Status.PASS}
    messages = {t.test_id: t.verdict.message if t.verdict else t.status.value for t in run.tests}
    assert fault.test_id in failed, f"{name}: {fault.test_id} passed, the fault went unnoticed"
    unexpected = {t: messages[t] for t in sorted(failed - expected)}
    assert not unexpected, f"{name} ({suite}) also failed: {unexpected}"
    missing = sorted(expected - failed)
    assert not missing, f"{name} ({suite}): declared as broken but passed: {missing}"
