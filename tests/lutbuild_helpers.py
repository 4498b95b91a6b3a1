"""What the `lutbuild` CLI tests share: run the command in process, read its one-line error, and
register the tests' micro search space (seconds to build and verify for real)."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

from click.testing import CliRunner

from profiler.cli import cli
from search.spaces import registry
from search.spaces.space import SearchSpaceSpec


def invoke(*args):
    """`lutbuild ARGS...` in this process (click's runner; arguments stringified)."""
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_line_error(stderr: str) -> str:
    """The error line of a failed command, asserting it is the only line and says `lutbuild: error:`."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("lutbuild: error: ")
    return lines[0]


@contextlib.contextmanager
def micro_space_registered(name: str, *, num_classes: int = 4, expand: int = 2) -> Iterator[str]:
    """Register, for the `with` block, the micro space `name` of the LUT tests: 8x8 input, an h-swish
    stem conv to 8 channels, one residual `ir` block (3x3, expansion `expand`, ReLU, no SE), an
    8-wide head; `expand` 2 gives 11-12 LUT keys. In this process only (click's runner, not a
    subprocess); yields `name`."""
    def factory() -> SearchSpaceSpec:
        return SearchSpaceSpec(name=name, description=f"{name}: micro test space", input_hw=(8, 8),
                               stem="cn_k3_s1_c8_hs", stages=((f"ir_r1_k3_s1_e{expand}_c8_re",),), head_fc=8,
                               num_classes=num_classes, kernel_choices=(3,))

    registry.register_space(factory)
    try:
        yield name
    finally:
        registry._SPACES.pop(name, None)  # the registry has no public removal: only tests need one
