"""FastDepth-based depth-estimation spaces (Wofk et al., ICRA 2019): `DepthSearchSpace` and the spec factories.

The network is MobileNetV1 layers 0-13 (encoder, ReLU6) and the NNConv5 decoder (ReLU):
five stages of 5x5 depthwise + 1x1 pointwise + nearest x2 upsampling, with additive skips
after the upsampling of stages 2, 3 and 4 from encoder layers 5, 3 and 1, and a final
1x1 conv (+ BN + ReLU, as FastDepth's ``decode_conv6``) to one depth channel.

How the space is searched (the decisions, see also docs/depth.md):

- Encoder layer ``i`` (FastDepth numbering) is ``stem`` for layer 0 and block ``s0.b{i-1}``
  for layers 1-13, resolved by `SearchSpace` from ``ds`` block strings, so encoder width
  variables have the same names and rules as the classification spaces.
- CBC where shapes allow: every stride-1 layer whose input and output widths are equal at
  max (layers 3, 5, 7-11 and 13). MobileNetV1 has no residual adds, so CBC here is a pure
  channel bypass: a layer with ``w`` filters outputs its ``w`` computed channels followed by
  the input channels ``w..`` unchanged; ``w = 0`` removes the layer. The stream width through
  such a layer is set by the last non-CBC layer before it (layer 2 for 3, 4 for 5, 6 for
  7-11, 12 for 13). At max config the network is exactly FastDepth.
- Tied widths: a skip add needs equal widths on both sides, so the decoder stage that adds
  a skip has no width variable of its own. Its pointwise output width *is* the stream width
  variable at the skip's encoder layer: stage 2 reads ``s0.b3.out`` (layers 4-5, 256 max),
  stage 3 reads ``s0.b1.out`` (layers 2-3, 128), stage 4 reads ``s0.b0.out`` (layer 1, 64).
  Shrinking that one variable shrinks encoder and decoder together; the skip add is then
  always ``cin == cout``. Stages 1 and 5 have their own variables ``d1.out`` and ``d5.out``.
- The LUT has no concat kind: a partial CBC bypass (0 < w < stream) is costed with the
  ``add`` key (``cin = w`` onto a ``cout = stream`` stream), i.e. the bypass copy plus an add
  of ``w`` channels the network does not perform: a small, documented over-estimate.
- Kernels are fixed (3 in the encoder, 5 in the decoder): FastDepth's space is widths only.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Mapping

from torch import nn

from lut_db.layer_key import LayerConfig

from . import keys
from .blocks import encode_block
from .config import DecoderStage, DepthSpaceSpec, ResolvedBlock, SubnetConfig
from .fastdepth_net import FastDepthNet
from .space import SearchSpace

_DEC_ACTS = {"re": "relu", "r6": "relu6", "hs": "hswish"}


def decode_stage(text: str) -> dict:
    """Parse one decoder stage string; ValueError names the bad token."""
    tokens = text.split("_")
    if tokens[0] != "nn":
        raise ValueError(f"decoder stage {text!r}: unknown kind {tokens[0]!r}, expected 'nn'")
    out = {"kernel": 5, "channels": None, "act": "relu", "skip": None}
    for token in tokens[1:]:
        if token in _DEC_ACTS:
            out["act"] = _DEC_ACTS[token]
        elif token[:1] in ("k", "c", "x") and token[1:].isdigit():
            out[{"k": "kernel", "c": "channels", "x": "skip"}[token[0]]] = int(token[1:])
        else:
            raise ValueError(f"decoder stage {text!r}: unknown token {token!r}")
    if out["channels"] is None:
        raise ValueError(f"decoder stage {text!r}: missing output channels token 'c<N>'")
    return out


class DepthSearchSpace(SearchSpace):
    """Encoder-decoder space for dense depth: the `SearchSpace` API plus a decoder.

    `blocks` are the encoder blocks (as in `SearchSpace`), `decoder` the decoder stages.
    ``blocks[i].residual`` means "CBC applies" (pure bypass here, no add: see module doc).
    """

    spec: DepthSpaceSpec
    blockwise_layout = False  # encoder layers and decoder stages, not `block_layers` + `head_layers`

    def __init__(self, spec: DepthSpaceSpec):
        if not isinstance(spec, DepthSpaceSpec) or not spec.decoder:
            raise ValueError(f"space {spec.name}: a depth space needs a DepthSpaceSpec with decoder stages")
        self.decoder: list[DecoderStage] = []
        super().__init__(spec)

    # ----------------------------------------------------------------- resolution
    def _resolve_head(self) -> None:
        """The decoder stages and the 1x1 head instead of a classifier (no ``head.fc`` width)."""
        by_layer = {0: self.stem, **{i + 1: b for i, b in enumerate(self.blocks)}}
        hw, stream = self.final_hw, self.final_stream
        for index, text in enumerate(self.spec.decoder, start=1):
            stage = decode_stage(text)
            name = f"d{index}"
            skip_block = None
            if stage["skip"] is not None:
                if stage["skip"] not in by_layer:
                    raise ValueError(f"space {self.name}: decoder stage {text!r} skips from unknown layer "
                                     f"{stage['skip']}")
                skip_block = by_layer[stage["skip"]]
                out_var = skip_block.stream_var  # tied: the stage's filters = the skip's width
                skip_hw = skip_block.out_hw
                if skip_hw != (hw[0] * 2, hw[1] * 2):
                    raise ValueError(f"space {self.name}: skip from layer {stage['skip']} is {skip_hw}, "
                                     f"stage {name} upsamples to {(hw[0] * 2, hw[1] * 2)}")
                if self._scaled(stage["channels"]) != self.width_vars[out_var].max:
                    raise ValueError(f"space {self.name}: stage {name} has {stage['channels']} filters, its skip "
                                     f"from layer {stage['skip']} has {self.width_vars[out_var].max}")
            else:
                out_var = self._add_var(f"{name}.out", self._scaled(stage["channels"]), False)
            resolved = DecoderStage(name, tuple(hw), stage["kernel"], stage["act"], stream, out_var,
                                    skip_block.name if skip_block else None, stage["skip"])
            self.decoder.append(resolved)
            hw, stream = resolved.out_hw, out_var
        if tuple(hw) != tuple(self.spec.input_hw):
            raise ValueError(f"space {self.name}: decoder output {hw} != input {self.spec.input_hw}")
        self.output_hw = tuple(hw)
        self.decoder_stream = stream

    # ----------------------------------------------------------------- depth / reporting
    def depth(self, config: SubnetConfig) -> float:
        """Continuous depth in layers: encoder blocks (CBC share) + decoder stages (always present)."""
        return super().depth(config) + len(self.decoder)

    def tied(self) -> dict[str, list[str]]:
        """Width variable -> decoder stages whose filters it also sets (skip-tied widths)."""
        out: dict[str, list[str]] = {}
        for stage in self.decoder:
            if stage.skip:
                out.setdefault(stage.out_var, []).append(stage.name)
        return out

    def block_strings(self, config: SubnetConfig) -> list[str]:
        w = config.widths
        lines = [f"stem: cn_k{self.stem.default_kernel}_s{self.stem.stride}_c{w['stem']}_r6"]
        for block in self.blocks:
            cin, expand, out, _ = self.block_widths(block, config)
            if block.residual and out == 0:
                continue
            text = encode_block(block.kind, block.default_kernel, block.stride, expand, cin, out, block.se, block.act)
            lines.append(f"{block.name}: {text}" + (f" (cbc {out}/{cin})" if block.residual and out < cin else ""))
        for stage in self.decoder:
            act = {v: k for k, v in _DEC_ACTS.items()}[stage.act]
            skip = f"_x{stage.skip_layer}" if stage.skip else ""
            lines.append(f"{stage.name}: nn_k{stage.kernel}_c{w[stage.out_var]}_{act}{skip}")
        lines.append(f"head: cn_k1_c{self.spec.num_classes}")
        return lines

    def describe(self) -> str:
        n_configs = math.prod(len(v.choices) for v in self.width_vars.values())
        return (f"{self.name}: {self.spec.description}; input {self.spec.input_hw[0]}x{self.spec.input_hw[1]}, "
                f"{len(self.blocks) + 1} encoder layers + {len(self.decoder)} decoder stages, "
                f"{len(self.width_vars)} widths ({len(self.tied())} skip-tied), "
                f"{sum(b.residual for b in self.blocks)} CBC layers, granularity {self.granularity}, "
                f"~{n_configs:.2e} subnets")

    # ----------------------------------------------------------------- LUT keys
    def layer_configs(self, config: SubnetConfig) -> list[LayerConfig]:
        """LUT keys in execution order: stem, encoder blocks, decoder stages, head."""
        w = config.widths
        layers = [self.stem_layer(w["stem"])]
        for block in self.blocks:
            cin, _, out, _ = self.block_widths(block, config)
            if block.residual and out == 0:
                continue
            layers.extend(self._encoder_layers(block, cin, out))
        for stage in self.decoder:
            layers.extend(self._stage_layers(stage, w[stage.in_var], w[stage.out_var]))
        layers.append(self._head_layer(w[self.decoder_stream]))
        return layers

    def _encoder_layers(self, block: ResolvedBlock, cin: int, out: int) -> list[LayerConfig]:
        layers = [keys.dwconv(block.in_hw, cin, block.default_kernel, block.stride, block.act),
                  keys.conv(block.out_hw, cin, out, 1, 1, block.act)]
        if block.residual and out < cin:  # CBC bypass of channels out..cin (costed as an add key)
            layers.append(keys.add(block.out_hw, out, cin))
        return layers

    def _stage_layers(self, stage: DecoderStage, cin: int, out: int) -> list[LayerConfig]:
        layers = [keys.dwconv(stage.in_hw, cin, stage.kernel, 1, stage.act),
                  keys.conv(stage.in_hw, cin, out, 1, 1, stage.act),
                  keys.upsample(stage.in_hw, out, stage.upsample)]
        if stage.skip:
            layers.append(keys.add(stage.out_hw, out, out))
        return layers

    def _head_layer(self, cin: int) -> LayerConfig:
        return keys.conv(self.output_hw, cin, self.spec.num_classes, 1, 1, self.spec.head_act)

    def all_layer_configs(self) -> set[LayerConfig]:
        """Every distinct LUT key any subnet can need (the `full` plan)."""
        choices = {n: [c for c in v.choices if c > 0] for n, v in self.width_vars.items()}
        found = {self.stem_layer(c) for c in choices["stem"]}
        for block in self.blocks:
            found.update(self._encoder_keys(block, choices))
        for stage in self.decoder:
            for cin in choices[stage.in_var]:
                for out in choices[stage.out_var]:
                    found.update(self._stage_layers(stage, cin, out))
        found.update(self._head_layer(c) for c in choices[self.decoder_stream])
        return found

    def _encoder_keys(self, block: ResolvedBlock, choices: Mapping[str, list[int]]) -> Iterator[LayerConfig]:
        for cin in choices[block.in_var]:
            for out in choices[block.out_var]:
                if block.residual and out > cin:
                    continue  # canonical clamps a CBC width to the stream
                yield from self._encoder_layers(block, cin, out)

    # ----------------------------------------------------------------- networks
    def build_subnet(self, config: SubnetConfig, dropout: float = 0.0) -> nn.Module:
        """Randomly initialised standalone `FastDepthNet` (`dropout` is accepted for API parity, unused)."""
        return FastDepthNet(self, config)


def _encoder(widths: tuple[int, ...]) -> tuple[str, tuple[str, ...]]:
    """MobileNetV1 layers 0-13 as block strings, for the 14 widths of layers 0..13."""
    strides = (2, 1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1)
    stem = f"cn_k3_s{strides[0]}_c{widths[0]}_r6"
    return stem, tuple(f"ds_r1_k3_s{s}_c{c}_r6" for s, c in zip(strides[1:], widths[1:]))


def _decoder(widths: tuple[int, ...]) -> tuple[str, ...]:
    """NNConv5 with FastDepth's skips (stage 2 <- layer 5, 3 <- 3, 4 <- 1)."""
    skips = ("", "_x5", "_x3", "_x1", "")
    return tuple(f"nn_k5_c{c}_re{s}" for c, s in zip(widths, skips))


