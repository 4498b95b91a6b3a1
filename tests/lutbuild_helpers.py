"""What the `lutbuild` CLI tests share: run the command in process, and read its one-line error."""
from __future__ import annotations

from click.testing import CliRunner

from profiler.cli import cli


def invoke(*args):
    """`lutbuild ARGS...` in this process (click's runner; arguments stringified)."""
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_line_error(stderr: str) -> str:
    """The error line of a failed command, asserting it is the only line and says `lutbuild: error:`."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("lutbuild: error: ")
    return lines[0]
