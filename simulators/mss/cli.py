"""``segur-sim bal`` and ``segur-sim psc`` (``segur-sim mss`` is in conformance/cli.py).

These commands work on the data directory itself (SQLite allows a running
``serve`` beside them), so they need no server; ``serve`` sees the changes at once.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

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


def _delete_through_server(data_dir: Path, address: str) -> dict[str, Any] | None:
    """Ask a ``segur-sim serve`` running on ``data_dir`` to delete the mailbox, so that it
    also closes the mailbox's live sessions. ``None`` when no server runs there (or it
    cannot be reached: the caller then deletes in the store itself)."""
    from simulators.mss.conformance.cli import _running_server

    if _running_server(data_dir.expanduser().resolve()) is None:
        return None
    try:
        endpoints = json.loads((data_dir / "endpoints.json").read_text())
        url = f"{endpoints['console_url'].rstrip('/')}/api/mss/mailboxes/{quote(address, safe='@')}"
        context = ssl.create_default_context(cafile=endpoints["ca_bundle"])
    except (OSError, ValueError, KeyError, TypeError, ssl.SSLError) as exc:
        click.echo(f"warning: cannot read the running server's endpoints ({exc})", err=True)
        return None
    request = urllib.request.Request(url, method="DELETE", headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, context=context, timeout=30) as answer:
            result: dict[str, Any] = json.loads(answer.read())
            return result
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("detail", exc.reason)
        except ValueError:
            detail = exc.reason
        raise click.ClickException(str(detail)) from None
    except (urllib.error.URLError, OSError) as exc:
        click.echo(
            f"warning: the running server at {url} did not answer ({exc}); deleting in the "
            "store directly: its open sessions of this mailbox, if any, stay open",
            err=True,
        )
        return None


@bal.command("delete")
@click.argument("address")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def bal_delete(address: str, data_dir: Path, as_json: bool) -> None:
    """Delete the test mailbox ADDRESS.

    Removes its folders, messages and flags and revokes its PSC refresh tokens. When a
    `segur-sim serve` runs on the data directory, the deletion goes through it, which
    also closes the mailbox's open SMTP/IMAP sessions (and is refused while a
    conformance run uses the mailbox). Past conformance runs and proof bundles naming
    it are archives: they are kept, and so is the mail it submitted.
    """
    result = _delete_through_server(data_dir, address)
    if result is None:
        from simulators.web.api_mss import runs_naming

        services = _open(data_dir)
        try:
            deleted = services.delete_mailbox(address)
            if deleted is None:
                raise click.ClickException(f"unknown mailbox {address} (see: segur-sim bal list)")
            result = {
                **deleted.as_dict(),
                "deleted": True,
                "sessions_closed": 0,
                "runs_kept": runs_naming(services, deleted.deletion.mailbox.address),
            }
        finally:
            services.close()
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(
        f"deleted {result['type']} mailbox {result['address']}: {result['messages']} "
        f"message(s) in {result['folders']} folder(s), "
        f"{result['refresh_tokens_revoked']} PSC refresh token(s) revoked, "
        f"{result['sessions_closed']} open session(s) closed"
    )
    runs = result.get("runs_kept") or []
    click.echo(
        f"  kept: {result['submissions_kept']} submitted mail(s) (evidence), "
        f"{len(runs)} conformance run(s) and their proof bundles"
        + (f" ({', '.join(runs)})" if runs else "")
    )


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
