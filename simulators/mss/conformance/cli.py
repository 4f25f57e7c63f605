"""``segur-sim mss run | cases | coverage``: conformance runs from the command line.

``mss run`` starts the simulator in this process (on the data directory's ports), runs
the suite, writes the proof bundle and the requested reports, and exits 0 only if every
test that ran passed. Exit codes: 0 passed, 1 a test failed or errored, or the run was
interrupted, 2 bad input.

Ctrl-C (SIGINT) or SIGTERM during a run cancels it the way ``DELETE /api/mss/runs/{id}``
does (``report.mark_cancelled``): the runner stops, the driver command's process group
is stopped (the runner does it when its step is cancelled), the signed proof bundle of
the cancelled run is still written (with its ``cancellation`` block), and so are the
``--json`` and ``--junit`` reports, both marked cancelled. Then it exits 1. A second
signal while the bundle is written does not interrupt it.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import signal
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import click

from simulators import DISCLAIMER
from simulators.core import eventloop
from simulators.mss.cli import data_dir_option
from simulators.mss.conformance.catalogue import CatalogueError, load_catalogue
from simulators.mss.conformance.coverage import coverage_rows

INTERRUPT_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@click.group()
def mss() -> None:
    """MOTCO2-like conformance runs of an MSSanté client (SIMULATION)."""


def _running_server(data_dir: Path) -> int | None:
    """The PID of a live ``segur-sim serve`` on this data directory, if any."""
    path = data_dir / "endpoints.json"
    try:
        pid = int(json.loads(path.read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


@mss.command("run")
@click.option("--suite", required=True, help="per-org, app or extra (or a referencing case ID).")
@click.option("--case", "cases", multiple=True, help="Run only this unit test (repeatable).")
@click.option("--bal", "mailbox", required=True, help="The mailbox under test.")
@click.option("--nil", required=True, help="The product reference expected in X-MSS-NIL.")
@click.option("--client-cmd", help="Driver command started at every step (scripted run).")
@click.option(
    "--driver",
    type=click.Choice(["per-step", "persistent"]),
    default="per-step",
    show_default=True,
    help="per-step: --client-cmd is started at every step; persistent: started once per "
    "run and given the steps on its stdin (docs/mss-conformance.md).",
)
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write the run JSON.")
@click.option("--junit", type=click.Path(path_type=Path), help="Write JUnit XML.")
@click.option(
    "--proof-dir",
    type=click.Path(path_type=Path),
    help="Where proof bundles go (default DATA_DIR/proofs); one bundle per run.",
)
@click.option("--step-timeout", type=float, help="Seconds per step, instead of the catalogue's.")
@click.option(
    "--settle", type=float, default=2.0, show_default=True, help="Quiet seconds before judging."
)
@click.option("--token-lifetime", type=int, help="PSC access-token lifetime in seconds (CI).")
@click.option("--port-base", type=int, help="Ports base (0 = free ports).")
@click.option("--quiet", is_flag=True, help="Print only the summary.")
@data_dir_option
def mss_run(
    suite: str,
    cases: tuple[str, ...],
    mailbox: str,
    nil: str,
    client_cmd: str | None,
    driver: str,
    json_out: Path | None,
    junit: Path | None,
    proof_dir: Path | None,
    step_timeout: float | None,
    settle: float,
    token_lifetime: int | None,
    port_base: int | None,
    quiet: bool,
    data_dir: Path,
) -> None:
    """Run a suite against the software under test and judge it."""
    from simulators.mss.conformance.runner import RunError, RunRequest

    pid = _running_server(data_dir.expanduser().resolve())
    if pid is not None:
        raise click.UsageError(
            f"a segur-sim server (pid {pid}) is running from {data_dir}: stop it, or give "
            "another --data-dir (mss run starts its own servers on the same ports)"
        )
    request = RunRequest(
        suite=suite,
        mailbox=mailbox,
        nil=nil,
        tests=tuple(c.upper() for c in cases),
        client_cmd=client_cmd,
        driver=driver,
        step_timeout=step_timeout,
        settle=settle,
    )
    overrides: dict[str, Any] = {
        "port_base": port_base,
        "access_token_lifetime": token_lifetime,
    }
    try:
        with asyncio.Runner(loop_factory=eventloop.loop_factory()) as runner:
            code = runner.run(_run(data_dir, overrides, request, json_out, junit, proof_dir, quiet))
    except (RunError, CatalogueError) as exc:
        raise click.UsageError(str(exc)) from None
    sys.exit(code)


def interruption_reason(sig: signal.Signals) -> str:
    """The ``cancellation.reason`` of a run stopped by a signal on the command line."""
    how = "Ctrl-C, SIGINT" if sig is signal.SIGINT else sig.name
    return f"interrupted on the command line ({how})"


class _Interruption:
    """SIGINT/SIGTERM while ``mss run`` works: cancel what is under way, once.

    Before the run starts (servers starting) the main task is cancelled: nothing ran,
    no proof. During the run the runner's task is cancelled, and the cancelled run is
    judged and written. Once the run is over (its proof being written) a signal is only
    acknowledged: the bundle must not be cut in half.
    """

    def __init__(self) -> None:
        self.signal: signal.Signals | None = None
        self.target: asyncio.Task[Any] | None = asyncio.current_task()
        self.finishing = False
        self._loop = asyncio.get_running_loop()

    def __enter__(self) -> _Interruption:
        for sig in INTERRUPT_SIGNALS:
            self._loop.add_signal_handler(sig, self._received, sig)
        return self

    def __exit__(self, *_exc: object) -> None:
        for sig in INTERRUPT_SIGNALS:
            self._loop.remove_signal_handler(sig)

    def _received(self, sig: signal.Signals) -> None:
        if self.signal is not None or self.finishing:
            click.echo(f"\n{sig.name}: the proof bundle is being written, please wait", err=True)
            return
        self.signal = sig
        click.echo(f"\n{sig.name}: cancelling the run; its proof bundle is still written", err=True)
        if self.target is not None and not self.target.done():
            self.target.cancel()

    @property
    def reason(self) -> str:
        assert self.signal is not None
        return interruption_reason(self.signal)


async def _run(
    data_dir: Path,
    overrides: dict[str, Any],
    request: Any,
    json_out: Path | None,
    junit: Path | None,
    proof_dir: Path | None,
    quiet: bool,
) -> int:
    with _Interruption() as interruption:
        try:
            return await _run_interruptible(
                interruption, data_dir, overrides, request, json_out, junit, proof_dir, quiet
            )
        except asyncio.CancelledError:
            if interruption.signal is None:
                raise
            click.echo(
                f"interrupted ({interruption.signal.name}) before the run started: "
                "nothing was run, no proof bundle",
                err=True,
            )
            return 1


async def _run_interruptible(
    interruption: _Interruption,
    data_dir: Path,
    overrides: dict[str, Any],
    request: Any,
    json_out: Path | None,
    junit: Path | None,
    proof_dir: Path | None,
    quiet: bool,
) -> int:
    from simulators.mss.conformance import report
    from simulators.mss.conformance.runner import Runner
    from simulators.serve import Simulator

    person = request.client_cmd is None

    def show(kind: str, data: dict[str, Any]) -> None:
        if quiet:
            return
        if kind == "run-start":
            click.echo(f"run {data['runId']} ({DISCLAIMER})", err=True)
        elif kind == "step-start":
            click.echo(
                f"\n== {data['test']} / {data['step']} (up to {data['timeout']:.0f} s)\n"
                f"   {data['instruction']}",
                err=True,
            )
            if person:
                click.echo(
                    "   waiting for the software under test "
                    "(Ctrl-C cancels the run; its proof bundle is still written)",
                    err=True,
                )
        elif kind == "step-end":
            click.echo(f"   -> {data['status'].upper()}: {data['message']}", err=True)

    cancellation: dict[str, Any] | None = None
    async with Simulator.running(data_dir, **overrides) as sim:
        runner = Runner(sim)
        run = runner.plan(request)
        if not quiet and person:
            click.echo(_endpoints_for_humans(sim.endpoints, run.mailbox), err=True)
        execution = asyncio.get_running_loop().create_task(runner.execute(run, request, show))
        interruption.target = execution
        try:
            await execution
        except asyncio.CancelledError:
            if interruption.signal is None or not execution.cancelled():
                raise  # not ours: let it go
            # Judged as far as it went (report.mark_cancelled), like a cancel over the API.
            cancellation = report.mark_cancelled(run, interruption.reason)
        interruption.finishing = True
        bundle = report.write_proof(run, sim.services, proof_dir, cancellation=cancellation)
        await runner.repo.save(run)
    if json_out:
        _write_json(run, json_out, cancellation, bundle)
    if junit:
        report.write_junit_report(run, junit)
        if cancellation is not None:
            _mark_junit_cancelled(junit, cancellation, bundle)
    click.echo(report.summary_text(run))
    if cancellation is not None:
        click.echo(f"run {run.run_id} CANCELLED: {cancellation['reason']}")
        click.echo(
            f"proof bundle of the cancelled run: {bundle}  "
            f"(check it: segur-sim proof verify {bundle})"
        )
        return 1
    click.echo(f"proof bundle: {bundle}  (check it: segur-sim proof verify {bundle})")
    return 0 if run.passed else 1


def _cancellation_text(bundle: Path, cancellation: dict[str, Any]) -> str:
    """The sentence the signed report gives (predicate.cancellation.text)."""
    try:
        statement = json.loads((bundle / "report.json").read_text())
        return str(statement["predicate"]["cancellation"]["text"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"This run was CANCELLED ({cancellation['reason']})."


def _write_json(run: Any, path: Path, cancellation: dict[str, Any] | None, bundle: Path) -> None:
    from simulators.mss.conformance import report

    if cancellation is None:
        report.write_json(run, path)
        return
    document = report.run_document(run)
    document["cancellation"] = {**cancellation, "text": _cancellation_text(bundle, cancellation)}
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")


def _mark_junit_cancelled(path: Path, cancellation: dict[str, Any], bundle: Path) -> None:
    """Add the cancellation to the suite's properties (the stopped test is already an
    ``error`` saying so, the tests that never ran ``skipped``)."""
    tree = ET.parse(path)
    for suite in tree.getroot().iter("testsuite"):
        properties = suite.find("properties")
        if properties is None:
            properties = ET.SubElement(suite, "properties")
        for name, value in (
            ("cancelled", "true"),
            ("cancellation", _cancellation_text(bundle, cancellation)),
        ):
            ET.SubElement(properties, "property", {"name": name, "value": value})
    tree.write(path, encoding="utf-8", xml_declaration=True)


def _endpoints_for_humans(endpoints: dict[str, Any], mailbox: str) -> str:
    eps = endpoints["endpoints"]
    return (
        f"Configure the software for {mailbox}: SMTP {endpoints['host']}:"
        f"{eps['smtp_starttls']['port']} (STARTTLS), IMAP {endpoints['host']}:"
        f"{eps.get('imap_starttls', {}).get('port')} (STARTTLS), CA {endpoints['ca_bundle']}, "
        f"autoconfig {endpoints['autoconfig_url']}"
    )


@mss.command("cases")
@click.option("--suite", help="Only the tests of this suite.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def mss_cases(suite: str | None, as_json: bool) -> None:
    """List the unit tests and referencing cases of the catalogue."""
    try:
        catalogue = load_catalogue()
        ids = list(catalogue.suite(suite).tests) if suite else sorted(catalogue.tests)
    except CatalogueError as exc:
        raise click.UsageError(str(exc)) from None
    tests = [catalogue.tests[i] for i in ids]
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "id": t.id,
                        "name": t.name,
                        "title": t.title,
                        "mailboxTypes": [m.value for m in t.mailbox_types],
                        "requirements": list(t.requirements),
                        "steps": [
                            {"id": s.id, "action": s.action, "stage": s.stage} for s in t.steps
                        ],
                    }
                    for t in tests
                ],
                indent=2,
            )
        )
        return
    for t in tests:
        types = "/".join(m.value for m in t.mailbox_types)
        click.echo(f"{t.id:7} {t.name:18} [{types}] {t.title}  ({', '.join(t.requirements)})")


@mss.command("coverage")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write JSON.")
@click.option("--csv", "csv_out", type=click.Path(path_type=Path), help="Write CSV.")
@data_dir_option
def mss_coverage(json_out: Path | None, csv_out: Path | None, data_dir: Path) -> None:
    """Every requirement, the tests that verify it, and the latest verdict with its proof."""
    from simulators.mss.conformance.runs import RunRepository
    from simulators.mss.services import MssServices

    services = MssServices.open(data_dir)
    try:
        rows = coverage_rows(load_catalogue(), RunRepository(services.db).latest_test_results())
    finally:
        services.close()
    if json_out:
        json_out.write_text(
            json.dumps(
                {"simulation": True, "disclaimer": DISCLAIMER, "requirements": rows}, indent=2
            )
            + "\n"
        )
    if csv_out:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["requirement", "aliases", "tests", "latest", "run", "proof", "note"])
        for r in rows:
            writer.writerow(
                [
                    r["id"],
                    " ".join(r["aliases"]),
                    " ".join(r["tests"]),
                    r["latest"],
                    r["runId"] or "",
                    r["proof"] or "",
                    r["note"],
                ]
            )
        csv_out.write_text(buf.getvalue())
    for r in rows:
        ref = f"{r['id']} ({', '.join(r['aliases'])})" if r["aliases"] else r["id"]
        tests = ", ".join(r["tests"]) or "-"
        click.echo(f"{ref:32} {r['latest']:14} {tests:24} {r['note']}")
