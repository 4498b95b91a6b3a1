"""Weights-cold rows (`--context cold`, TFLite): each layer timed as N copies with distinct weights.

Why: a LUT row is timed by invoking one small model over and over, so its weights stay in the
core's L2 between invokes; inside a network whose weights exceed the L2 (mobilenetv3_large_100:
21 MiB of float32 weights) a layer's weights were last read one whole network ago and come
from the L3 or DRAM. On this project's Intel VM such layers ran 1.07-1.40x their hot rows,
about a third of the fast-state gap between the LUT sum and the whole model (docs/predict.md,
"Why the LUT sum misses"). A cold row is measured, not fitted: the key's model holds N copies
of the layer with distinct weights, so each copy's weights were evicted by the N - 1 others
since it last ran, and the row is (time - the batch's overhead) / N.

How the copies are joined keeps the activations as hot as in a network (only the weights cold):
- a layer whose output has its input's shape (squeeze-excite, stride-1 depthwise, a square
  stride-1 conv) is *chained*: copy k reads copy k - 1's output, as consecutive layers do, and
  the interpreter's arena reuses two activation buffers. (Squeeze-excite must be chained: N
  SE copies on one input share one global pool after conversion, so they would not be N copies.)
- any other layer is *branched*: N copies read the one input, each output a model output
  (N output buffers: the reason N and the weight range are bounded below).

N = ceil(COLD_TARGET_BYTES / the layer's weight bytes), at most MAX_COPIES, so N copies hold
at least 24 MiB of weights: what a mobile network of 15-25 MiB of float32 weights (MobileNetV3-
Large, EfficientNet-Lite0, FBNet-C) reads between two runs of one of its layers. The target was
measured, not fitted: on mobilenetv3_large_100 (21 MiB), in one process beside the whole model,
an 8 MiB target closed -1 to +3.5 points of a 17-22% gap and 24 MiB +4 to +10 points (four runs)
(`benchmarks/predict_gap/cold_target.py`, docs/predict.md). A layer with fewer than
MIN_WEIGHT_BYTES of weights is timed alone (N = 1): its weights are a small part of its
traffic, and many copies' activations would no longer be hot. Generic keys and layers without
weights (add, pooling, upsample) are timed alone too. The chosen N is stored with each row.

The slice is `;context=cold`; `lutbuild predict` reads it for a TFLite model whose weights
exceed twice a core's L2 (`--context auto`, the default: `predict_model.AUTO_COLD_BYTES`) or
when asked (`--context cold`); the tiny search spaces' networks (0.2 MiB) add up with hot
rows (mbv3-large's and fastdepth's hold 15-22 MiB at full width: docs/predict.md).
TFLite float32 only: ONNX Runtime's Python API copies every model output per run, which a
branched model's row would carry (its fidelity tool is `--context nchwc`).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from lut_db.layer_key import GenericKey, LayerConfig
from search.spaces.ops import build_layer

#: Weights of all copies together, at least (bytes): a big mobile network's weights (module docstring).
COLD_TARGET_BYTES = 24 * 2**20
#: Copies at most (bounds the branched models' output buffers and the export time).
MAX_COPIES = 48
#: Layers with fewer weight bytes than this are timed alone (module docstring).
MIN_WEIGHT_BYTES = 64 * 2**10


def weight_bytes(module: nn.Module) -> int:
    """Bytes of `module`'s parameters and buffers as float32 (what the exported file holds,
    BatchNorm folded into its conv)."""
    return 4 * (sum(p.numel() for p in module.parameters()) + sum(b.numel() for b in module.buffers()))


def copies_for(weights: int) -> int:
    """N for a layer of `weights` bytes (module docstring)."""
    if weights < MIN_WEIGHT_BYTES:
        return 1
    return max(1, min(MAX_COPIES, math.ceil(COLD_TARGET_BYTES / weights)))


class Chain(nn.Sequential):
    """Copies run one after another (shape-preserving layers)."""


class Branches(nn.Module):
    """Copies reading the same input, each output returned."""

    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.copies = nn.ModuleList(layers)

    def forward(self, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(layer(*xs) for layer in self.copies)


def distinct(layer: nn.Module, seed: int) -> nn.Module:
    """`layer` with its weights moved by a small seeded perturbation: the same scale and
    sparsity pattern, different bytes (identical copies could be deduplicated)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=generator))
    return layer


def cold_module(cfg: LayerConfig, layer: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[nn.Module, int]:
    """(the cold model, N) of key `cfg` whose layer module is `layer` (as `export.layer_module`
    built it, weights seeded) with example `inputs`; the other copies are built after it, so
    the file of a key is the same every time."""
    n = copies_for(weight_bytes(layer))
    if n == 1:
        return layer, 1
    layers = [layer, *(distinct(build_layer(cfg)[0], seed) for seed in range(1, n))]
    with torch.no_grad():
        out = layer.eval()(*inputs)
    if len(inputs) == 1 and isinstance(out, torch.Tensor) and out.shape == inputs[0].shape:
        return Chain(*layers).eval(), n
    return Branches(layers).eval(), n


def copies(cfg: LayerConfig | GenericKey) -> int:
    """N of a key's cold model (1 for generic keys: timed alone)."""
    if isinstance(cfg, GenericKey):
        return 1
    return copies_for(weight_bytes(build_layer(cfg)[0]))
