"""The OD super-network: elastic widths (Ordered Dropout), CBC depth, super-kernels."""
from .layers import ElasticDepthwise, centre_crop
from .network import SuperNet, slice_like
from .od import ODPolicy, ODSample

__all__ = ["SuperNet", "ODSample", "ODPolicy", "ElasticDepthwise", "centre_crop", "slice_like"]
