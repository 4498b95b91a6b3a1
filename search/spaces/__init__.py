"""Search spaces: declarative tables -> resolved blocks -> LUT keys and sub-networks."""
from .blocks import BlockSpec, decode_block, encode_block
from .registry import UnknownSpace, get_space, list_spaces, register_space
from .space import ResolvedBlock, SearchSpace, SearchSpaceSpec, SubnetConfig, WidthVar, make_divisible, se_hidden

__all__ = ["BlockSpec", "decode_block", "encode_block", "UnknownSpace", "get_space", "list_spaces",
           "register_space", "ResolvedBlock", "SearchSpace", "SearchSpaceSpec", "SubnetConfig", "WidthVar",
           "make_divisible", "se_hidden"]
