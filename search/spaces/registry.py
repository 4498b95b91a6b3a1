"""Search spaces by name, so the CLI lists them instead of hard-coding choices."""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

from .space import SearchSpace, SearchSpaceSpec

_SPACES: dict[str, Callable[[], SearchSpaceSpec]] = {}


class UnknownSpace(ValueError):
    """A space name that is not registered (one-line message listing the known ones)."""


def register_space(factory: Callable[[], SearchSpaceSpec]) -> Callable[[], SearchSpaceSpec]:
    spec = factory()
    _SPACES[spec.name] = factory
    return factory


def get_space(name: str, **overrides) -> SearchSpace:
    """Resolve a registered space; `overrides` replace spec fields (e.g. granularity=16)."""
    _load_builtin()
    if name not in _SPACES:
        raise UnknownSpace(f"unknown search space {name!r}; known spaces: {', '.join(sorted(_SPACES))}")
    spec = _SPACES[name]()
    overrides = {k: v for k, v in overrides.items() if v is not None}
    space_class = getattr(spec, "space_class", SearchSpace)  # DepthSpaceSpec -> DepthSearchSpace
    return space_class(replace(spec, **overrides) if overrides else spec)


def list_spaces() -> list[SearchSpace]:
    _load_builtin()
    return [get_space(name) for name in sorted(_SPACES)]


def _load_builtin() -> None:
    from . import fastdepth, mobilenetv3  # noqa: F401  (register their spaces on import)
