"""``segur-sim bal`` and ``segur-sim psc`` (``segur-sim mss`` is in conformance/cli.py).

These commands work on the data directory itself (SQLite allows a running
``serve`` beside them), so they need no server; ``serve`` sees the changes at once.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from simulators.core.config import DEFAULT_DATA_DIR
from simulators.core.store.mail import MailboxType, MailStoreError
from simulators.mss.psc import TokenError
from simulators.mss.services import MssServices

data_dir_option = click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=DEFAULT_DATA_DIR,
    show_default=True,
    envvar="SEGUR_SIM_DATA_DIR",
    help="The simulator's data directory.",
)


def _open(data_dir: Path) -> MssServices:
    return MssServices.open(data_dir)


@click.group()
def bal() -> None:
    """Test mailboxes (BAL): PER, ORG and APP."""


@bal.command("create")
@click.option(
    "--type",
    "type_",
    type=click.Choice(["PER", "ORG", "APP"], case_sensitive=False),
    required=True,
    help="PER personal, ORG organisational, APP applicative.",
)
@click.option("--name", help="Display name (PER: the professional; ORG/APP: the entity).")
@click.option("--entity", help="Legal entity (organisation) of the mailbox.")
@click.argument("address")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def bal_create(
    type_: str, name: str | None, entity: str | None, address: str, data_dir: Path, as_json: bool
) -> None:
    """Create a test mailbox ADDRESS in the simulated domain."""
    services = _open(data_dir)
    try:
        mailbox = services.store.create_mailbox(address, MailboxType(type_.upper()), name, entity)
        info = mailbox.as_dict()
        if mailbox.type is MailboxType.APP:
            creds = services.pki.client_credentials(mailbox.address, mailbox.entity)
            info["client_certificate"] = str(creds.cert_path)
            info["client_key"] = str(creds.key_path)
            info["client_p12"] = str(creds.p12_path)
        else:
            info["psc_subject"] = services.psc.subject_for(mailbox)
    except MailStoreError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        services.close()
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        click.echo(f"created {info['type']} mailbox {info['address']}")
        for key in ("psc_subject", "client_certificate", "client_key", "client_p12"):
            if key in info:
                click.echo(f"  {key:19} {info[key]}")


@bal.command("list")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def bal_list(data_dir: Path, as_json: bool) -> None:
    """List the test mailboxes."""
    services = _open(data_dir)
    try:
        boxes = services.store.list_mailboxes()
    finally:
        services.close()
    if as_json:
        click.echo(json.dumps([b.as_dict() for b in boxes], indent=2))
        return
    if not boxes:
        click.echo("no mailbox yet: segur-sim bal create --type PER dr.martin@" + services.domain)
    for box in boxes:
        click.echo(f"{box.type.value:4} {box.address:40} {box.display_name} / {box.entity}")


@click.group()
def psc() -> None:
    """The simulated Pro Santé Connect token service."""


@psc.command("token")
@click.argument("address")
@click.option("--refresh", is_flag=True, help="Also print the refresh token.")
@click.option("--lifetime", type=int, help="Access-token lifetime in seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print the OAuth token response as JSON.")
@data_dir_option
def psc_token(
    address: str, refresh: bool, lifetime: int | None, as_json: bool, data_dir: Path
) -> None:
    """Log the test identity of mailbox ADDRESS in and print a fresh access token."""
    services = _open(data_dir)
    try:
        mailbox = services.store.get_mailbox(address)
        if mailbox is None:
            raise click.ClickException(f"unknown mailbox {address} (see: segur-sim bal list)")
        pair = services.psc.issue(mailbox, access_lifetime=lifetime)
    except TokenError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        services.close()
    if as_json:
        click.echo(json.dumps(pair.as_oauth_json(), indent=2))
    elif refresh:
        click.echo(f"access_token={pair.access_token}")
        click.echo(f"refresh_token={pair.refresh_token}")
    else:
        click.echo(pair.access_token)


@psc.command("revoke")
@click.argument("address")
@data_dir_option
def psc_revoke(address: str, data_dir: Path) -> None:
    """Revoke every refresh token of mailbox ADDRESS."""
    services = _open(data_dir)
    try:
        mailbox = services.store.get_mailbox(address)
        if mailbox is None:
            raise click.ClickException(f"unknown mailbox {address}")
        count = services.psc.revoke_mailbox_sessions(mailbox)
    finally:
        services.close()
    click.echo(f"revoked {count} refresh token(s) of {address}")
