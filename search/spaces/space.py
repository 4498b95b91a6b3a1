"""Search spaces: a declarative table resolved into searchable widths and kernels.

`SearchSpaceSpec` is the table a person writes (stem, stages of block strings, head).
`SearchSpace` resolves it once: every block gets a name (``s2.b1`` = stage 2, block 1),
its input resolution, and the names of the width variables it reads. A sub-network is a
`SubnetConfig`: plain dicts ``widths[name] -> channels`` and ``kernels[block] -> k``.

Width variables (what MCD shrinks):
- ``stem``: stem conv filters = stream width of stage 0.
- ``<block>.out`` of a non-residual block (first of a stage, stride 2 or width change):
  the stream width of that stage; residual blocks of the stage read and keep it.
- ``<block>.out`` of a residual block (stride 1, same width): its CBC width. The block's
  1x1 projection has that many filters; the stream channels beyond it bypass the block
  unchanged (Channel-level Bypass Connection). 0 removes the block, so depth is searched
  as width. It is clamped to the stream width when the stream is narrower.
- ``<block>.expand`` of an ``ir`` block: the expansion (dw) width; 0 on a residual block
  also removes it.
- ``head.fc``: width of the last hidden fully connected layer.
Widths take values ``{g, 2g, ...} ∪ {max}`` (g = granularity), plus 0 where CBC allows.

The profiler enumerates LUT keys from it (`layer_configs`, or per part `stem_layer`,
`block_layers`, `head_layers`), and `build_subnet` builds the PyTorch network
(`search/spaces/subnet.py`) from the same resolved blocks. The torch-free data classes
live in `search/spaces/config.py`.
"""
from __future__ import annotations

import math
import random
from collections.abc import Iterator, Mapping

from torch import nn

from lut_db.layer_key import LayerConfig

from . import keys
from .blocks import BlockSpec, decode_block, encode_block
from .config import ResolvedBlock, SearchSpaceSpec, SubnetConfig, WidthVar, make_divisible, se_hidden
from .subnet import SubnetModel

__all__ = ["SearchSpace", "SearchSpaceSpec", "ResolvedBlock", "SubnetConfig", "WidthVar", "make_divisible",
           "se_hidden"]


def _width_choices(max_width: int, granularity: int, zero_allowed: bool) -> tuple[int, ...]:
    values = list(range(granularity, max_width, granularity)) + [max_width]
    return tuple(([0] if zero_allowed else []) + values)


