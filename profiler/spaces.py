"""Search spaces as the profiler takes them: a registered name or a resolved `SearchSpace`."""
from __future__ import annotations

from search.spaces import SearchSpace, get_space


def resolve_space(space: str | SearchSpace, **overrides) -> SearchSpace:
    """`SearchSpace` of `space` (a name: `UnknownSpace` when not registered; or the space itself)."""
    if isinstance(space, str):
        return get_space(space, **overrides)
    return space
