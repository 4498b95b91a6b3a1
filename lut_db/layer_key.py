"""The LUT key: one measurable layer configuration.

A `LayerConfig` holds everything that changes a layer's latency and nothing else: op kind
(declared in `op_kinds.py`), input size, channels, kernel, stride, groups, activation, SE
width, dtype (docs/lut.md describes the LUT). Its canonical string is the primary key of the
`layers` table, so two search spaces that contain the same layer share one measurement.
The runtime and its options (threads, delegate) are *not* part of the layer key: they
select the LUT slice (`RuntimeSpec`) a measurement belongs to.
"""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

from .op_kinds import OP_KINDS, VECTOR

ACTIVATIONS = ("none", "relu", "relu6", "hswish", "hsigmoid")


@dataclass(frozen=True, order=True)
class LayerConfig:
    """One layer as the device sees it. Sizes in pixels and channels."""

    op: str
    h: int  # input height (pixels)
    w: int  # input width (pixels)
    cin: int  # input channels
    cout: int  # output channels
    kernel: int = 1
    stride: int = 1
    groups: int = 1
    act: str = "none"
    hidden: int = 0  # SE reduction channels; 0 for other ops
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.op not in OP_KINDS:
            raise ValueError(f"LayerConfig.op: unknown op {self.op!r}, expected one of {tuple(OP_KINDS)}")
        if self.act not in ACTIVATIONS:
            raise ValueError(f"LayerConfig.act: unknown activation {self.act!r}, expected one of {ACTIVATIONS}")
        for name in ("h", "w", "cin", "cout", "kernel", "stride", "groups"):
            if getattr(self, name) < 1:
                raise ValueError(f"LayerConfig.{name}: expected a positive integer, got {getattr(self, name)}")
        # The key is built once: LUT look-ups (`LatencyTable.predict`) and hashing read it for
        # every layer of every candidate network. Not a field, so eq/order/asdict ignore it.
        object.__setattr__(self, "_key", (
            f"{self.op}:{self.h}x{self.w}:{self.cin}->{self.cout}:k{self.kernel}s{self.stride}g{self.groups}"
            f":{self.act}:r{self.hidden}:{self.dtype}"
        ))

    def __hash__(self) -> int:
        # Equal configs have equal keys (the key spells every field), so this agrees with the
        # generated __eq__; str caches its hash, which makes dict look-ups cheap. Not cached
        # here as an int: str hashes differ between processes and configs get pickled (DDP).
        return hash(self._key)

    @property
    def key(self) -> str:
        """Canonical, human-readable key, stable across versions (stored in SQLite)."""
        return self._key

    @property
    def digest(self) -> str:
        """Short hash of `key`, safe as a file name (exported model cache, device files)."""
        return hashlib.sha1(self.key.encode()).hexdigest()[:16]

    @property
    def out_hw(self) -> tuple[int, int]:
        """Output spatial size (ceil division for strided ops, x stride for upsample)."""
        if self.op == "upsample":
            return self.h * self.stride, self.w * self.stride
        if OP_KINDS[self.op].output == VECTOR:
            return 1, 1
        return -(-self.h // self.stride), -(-self.w // self.stride)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> LayerConfig:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - fields
        if unknown:
            raise ValueError(f"LayerConfig: unknown fields {sorted(unknown)}")
        return cls(**data)

    @classmethod
    def from_key(cls, key: str) -> LayerConfig:
        """Inverse of `key` (used by `lutbuild show` and interpolation)."""
        try:
            op, hw, chans, ksg, act, hidden, dtype = key.split(":")
            h, w = (int(v) for v in hw.split("x"))
            cin, cout = (int(v) for v in chans.split("->"))
            k, rest = ksg[1:].split("s")
            s, g = rest.split("g")
            return cls(op=op, h=h, w=w, cin=cin, cout=cout, kernel=int(k), stride=int(s), groups=int(g),
                       act=act, hidden=int(hidden[1:]), dtype=dtype)
        except (ValueError, IndexError) as exc:
            raise ValueError(f"layer key {key!r}: not of the form op:HxW:cin->cout:kKsSgG:act:rR:dtype") from exc

    def macs(self) -> int:
        """Multiply-accumulates of this layer (the MAC proxy and MAC metric use it; formulas in `op_kinds.py`)."""
        return OP_KINDS[self.op].macs(self)


@dataclass(frozen=True)
class RuntimeSpec:
    """Which runtime measured a row and how; selects one LUT slice with the device id."""

    name: str  # "tflite" or "onnx"
    version: str = ""  # runtime/binary version string as reported by the agent
    threads: int = 1
    delegate: str = "xnnpack"  # "xnnpack", "none", ...

    @property
    def options(self) -> str:
        """Canonical options string stored with every row (part of the slice key)."""
        return f"threads={self.threads};delegate={self.delegate}"
