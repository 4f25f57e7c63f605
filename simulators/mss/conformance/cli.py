"""``segur-sim mss run | cases | coverage``: conformance runs from the command line.

``mss run`` starts the simulator in this process (on the data directory's ports), runs
the suite, writes the proof bundle and the requested reports, and exits 0 only if every
test that ran passed. Exit codes: 0 passed, 1 a test failed or errored, 2 bad input.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from simulators import DISCLAIMER
from simulators.mss.cli import data_dir_option
from simulators.mss.conformance.catalogue import CatalogueError, load_catalogue
from simulators.mss.conformance.coverage import coverage_rows


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
        step_timeout=step_timeout,
        settle=settle,
    )
    overrides: dict[str, Any] = {
        "port_base": port_base,
        "access_token_lifetime": token_lifetime,
    }
    try:
        code = asyncio.run(_run(data_dir, overrides, request, json_out, junit, proof_dir, quiet))
    except (RunError, CatalogueError) as exc:
        raise click.UsageError(str(exc)) from None
    sys.exit(code)


async def _run(
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
        elif kind == "step-end":
            click.echo(f"   -> {data['status'].upper()}: {data['message']}", err=True)

    async with Simulator.running(data_dir, **overrides) as sim:
        runner = Runner(sim)
        run = runner.plan(request)
        if not quiet and request.client_cmd is None:
            click.echo(_endpoints_for_humans(sim.endpoints, run.mailbox), err=True)
        await runner.execute(run, request, show)
        bundle = report.write_proof(run, sim.services, proof_dir)
        await runner.repo.save(run)
    if json_out:
        report.write_json(run, json_out)
    if junit:
        report.write_junit_report(run, junit)
    click.echo(report.summary_text(run))
    click.echo(f"proof bundle: {bundle}  (check it: segur-sim proof verify {bundle})")
    return 0 if run.passed else 1


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
