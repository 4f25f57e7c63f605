"""``segur-sim pki``: export the simulated IGC Santé material (works on the data dir)."""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from simulators.core.config import DEFAULT_DATA_DIR, DataDir
from simulators.core.pki import CLIENT_KINDS, P12_PASSWORD, TestPKI


@click.group()
def pki() -> None:
    """The simulated IGC Santé test PKI."""


@pki.command("export")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output directory.")
@click.option("--bal", "address", help="Also export the client certificate of this APP mailbox.")
@click.option(
    "--kind",
    type=click.Choice(CLIENT_KINDS),
    default="valid",
    show_default=True,
    help="Which client certificate (broken ones are for negative tests).",
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=DEFAULT_DATA_DIR,
    show_default=True,
    envvar="SEGUR_SIM_DATA_DIR",
)
def pki_export(out: Path, address: str | None, kind: str, data_dir: Path) -> None:
    """Write the CA bundle (and an APP mailbox's certificate, key and PKCS#12) to --out."""
    data = DataDir.open(data_dir)
    test_pki = TestPKI.load_or_create(data.pki_dir, data.settings.domain)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(test_pki.ca_bundle_path, out / "ca-bundle.pem")
    click.echo(f"{out / 'ca-bundle.pem'}  (trust anchor: AC RACINE IGC-SANTE SIMULATION)")
    if address:
        from simulators.core.store.database import Database
        from simulators.core.store.mail import MailboxType, SqliteMailStore

        with Database(data.db_path) as db:
            mailbox = SqliteMailStore(db, [data.settings.domain]).get_mailbox(address)
        if mailbox is None:
            raise click.ClickException(f"unknown mailbox {address}")
        if mailbox.type is not MailboxType.APP:
            raise click.ClickException(
                f"{address} is {mailbox.type.value}: only APP mailboxes use a client certificate"
            )
        creds = test_pki.client_credentials(mailbox.address, mailbox.entity, kind)
        stem = address.replace("@", "_at_") + ("" if kind == "valid" else f"-{kind}")
        for src, suffix in (
            (creds.chain_path, ".crt.pem"),
            (creds.key_path, ".key.pem"),
            (creds.p12_path, ".p12"),
        ):
            shutil.copyfile(src, out / (stem + suffix))
            click.echo(f"{out / (stem + suffix)}")
        click.echo(f"PKCS#12 password: {P12_PASSWORD.decode()}")
