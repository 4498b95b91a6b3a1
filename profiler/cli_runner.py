"""One way to build and run our click CLIs, `lutbuild` and `nas-search`.

The convention of both: a user error (`USER_ERRORS`) or a click usage error (missing or bad
option, checked where it is parsed: `profiler.cli_types`) prints ONE line,
``<prog>: error: <message>``, on stderr and exits with code 1; Ctrl-C prints
``<prog>: aborted`` and exits with code 130. Anything else is a bug: one line too,
``<prog>: internal error: <type>: <message> (...)``, exit code 70 (`EX_SOFTWARE`), with the
full traceback written to a file the line names, so a user never faces a bare traceback and
can still report the bug; ``NETADAPTV2_DEBUG=1`` prints the traceback instead.
Both groups are declared the same way, ``@click.group(cls=CliGroup,
prog="lutbuild")``, and list their commands in the order they were added (the order of
the workflow, as the README shows it).

It sits in `profiler/` because it is the lowest layer both CLIs may import.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback

import click

from device_agents.contract import AgentError
from lut_db.errors import UserError

#: Exception types that are the user's to fix. Every one derives from `UserError` except the
#: device agents' `AgentError` (`device_agents` may not import `lut_db`).
USER_ERRORS: tuple[type[Exception], ...] = (UserError, AgentError)

#: What click (>= 8.2) raises for a bare ``<prog>``: the group's help is shown whole, not as an
#: error line (exit code 1 like every usage error). Older click prints the help itself.
_NO_COMMAND = getattr(click.exceptions, "NoArgsIsHelpError", ())
#: Exit code of a bug (BSD sysexits EX_SOFTWARE), distinct from a user error's 1.
EXIT_BUG = 70
#: Set to 1 to get the traceback of a bug on stderr instead of a file.
DEBUG_ENV = "NETADAPTV2_DEBUG"


def one_line(text: str) -> str:
    """`text` with every run of whitespace (newlines included) collapsed to one space."""
    return " ".join(text.split())


def user_message(exc: BaseException) -> str:
    """The one line of a user error; one raised in a DataLoader worker process reaches us with the
    worker's traceback in its text (torch re-raises ``type(msg)``): its last line is the message."""
    text = str(exc)
    if "\nOriginal Traceback" in text:
        last = text.rstrip().splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return one_line(text)


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
            click.echo(f"{self.prog}: error: {user_message(exc)}", err=True)
            sys.exit(1)
        except Exception as exc:  # noqa: BLE001 - a bug: one line + the traceback in a file
            if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
                raise
            where = _save_traceback(self.prog)
            click.echo(f"{self.prog}: internal error: {type(exc).__name__}: {one_line(str(exc))[:300]} "
                       f"(a bug; full traceback in {where}; rerun with {DEBUG_ENV}=1 to print it)", err=True)
            sys.exit(EXIT_BUG)


def _save_traceback(prog: str) -> str:
    """Write the exception being handled to ``<tmp>/<prog>-traceback-<time>-<pid>.txt``; its path
    (or "none written: <why>" when the file cannot be written)."""
    name = f"{prog}-traceback-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    path = os.path.join(tempfile.gettempdir(), name)
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(" ".join(sys.argv) + "\n\n" + traceback.format_exc())
    except OSError as exc:
        return f"none written ({exc.strerror or exc})"
    return path
