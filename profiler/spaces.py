"""Search spaces as the profiler takes them: a registered name or a resolved `SearchSpace`."""
from __future__ import annotations


def resolve_space(space, **overrides):
    """`SearchSpace` of `space` (a name: `UnknownSpace` when not registered; or the space itself)."""
    from search.spaces import get_space

    if isinstance(space, str):
        return get_space(space, **overrides)
    return space
