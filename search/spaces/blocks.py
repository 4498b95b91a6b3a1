"""Block strings: the declarative vocabulary of search spaces (timm style).

A stage is a list of block strings such as ``ir_r2_k3_s2_e4_c24_se_re``:
kind ``ir`` (inverted residual), 2 repeats, default kernel 3, stride 2 on the first
repeat, expansion ratio 4, 24 output channels at full width, squeeze-excite, ReLU.
Kinds: ``cn`` (conv + BN + act), ``ds`` (depthwise separable: dw k x k, 1x1 project),
``ir`` (1x1 expand, dw k x k, optional SE, 1x1 project). Activation tokens: ``re`` ReLU,
``r6`` ReLU6, ``hs`` hard-swish. A searched network can be written back in this format.
"""
from __future__ import annotations

from dataclasses import dataclass

BLOCK_KINDS = ("cn", "ds", "ir")
_ACTS = {"re": "relu", "r6": "relu6", "hs": "hswish"}


@dataclass(frozen=True)
class BlockSpec:
    """One decoded block string (before repeats are expanded)."""

    kind: str
    repeats: int
    kernel: int
    stride: int
    expand_ratio: float
    out_channels: int
    se: bool
    act: str


def decode_block(text: str) -> BlockSpec:
    """Parse one block string; raises ValueError naming the token that is wrong."""
    tokens = text.split("_")
    kind = tokens[0]
    if kind not in BLOCK_KINDS:
        raise ValueError(f"block {text!r}: unknown kind {kind!r}, expected one of {BLOCK_KINDS}")
    fields = {"r": 1, "k": 3, "s": 1, "e": 1.0, "c": None}
    se, act = False, "relu"
    for token in tokens[1:]:
        if token == "se":
            se = True
        elif token in _ACTS:
            act = _ACTS[token]
        elif token[:1] in fields and token[1:]:
            try:
                fields[token[0]] = float(token[1:]) if token[0] == "e" else int(token[1:])
            except ValueError:
                raise ValueError(f"block {text!r}: token {token!r} is not a number after {token[0]!r}") from None
        else:
            raise ValueError(f"block {text!r}: unknown token {token!r}")
    if fields["c"] is None:
        raise ValueError(f"block {text!r}: missing output channels token 'c<N>'")
    return BlockSpec(kind, fields["r"], fields["k"], fields["s"], fields["e"], fields["c"], se, act)


def encode_block(kind: str, kernel: int, stride: int, expand: int, in_ch: int, out_ch: int, se: bool, act: str) -> str:
    """Block string of one concrete (searched) block; the expansion is written as channels."""
    act_token = {v: k for k, v in _ACTS.items()}[act]
    parts = [kind, "r1", f"k{kernel}", f"s{stride}"]
    if kind == "ir":
        parts.append(f"e{expand / max(in_ch, 1):.3g}")
    parts.append(f"c{out_ch}")
    if se:
        parts.append("se")
    parts.append(act_token)
    return "_".join(parts)
