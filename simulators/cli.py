"""The ``segur-sim`` command. Each simulator contributes its own click group.

Sub-groups are imported lazily so that ``segur-sim --help`` and the hot commands
do not pay for importing every simulator (lxml/saxon, FastAPI...).
"""

from __future__ import annotations

import importlib

import click

from simulators import __version__

# command name -> "module:attribute" of a click command or group
_LAZY_COMMANDS: dict[str, str] = {
    "serve": "simulators.serve:serve_command",
    "bal": "simulators.mss.cli:bal",
    "psc": "simulators.mss.cli:psc",
    "pki": "simulators.core.pki_cli:pki",
    "mss": "simulators.mss.conformance.cli:mss",
    "proof": "simulators.core.proof_cli:proof",
    "interop": "simulators.interop.cli:interop",
    "cnda": "simulators.cnda.cli:cnda",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(_LAZY_COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _LAZY_COMMANDS:
            module_name, attr = _LAZY_COMMANDS[cmd_name].split(":")
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                if exc.name and exc.name.startswith("simulators"):
                    return None  # that simulator is not built yet
                raise
            command = getattr(module, attr, None)
            return command if isinstance(command, click.Command) else None
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="segur-sim")
def cli() -> None:
    """segur-sim: local simulator of the Ségur e-health test environments.

    Not an official ANS, MOTCO2, Gazelle or CNDA tool: its proofs are simulated.
    """


def main() -> None:
    cli()