def fastdepth() -> DepthSpaceSpec:
    """FastDepth (MobileNet + NNConv5 + skip add) as the largest network, NYU Depth v2 224x224."""
    stem, blocks = _encoder((32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024))
    return DepthSpaceSpec(
        name="fastdepth",
        description="FastDepth (MobileNetV1 + NNConv5, skip add) super-network, NYU Depth v2 224x224",
        input_hw=(224, 224), stem=stem, stages=(blocks,), head_fc=0, num_classes=1,
        kernel_choices=(3,), head_act="relu", task="depth",
        decoder=_decoder((512, 256, 128, 64, 32)),
    )


def fastdepth_tiny() -> DepthSpaceSpec:
    """FastDepth's topology narrowed for tests and the demo: 64x64 input, full LUT of a few hundred keys."""
    stem, blocks = _encoder((16, 16, 24, 24, 32, 32, 48, 48, 48, 48, 48, 48, 64, 64))
    return DepthSpaceSpec(
        name="fastdepth-tiny",
        description="small FastDepth-style space for 64x64 images (tests, demo)",
        input_hw=(64, 64), stem=stem, stages=(blocks,), head_fc=0, num_classes=1,
        kernel_choices=(3,), head_act="relu", task="depth",
        decoder=_decoder((48, 32, 24, 16, 16)),
    )