class SearchSpace:
    """A resolved search space: blocks, width variables, and the LUT keys of any subnet."""

    #: True when ``layer_configs(cfg) == [stem_layer] + block_layers of every kept block + head_layers``,
    #: so a predictor may cache latencies per stem width, per block and per head (`profiler/predictor.py`).
    blockwise_layout: bool = True

    def __init__(self, spec: SearchSpaceSpec):
        self.spec = spec
        self.name = spec.name
        self.task = spec.task
        self.granularity = spec.granularity
        self.kernel_choices = tuple(sorted(spec.kernel_choices))
        self.width_vars: dict[str, WidthVar] = {}
        self.blocks: list[ResolvedBlock] = []
        self._resolve()

    # ----------------------------------------------------------------- resolution
    def _scaled(self, channels: float) -> int:
        return make_divisible(channels * self.spec.width_mult, self.granularity)

    def _add_var(self, name: str, max_width: int, zero_allowed: bool) -> str:
        self.width_vars[name] = WidthVar(name, max_width, _width_choices(max_width, self.granularity, zero_allowed),
                                         zero_allowed)
        return name

    def _resolve(self) -> None:
        spec = self.spec
        stem = decode_block(spec.stem)
        if stem.kind != "cn":
            raise ValueError(f"space {spec.name}: stem must be a 'cn' block, got {spec.stem!r}")
        hw = tuple(spec.input_hw)
        stream = self._add_var("stem", self._scaled(stem.out_channels), False)
        self.stem = ResolvedBlock("stem", "cn", hw, stem.stride, stem.act, False, False, "", None, stream, stream,
                                  (), stem.kernel)
        self._fixed_in = spec.in_channels
        hw = self.stem.out_hw
        for stage_index, stage in enumerate(spec.stages):
            block_index = 0
            for text in stage:
                block = decode_block(text)
                for repeat in range(block.repeats):
                    name = f"s{stage_index}.b{block_index}"
                    stride = block.stride if repeat == 0 else 1
                    resolved = self._resolve_block(name, block, hw, stride, stream)
                    self.blocks.append(resolved)
                    stream = resolved.stream_var
                    hw = resolved.out_hw
                    block_index += 1
        self.final_hw = hw
        self.final_stream = stream
        self._resolve_head()

    def _resolve_head(self) -> None:
        """Resolve what follows the last block (`final_hw`, `final_stream`): here the classifier's FC width."""
        self._add_var("head.fc", self._scaled(self.spec.head_fc), False)

    def _resolve_block(self, name: str, block: BlockSpec, hw, stride: int, stream: str) -> ResolvedBlock:
        in_max = self.width_vars[stream].max
        out_max = self._scaled(block.out_channels)
        residual = block.kind in ("ds", "ir") and stride == 1 and out_max == in_max
        kernels = self.kernel_choices if block.kind in ("ds", "ir") else ()
        expand_var = None
        if block.kind == "ir":
            expand_max = make_divisible(in_max * block.expand_ratio, self.granularity)
            expand_var = self._add_var(f"{name}.expand", expand_max, residual)
        out_var = self._add_var(f"{name}.out", out_max, residual)
        return ResolvedBlock(name, block.kind, tuple(hw), stride, block.act, block.se, residual, stream, expand_var,
                             out_var, stream if residual else out_var, kernels, block.kernel)

    # ----------------------------------------------------------------- configs
    def max_config(self) -> SubnetConfig:
        return SubnetConfig({n: v.max for n, v in self.width_vars.items()},
                            {b.name: max(b.kernel_choices) for b in self.blocks if b.kernel_choices})

    def min_config(self) -> SubnetConfig:
        """Smallest network: every removable block removed, others at one step, kernel 3."""
        return SubnetConfig({n: v.choices[0] for n, v in self.width_vars.items()},
                            {b.name: min(b.kernel_choices) for b in self.blocks if b.kernel_choices})

    def uniform_config(self, multiplier: float, kernel: int | None = None) -> SubnetConfig:
        """Every width scaled by `multiplier` (rounded to a choice, >= one step): the width-multiplier baseline."""
        widths = {n: self.nearest_choice(n, v.max * multiplier, allow_zero=False) for n, v in self.width_vars.items()}
        base = self.max_config()
        kernels = {b: (kernel or k) for b, k in base.kernels.items()}
        return SubnetConfig(widths, kernels)

    def random_config(self, rng: random.Random) -> SubnetConfig:
        widths = {n: rng.choice(v.choices) for n, v in self.width_vars.items()}
        kernels = {b.name: rng.choice(b.kernel_choices) for b in self.blocks if b.kernel_choices}
        return self.canonical(SubnetConfig(widths, kernels))

    def nearest_choice(self, var: str, channels: float, allow_zero: bool = True) -> int:
        choices = [c for c in self.width_vars[var].choices if allow_zero or c > 0]
        return min(choices, key=lambda c: (abs(c - channels), c))

    def validate(self, config: SubnetConfig) -> None:
        """Raise ValueError naming the first wrong width/kernel."""
        missing = set(self.width_vars) - set(config.widths)
        if missing:
            raise ValueError(f"subnet config for space {self.name}: missing widths {sorted(missing)}")
        for name, value in config.widths.items():
            var = self.width_vars.get(name)
            if var is None:
                raise ValueError(f"subnet config for space {self.name}: unknown width {name!r}")
            if value not in var.choices:
                raise ValueError(f"subnet config: width {name}={value} is not a choice of space {self.name} "
                                 f"({var.choices[0]}..{var.max} step {self.granularity})")
        for block in self.blocks:
            if block.kernel_choices and config.kernels.get(block.name) not in block.kernel_choices:
                raise ValueError(f"subnet config: kernel {block.name}={config.kernels.get(block.name)} "
                                 f"is not one of {block.kernel_choices}")

    def canonical(self, config: SubnetConfig) -> SubnetConfig:
        """Same network, one spelling: removed blocks have expand = out = 0, CBC widths clamped to the stream."""
        widths = dict(config.widths)
        for block in self.blocks:
            if not block.residual:
                continue
            stream = widths[block.in_var]
            out = min(widths[block.out_var], self.nearest_choice(block.out_var, stream))
            out = max(c for c in self.width_vars[block.out_var].choices if c <= min(out, stream))
            expand = widths[block.expand_var] if block.expand_var else 1
            if out == 0 or expand == 0:
                out, expand = 0, 0
            widths[block.out_var] = out
            if block.expand_var:
                widths[block.expand_var] = expand
        return SubnetConfig(widths, dict(config.kernels))

    # ----------------------------------------------------------------- per-block effective widths
    def block_widths(self, block: ResolvedBlock, config: SubnetConfig) -> tuple[int, int, int, int]:
        """(in channels, expansion channels, output channels, stream out) of `block` in `config`.

        For a residual block `out` is its CBC width (0 = removed) and `stream out` equals `in`.
        """
        w = config.widths
        cin = w[block.in_var]
        if block.kind == "cn":
            return cin, 0, w[block.out_var], w[block.out_var]
        expand = w[block.expand_var] if block.expand_var else cin
        if block.residual:
            out = min(w[block.out_var], cin)
            if out == 0 or expand == 0:
                return cin, 0, 0, cin
            return cin, expand, out, cin
        return cin, expand, w[block.out_var], w[block.out_var]

    def is_removed(self, block: ResolvedBlock, config: SubnetConfig) -> bool:
        return block.residual and self.block_widths(block, config)[2] == 0

    def depth(self, config: SubnetConfig) -> float:
        """Continuous depth in blocks: a CBC block counts the share of stream channels it computes."""
        total = 0.0
        for block in self.blocks:
            cin, _, out, _ = self.block_widths(block, config)
            total += out / cin if block.residual else 1.0
        return total

    # ----------------------------------------------------------------- LUT keys
    def layer_configs(self, config: SubnetConfig) -> list[LayerConfig]:
        """LUT keys of every layer of `config`, in execution order. Sum of their latencies = prediction.

        Block-wise: the stem, each kept block's `block_layers`, then `head_layers` (see `blockwise_layout`).
        """
        layers = [self.stem_layer(config.widths["stem"])]
        for block in self.blocks:
            cin, expand, out, _ = self.block_widths(block, config)
            if block.residual and out == 0:
                continue
            layers.extend(self.block_layers(block, cin, expand, out, config.kernels.get(block.name, 0)))
        layers.extend(self.head_layers(config.widths[self.final_stream], config.widths["head.fc"]))
        return layers

    def stem_layer(self, width: int) -> LayerConfig:
        """LUT key of the stem conv with `width` filters."""
        stem = self.stem
        return keys.conv(stem.in_hw, self.spec.in_channels, width, stem.default_kernel, stem.stride, stem.act)

    def block_layers(self, block: ResolvedBlock, cin: int, expand: int, out: int, kernel: int) -> list[LayerConfig]:
        """LUT keys of one kept block at these widths (channels) and depthwise `kernel`, in execution order."""
        if block.kind == "cn":
            return [keys.conv(block.in_hw, cin, out, block.default_kernel, block.stride, block.act)]
        layers = []
        if block.kind == "ir":
            layers.append(keys.conv(block.in_hw, cin, expand, 1, 1, block.act))
        layers.append(keys.dwconv(block.in_hw, expand, kernel, block.stride, block.act))
        if block.se:
            layers.append(keys.se(block.out_hw, expand))
        layers.append(keys.conv(block.out_hw, expand, out, 1, 1, "none"))
        if block.residual:
            layers.append(keys.add(block.out_hw, out, cin))
        return layers

    def head_layers(self, channels: int, fc: int) -> list[LayerConfig]:
        """LUT keys of the head: global pool of `channels`, FC to `fc` (+ act), classifier."""
        return [keys.gap(self.final_hw, channels),
                keys.linear(channels, fc, self.spec.head_act),
                keys.linear(fc, self.spec.num_classes)]

    def all_layer_configs(self) -> set[LayerConfig]:
        """Every distinct LUT key any subnet of this space can need (the `full` plan)."""
        choices = {n: [c for c in v.choices if c > 0] for n, v in self.width_vars.items()}
        found = {self.stem_layer(c) for c in choices["stem"]}
        for block in self.blocks:
            found.update(self._block_keys(block, choices))
        for c in choices[self.final_stream]:
            for fc in choices["head.fc"]:
                found.update(self.head_layers(c, fc))
        return found

    def _block_keys(self, block: ResolvedBlock, choices: Mapping[str, list[int]]) -> Iterator[LayerConfig]:
        ins = choices[block.in_var]
        outs = choices[block.out_var]
        if block.kind == "cn":
            for cin in ins:
                for out in outs:
                    yield keys.conv(block.in_hw, cin, out, block.default_kernel, block.stride, block.act)
            return
        expands = choices[block.expand_var] if block.expand_var else ins
        if block.kind == "ir":
            for cin in ins:
                for e in expands:
                    yield keys.conv(block.in_hw, cin, e, 1, 1, block.act)
        for e in expands:
            for k in block.kernel_choices:
                yield keys.dwconv(block.in_hw, e, k, block.stride, block.act)
            if block.se:
                yield keys.se(block.out_hw, e)
            for out in outs:
                if block.kind == "ds" and block.residual and out > e:
                    continue  # ds: expansion == stream width, CBC width cannot exceed it
                yield keys.conv(block.out_hw, e, out, 1, 1, "none")
        if block.residual:
            for cin in ins:
                for out in outs:
                    if out <= cin:
                        yield keys.add(block.out_hw, out, cin)

    # ----------------------------------------------------------------- whole-block LUT keys
    def block_key(self, block: ResolvedBlock, cin: int, expand: int, out: int, kernel: int) -> LayerConfig:
        """The one LUT key of a kept block at these widths (channels) and depthwise `kernel`:
        a `BlockConfig` for ``ir``/``ds`` blocks (`lutbuild build --granularity block`), the conv
        key itself for a ``cn`` block (one layer: its block key is its layer key)."""
        if block.kind == "cn":
            return keys.conv(block.in_hw, cin, out, block.default_kernel, block.stride, block.act)
        return keys.block(block.in_hw, block.kind, cin, expand, out, kernel, block.stride, block.act, block.se,
                          block.residual)

    def block_choices(self, block: ResolvedBlock) -> Iterator[tuple[int, int, int, int]]:
        """Every (in, expand, out, kernel) a kept `block` can have in a canonical sub-network
        (`block_widths`): positive widths, a residual block's CBC width <= its input; kernel 0 for ``cn``."""
        choices = {n: [c for c in v.choices if c > 0] for n, v in self.width_vars.items()}
        for cin in choices[block.in_var]:
            expands = choices[block.expand_var] if block.expand_var else [cin]
            for expand in ([0] if block.kind == "cn" else expands):
                for out in choices[block.out_var]:
                    if block.residual and out > cin:
                        continue
                    for kernel in block.kernel_choices or (0,):
                        yield cin, expand, out, kernel

    def block_configs(self, config: SubnetConfig) -> list[LayerConfig]:
        """LUT keys of `config` at block granularity: the stem, one `block_key` per kept block, the head."""
        found = [self.stem_layer(config.widths["stem"])]
        for block in self.blocks:
            cin, expand, out, _ = self.block_widths(block, config)
            if block.residual and out == 0:
                continue
            found.append(self.block_key(block, cin, expand, out, config.kernels.get(block.name, 0)))
        found.extend(self.head_layers(config.widths[self.final_stream], config.widths["head.fc"]))
        return found

    def all_block_configs(self) -> set[LayerConfig]:
        """Every distinct key `block_configs` can need (the `--granularity block` plans): the stem's and
        head's layer keys and every block's `block_key`."""
        choices = {n: [c for c in v.choices if c > 0] for n, v in self.width_vars.items()}
        found = {self.stem_layer(c) for c in choices["stem"]}
        for block in self.blocks:
            found.update(self.block_key(block, *choice) for choice in self.block_choices(block))
        for c in choices[self.final_stream]:
            for fc in choices["head.fc"]:
                found.update(self.head_layers(c, fc))
        return found

    # ----------------------------------------------------------------- networks
    def build_subnet(self, config: SubnetConfig, dropout: float = 0.0) -> nn.Module:
        """Randomly initialised standalone network of `config` (weights come from the supernet or training).

        `dropout`: probability before the classifier.
        """
        return SubnetModel(self, config, dropout)

    # ----------------------------------------------------------------- reporting
    def macs(self, config: SubnetConfig) -> int:
        return sum(layer.macs() for layer in self.layer_configs(config))

    def block_strings(self, config: SubnetConfig) -> list[str]:
        """The searched network as timm-like block strings (removed blocks omitted)."""
        lines = [f"stem: cn_k{self.stem.default_kernel}_s{self.stem.stride}_c{config.widths['stem']}"]
        for block in self.blocks:
            cin, expand, out, _ = self.block_widths(block, config)
            if block.residual and out == 0:
                continue
            kernel = config.kernels.get(block.name, block.default_kernel)
            text = encode_block(block.kind, kernel, block.stride, expand, cin, out, block.se, block.act)
            lines.append(f"{block.name}: {text}" + (f" (cbc {out}/{cin})" if block.residual and out < cin else ""))
        lines.append(f"head: gap, fc{config.widths['head.fc']}, fc{self.spec.num_classes}")
        return lines

    def describe(self) -> str:
        n_configs = math.prod(len(v.choices) for v in self.width_vars.values()) * \
            math.prod(len(b.kernel_choices) for b in self.blocks if b.kernel_choices)
        return (f"{self.name}: {self.spec.description}; input {self.spec.input_hw[0]}x{self.spec.input_hw[1]}, "
                f"{len(self.blocks)} blocks, {len(self.width_vars)} widths, kernels {self.kernel_choices}, "
                f"granularity {self.granularity}, ~{n_configs:.2e} subnets")
