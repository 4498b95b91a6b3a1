"""Every CLI command documents itself, and the README names every command (sqlite-utils style)."""
from pathlib import Path

import pytest
from click.testing import CliRunner

from profiler.cli import cli as lutbuild_cli
from search.cli import cli as search_cli

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def _commands(group):
    return [(name, group.get_command(None, name)) for name in group.list_commands(None)]


@pytest.mark.parametrize("prog,group", [("lutbuild", lutbuild_cli), ("nas-search", search_cli)])
def test_every_command_has_help_and_is_in_the_readme(prog, group):
    for name, command in _commands(group):
        assert command.help and len(command.help.strip()) > 20, f"{prog} {name} has no help text"
        result = CliRunner().invoke(group, [name, "--help"])
        assert result.exit_code == 0, result.output
        assert f"{prog} {name}" in README, f"README does not mention `{prog} {name}`"
