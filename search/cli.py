"""`nas-search`: a thin click layer; each command calls one library function.

Commands live in their own modules (``search/cmd_*.py``) and are registered here, so
the group stays small and each command's imports load only when it runs.
"""
from __future__ import annotations

import importlib
import sys

import click

#: command name -> "module:attribute" of a click.Command
COMMANDS = {
    "spaces": "search.cmd_spaces:spaces",
    "train": "search.cmd_train:train",
    "search": "search.cmd_search:search",
    "finetune": "search.cmd_finetune:finetune",
    "export": "search.cmd_export:export",
    "report": "search.cmd_report:report",
    "demo": "search.cmd_demo:demo",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return [name for name, target in COMMANDS.items() if _exists(target)]

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None or not _exists(target):
            return None
        module, attribute = target.split(":")
        return getattr(importlib.import_module(module), attribute)


def _exists(target: str) -> bool:
    return importlib.util.find_spec(target.split(":")[0]) is not None


@click.group(cls=LazyGroup)
def cli() -> None:
    """NetAdaptV2 search backend: train the OD super-network, run MCD under a latency
    constraint read from the LUT, fine-tune, export and report."""


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that are the user's to fix: printed as one line, exit code 1."""
    from lut_db.errors import LutError
    from device_agents.contract import AgentError
    from search.errors import SearchError
    from search.spaces.registry import UnknownSpace
    return LutError, AgentError, SearchError, UnknownSpace


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="nas-search", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except user_errors() as exc:
        click.echo(f"nas-search: error: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
