"""Search spaces by name, so the CLI lists them instead of hard-coding choices.

Two tables, both explicit: `_SPACES` maps a space name to its spec factory (the built-in
factories of `mobilenetv3.py` and `fastdepth.py`, plus any a user adds with
`register_space`), and `SPACE_CLASSES` maps a spec type to the `SearchSpace` class that
resolves it (`space_from_spec`).
"""
from __future__ import annotations

from dataclasses import replace
from collections.abc import Callable

from lut_db.errors import UserError

from .config import DepthSpaceSpec, SearchSpaceSpec
from .fastdepth import DepthSearchSpace, fastdepth, fastdepth_tiny
from .mobilenetv3 import mbv3_large, mbv3_tiny
from .space import SearchSpace

#: Spec type -> the class that resolves it (a spec subclass not listed uses its nearest listed base).
SPACE_CLASSES: dict[type[SearchSpaceSpec], type[SearchSpace]] = {
    SearchSpaceSpec: SearchSpace,
    DepthSpaceSpec: DepthSearchSpace,
}

_SPACES: dict[str, Callable[[], SearchSpaceSpec]] = {}


class UnknownSpace(UserError, ValueError):
    """A space name that is not registered (one-line message listing the known ones)."""


def register_space(factory: Callable[[], SearchSpaceSpec]) -> Callable[[], SearchSpaceSpec]:
    """Make the space `factory()` describes available by its name (usable as a decorator)."""
    spec = factory()
    _SPACES[spec.name] = factory
    return factory


def space_from_spec(spec: SearchSpaceSpec) -> SearchSpace:
    """The resolved space of `spec`, by the class `SPACE_CLASSES` names for its type."""
    for spec_type in type(spec).__mro__:
        if spec_type in SPACE_CLASSES:
            return SPACE_CLASSES[spec_type](spec)
    raise TypeError(f"space_from_spec: {type(spec).__name__} is not a SearchSpaceSpec")


def get_space(name: str, **overrides) -> SearchSpace:
    """Resolve a registered space; `overrides` replace spec fields (e.g. granularity=16)."""
    if name not in _SPACES:
        raise UnknownSpace(f"unknown search space {name!r}; known spaces: {', '.join(sorted(_SPACES))}")
    spec = _SPACES[name]()
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return space_from_spec(replace(spec, **overrides) if overrides else spec)


def list_spaces() -> list[SearchSpace]:
    return [get_space(name) for name in sorted(_SPACES)]


for _factory in (mbv3_large, mbv3_tiny, fastdepth, fastdepth_tiny):
    register_space(_factory)
