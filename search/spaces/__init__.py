"""Search spaces: declarative tables -> resolved blocks -> LUT keys and sub-networks."""
from .blocks import BlockSpec, decode_block, encode_block
from .config import (DecoderStage, DepthSpaceSpec, ResolvedBlock, SearchSpaceSpec, SubnetConfig, WidthVar,
                     make_divisible, se_hidden)
from .fastdepth import DepthSearchSpace
from .registry import SPACE_CLASSES, UnknownSpace, get_space, list_spaces, register_space, space_from_spec
from .space import SearchSpace

__all__ = ["BlockSpec", "decode_block", "encode_block", "UnknownSpace", "get_space", "list_spaces",
           "register_space", "space_from_spec", "SPACE_CLASSES", "ResolvedBlock", "SearchSpace",
           "SearchSpaceSpec", "DepthSearchSpace", "DepthSpaceSpec", "DecoderStage", "SubnetConfig", "WidthVar",
           "make_divisible", "se_hidden"]
