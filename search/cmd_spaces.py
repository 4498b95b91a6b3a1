"""`nas-search spaces`: list the registered search spaces."""
import click

from search.spaces import list_spaces


@click.command()
def spaces() -> None:
    """List the search spaces (name, input size, blocks, widths)."""
    for space in list_spaces():
        click.echo(space.describe())
