"""The OD super-networks: elastic widths (Ordered Dropout), CBC depth, super-kernels.

`build_supernet(space)` picks the super-network of a space's family through
`SUPERNET_BUILDERS` (keyed by the space class): `SuperNet` (`network.py`, MobileNetV3-style
classification spaces) or `DepthSuperNet` (`fastdepth.py`, FastDepth encoder-decoder).
"""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

from search.spaces import DepthSearchSpace, SearchSpace

from .fastdepth import DepthSuperNet
from .layers import ElasticDepthwise, centre_crop
from .network import SuperNet, slice_like
from .od import ODPolicy, ODSample


def _classification(space: SearchSpace, policy: ODPolicy | None, dropout: float) -> nn.Module:
    return SuperNet(space, dropout=dropout, policy=policy)


def _depth(space: SearchSpace, policy: ODPolicy | None, dropout: float) -> nn.Module:
    return DepthSuperNet(space, policy)  # no classifier, so no dropout


#: Space class -> builder of its super-network (a subclass not listed uses its nearest listed base).
SUPERNET_BUILDERS: dict[type[SearchSpace], Callable[[SearchSpace, ODPolicy | None, float], nn.Module]] = {
    SearchSpace: _classification,
    DepthSearchSpace: _depth,
}


def build_supernet(space: SearchSpace, policy: ODPolicy | None = None, dropout: float = 0.0) -> nn.Module:
    """The randomly initialised OD super-network of `space`.

    `policy`: OD sampling shares (None: `ODPolicy()` defaults); `dropout`: probability before
    the classifier (classification spaces only).
    """
    for space_type in type(space).__mro__:
        if space_type in SUPERNET_BUILDERS:
            return SUPERNET_BUILDERS[space_type](space, policy, dropout)
    raise TypeError(f"build_supernet: {type(space).__name__} is not a SearchSpace")


__all__ = ["build_supernet", "SUPERNET_BUILDERS", "SuperNet", "DepthSuperNet", "ODSample", "ODPolicy",
           "ElasticDepthwise", "centre_crop", "slice_like"]
