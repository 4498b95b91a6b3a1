"""`nas-search`: a thin click layer; each command calls one library function.

Commands live in their own modules (``search/cmd_*.py``) and are added here in the order of
the workflow; the group is built like `lutbuild`'s (`profiler.cli_runner.CliGroup`: one
error line, exit code 1). Every command imports torch, so loading them all costs no more
start-up time than loading one (~2 s on the project's 2-core host, torch's import).
"""
from __future__ import annotations

import click

from profiler.cli_runner import CliGroup
from search.cmd_demo import demo
from search.cmd_export import export
from search.cmd_finetune import finetune
from search.cmd_report import report
from search.cmd_search import search
from search.cmd_spaces import spaces
from search.cmd_train import train

PROG = "nas-search"


@click.group(cls=CliGroup, prog=PROG)
def cli() -> None:
    """NetAdaptV2 search backend: train the OD super-network, run MCD under a latency
    constraint read from the LUT, fine-tune, export and report."""


for command in (spaces, train, search, finetune, export, report, demo):
    cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv)


if __name__ == "__main__":
    main()
