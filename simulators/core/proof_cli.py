"""``segur-sim proof``: check and read signed proof bundles."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from simulators.core.config import DEFAULT_DATA_DIR
from simulators.core.proof import ROOT_PEM, verify_bundle


def _default_ca(data_dir: Path) -> Path | None:
    # Prefer the root of the local data directory: it proves where the bundle comes
    # from, whereas the copy inside the bundle only proves integrity.
    candidate = data_dir.expanduser() / "pki" / "root.pem"
    return candidate if candidate.is_file() else None


@click.group()
def proof() -> None:
    """Verify and show signed proof bundles (SIMULATION, not official proofs)."""


@proof.command()
@click.argument(
    "bundle", type=click.Path(exists=True, file_okay=False, path_type=Path), metavar="DIR"
)
@click.option(
    "--ca",
    "ca_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Trusted root (PEM). Default: DATA_DIR/pki/root.pem, else the bundle's own "
    f"{ROOT_PEM} (integrity only).",
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=DEFAULT_DATA_DIR,
    show_default=True,
    help="Data directory whose PKI root is trusted when --ca is not given.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def verify(bundle: Path, ca_file: Path | None, data_dir: Path, as_json: bool) -> None:
    """Check DIR: signature, chain, every digest, no added or missing file.

    Exit code 0 when the bundle is valid, 1 when it is not.
    """
    ca = ca_file or _default_ca(data_dir)
    result = verify_bundle(bundle, ca_file=ca)
    if as_json:
        payload = result.as_dict()
        payload.pop("statement")  # `proof show` prints it; keep the verdict short
        click.echo(json.dumps(payload, indent=2, ensure_ascii=False))
    else:
        for note in result.notes:
            click.echo(f"note: {note}", err=True)
        if result.ok:
            click.echo(f"VALID: {bundle}")
            click.echo(f"  signed by {result.signer}")
            click.echo(f"  trust anchor {result.trust_anchor}")
        else:
            click.echo(f"INVALID: {bundle}")
            for problem in result.problems:
                click.echo(f"  - {problem}")
    sys.exit(0 if result.ok else 1)


@proof.command()
@click.argument(
    "bundle", type=click.Path(exists=True, file_okay=False, path_type=Path), metavar="DIR"
)
@click.option("--json", "as_json", is_flag=True, help="Print the whole statement.")
def show(bundle: Path, as_json: bool) -> None:
    """Print what DIR's report says (without verifying it: use `proof verify`)."""
    report = bundle / "report.json"
    try:
        statement = json.loads(report.read_bytes())
        predicate = statement["predicate"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise click.ClickException(f"{report}: not a readable proof report ({exc})") from exc
    if as_json:
        click.echo(json.dumps(statement, indent=2, ensure_ascii=False, sort_keys=True))
        return
    click.echo(f"kind:       {predicate.get('kind')}")
    click.echo(f"run:        {predicate.get('runId')}")
    click.echo(f"result:     {predicate.get('result')}")
    click.echo(f"generated:  {predicate.get('generatedAt')}")
    click.echo(f"previous:   {predicate.get('previousProofSha256') or '-'}")
    for label, key in (
        ("passed", "passedTests"),
        ("warned", "warnedTests"),
        ("failed", "failedTests"),
    ):
        tests = predicate.get(key) or []
        click.echo(f"{label + ':':<11} {len(tests)} {', '.join(map(str, tests))}".rstrip())
    click.echo("subjects:")
    for subject in statement.get("subject", []):
        click.echo(f"  {subject['digest']['sha256']}  {subject['name']}")
    click.echo(predicate.get("disclaimer", ""))
