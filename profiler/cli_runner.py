"""One way to build and run our click CLIs, `lutbuild` and `nas-search`.

The convention of both: a user error (`USER_ERRORS`) or a click usage error (missing or bad
option) prints ONE line, ``<prog>: error: <message>``, on stderr and exits with code 1;
Ctrl-C prints ``<prog>: aborted`` and exits with code 130; anything else is a bug and
stays a traceback. Both groups are declared the same way, ``@click.group(cls=CliGroup,
prog="lutbuild")``, and list their commands in the order they were added (the order of
the workflow, as the README shows it).

It sits in `profiler/` because it is the lowest layer both CLIs may import.
"""
from __future__ import annotations

import sys

import click

from device_agents.contract import AgentError
from lut_db.errors import UserError

#: Exception types that are the user's to fix. Every one derives from `UserError` except the
#: device agents' `AgentError` (`device_agents` may not import `lut_db`).
USER_ERRORS: tuple[type[Exception], ...] = (UserError, AgentError)

#: What click (>= 8.2) raises for a bare ``<prog>``: the group's help is shown whole, not as an
#: error line (exit code 1 like every usage error). Older click prints the help itself.
_NO_COMMAND = getattr(click.exceptions, "NoArgsIsHelpError", ())


def one_line(text: str) -> str:
    """`text` with every run of whitespace (newlines included) collapsed to one space."""
    return " ".join(text.split())


class CliGroup(click.Group):
    """A click group that runs with our error convention; `prog` names it in every message."""

    def __init__(self, *args, prog: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.prog = prog

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)  # as added (click's default: sorted)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """Run the CLI; returns on success, `sys.exit`s with our convention on a user error."""
        try:
            return super().main(args, prog_name or self.prog, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Abort:
            click.echo(f"{self.prog}: aborted", err=True)
            sys.exit(130)
        except _NO_COMMAND as exc:
            exc.show()
            sys.exit(1)
        except click.ClickException as exc:
            click.echo(f"{self.prog}: error: {one_line(exc.format_message())}", err=True)
            sys.exit(1)
        except USER_ERRORS as exc:
            click.echo(f"{self.prog}: error: {one_line(str(exc))}", err=True)
            sys.exit(1)
