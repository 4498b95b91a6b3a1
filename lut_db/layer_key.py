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


def file_digest(text: str) -> str:
    """Short (16 hex digits) SHA-1 of `text`, safe as a file name: the one naming scheme of every
    exported model file (layer keys, generic keys, whole sub-networks)."""
    return hashlib.sha1(text.encode()).hexdigest()[:16]


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
        if (self.op == BLOCK) != isinstance(self, BlockConfig):
            raise ValueError(f"LayerConfig.op: op {BLOCK!r} is a BlockConfig, and a BlockConfig has op {BLOCK!r}")
        # The key is built once: LUT look-ups (`LatencyTable.predict`) and hashing read it for
        # every layer of every candidate network. Not a field, so eq/order/asdict ignore it.
        object.__setattr__(self, "_key", self._spell())

    def _spell(self) -> str:
        """The canonical key string (see `key`)."""
        return (f"{self.op}:{self.h}x{self.w}:{self.cin}->{self.cout}:k{self.kernel}s{self.stride}g{self.groups}"
                f":{self.act}:r{self.hidden}:{self.dtype}")

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
        return file_digest(self.key)

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


#: Op name of a whole-block key (`BlockConfig`, `lut_db/op_kinds.py`); its keys start with ``block:``.
BLOCK = "block"
BLOCK_KINDS = ("ir", "ds")


@dataclass(frozen=True, order=True)
class BlockConfig(LayerConfig):
    """One whole inverted-residual (``ir``) or depthwise-separable (``ds``) block as the device
    sees it, measured as one model (`lutbuild build --granularity block`): the in-block
    composition (1x1 -> dw -> 1x1, docs/lut.md "TFLite additivity") is in its row by construction.

    A `LayerConfig` whose op is ``"block"`` (always; same `layers` table, same slices, same exporter path:
    `search/spaces/ops.py` builds it from the per-layer modules) plus the fields a block has
    beyond one layer. Fields as the block's layers use them: `h`/`w` the block's input size,
    `cin` the input (stream) channels, `expand` the depthwise channels (== `cin` for ``ds``),
    `cout` the 1x1 projection's filters (a residual block's CBC width, <= `cin`), `kernel` and
    `stride` the depthwise conv's, `act` the block's activation, `hidden` the SE reduction width
    (0: no SE), `residual` whether the projection is added onto the input (CBC add). Key:

        block:<kind>:<h>x<w>:<cin>-><expand>-><cout>:k<kernel>s<stride>:<act>:r<hidden>:res<0|1>:<dtype>
    """

    expand: int = 1  # depthwise (expansion) channels
    kind: str = "ir"  # "ir" or "ds"
    residual: bool = False

    def __post_init__(self) -> None:
        if self.kind not in BLOCK_KINDS:
            raise ValueError(f"BlockConfig.kind: unknown kind {self.kind!r}, expected one of {BLOCK_KINDS}")
        if self.expand < 1:
            raise ValueError(f"BlockConfig.expand: expected a positive integer, got {self.expand}")
        if self.kind == "ds" and self.expand != self.cin:
            raise ValueError(f"BlockConfig: a ds block's expand ({self.expand}) is its cin ({self.cin})")
        if self.residual and (self.stride != 1 or self.cout > self.cin):
            raise ValueError(f"BlockConfig: a residual block has stride 1 and cout <= cin, got stride "
                             f"{self.stride}, {self.cin}->{self.cout}")
        super().__post_init__()

    def _spell(self) -> str:
        return (f"{BLOCK}:{self.kind}:{self.h}x{self.w}:{self.cin}->{self.expand}->{self.cout}"
                f":k{self.kernel}s{self.stride}:{self.act}:r{self.hidden}:res{int(self.residual)}:{self.dtype}")

    def __hash__(self) -> int:  # the dataclass decorator would replace the inherited one
        return hash(self._key)

    @classmethod
    def from_key(cls, key: str) -> BlockConfig:
        """Inverse of `key`."""
        try:
            op, kind, hw, chans, ks, act, hidden, res, dtype = key.split(":")
            if op != BLOCK or not hidden.startswith("r") or res not in ("res0", "res1"):
                raise ValueError(key)
            h, w = (int(v) for v in hw.split("x"))
            cin, expand, cout = (int(v) for v in chans.split("->"))
            k, s = ks[1:].split("s")
            return cls(BLOCK, h=h, w=w, cin=cin, cout=cout, kernel=int(k), stride=int(s), act=act,
                       hidden=int(hidden[1:]), dtype=dtype, expand=expand, kind=kind, residual=res == "res1")
        except (ValueError, IndexError) as exc:
            raise ValueError(f"block key {key!r}: not of the form "
                             "block:kind:HxW:cin->expand->cout:kKsS:act:rR:res0|1:dtype") from exc


def is_block(key: str) -> bool:
    """Whether a stored layer key is a whole-block key (`BlockConfig`)."""
    return key.startswith(f"{BLOCK}:")


#: The default layer context of a slice: each layer exported and timed alone (`RuntimeSpec.context`).
ALONE = "alone"


@dataclass(frozen=True)
class RuntimeSpec:
    """Which runtime measured a row and how; selects one LUT slice with the device id."""

    name: str  # "tflite" or "onnx"
    version: str = ""  # runtime/binary version string as reported by the agent
    threads: int = 1
    delegate: str = "xnnpack"  # "xnnpack", "none", "gpu" (phones), ...
    dtype: str = "float32"  # how the models are exported: "float32" or full-integer "int8"
    gpu_precision_loss: bool | None = None  # GPU delegate only (fp16 allowed); None: not a GPU slice
    # ONNX Runtime's graph optimization level: "all" (ORT_ENABLE_ALL, the default), "extended", "basic"
    ort_opt: str = "all"
    # ONNX rows measured alone (the default) or between NCHWc-keeping neighbours ("nchwc")
    context: str = ALONE

    @property
    def options(self) -> str:
        """Canonical options string stored with every row (part of the slice key).

        `threads=N;delegate=D` as it always was for float32 CPU slices (every existing LUT keeps
        its slices); a GPU slice adds `;gpu_precision_loss=true|false`, an int8 one `;dtype=int8`,
        so float32, int8 and GPU slices of one device sit side by side in one LUT file. An ONNX
        slice measured below ORT_ENABLE_ALL ends in `;ort_opt=extended|basic` (the default level
        is omitted, so every existing options string stays byte-identical); an in-context ONNX
        slice (`--context nchwc`) ends in `;context=nchwc`, the default `alone` omitted."""
        text = f"threads={self.threads};delegate={self.delegate}"
        if self.gpu_precision_loss is not None:
            text += f";gpu_precision_loss={'true' if self.gpu_precision_loss else 'false'}"
        text = text if self.dtype == "float32" else f"{text};dtype={self.dtype}"
        text = text if self.ort_opt == "all" else f"{text};ort_opt={self.ort_opt}"
        return text if self.context == ALONE else f"{text};context={self.context}"


#: Prefix of every generic key (`GenericKey.key`); no `LayerConfig` key starts with it (no op kind is named so).
GENERIC = "generic"


@dataclass(frozen=True, order=True)
class GenericKey:
    """The LUT key of an operator (or fused group) of a user's model that no op kind of
    `op_kinds.py` describes: operator type + input/output shapes + attributes.

    Stored in the same `layers` table and measured into the same slices as `LayerConfig`
    rows (`lutbuild predict --measure-missing`), so it duck-types the fields the writer
    stores: `op` is ``"generic"``, `h`/`w`/`cin`/`cout` come from the first input and the
    output (NCHW), `kernel`/`stride` from the attributes when present. The canonical
    string spells everything, deterministic for one operator whatever the model:

        generic:<op_type>:<inputs>-><output>:<attrs>:<dtype>

    `inputs` are comma-separated shapes (``1x16x56x56``); a constant input (weights, a
    scalar) is prefixed ``c``; `attrs` are ``name=value`` sorted by name and joined by ``;``
    (``-`` when none). Never interpolated: a generic key has no channel family.
    """

    op_type: str  # ONNX operator type ("MaxPool", "Sigmoid", ...) or a fused group ("Swish")
    inputs: tuple[tuple[int, ...], ...]  # shapes, NCHW for images
    const_inputs: tuple[bool, ...]  # per input: a constant of the model (not a run-time tensor)
    output: tuple[int, ...]
    attrs: tuple[tuple[str, str], ...] = ()  # (name, canonical value), sorted by name
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if not self.op_type or any(c in self.op_type for c in ":;=>"):
            raise ValueError(f"GenericKey.op_type: expected an operator name, got {self.op_type!r}")
        if len(self.const_inputs) != len(self.inputs):
            raise ValueError("GenericKey: one const flag per input expected")
        if list(self.attrs) != sorted(self.attrs):
            raise ValueError("GenericKey.attrs: expected (name, value) pairs sorted by name")
        for name, value in self.attrs:
            if any(c in f"{name}{value}" for c in ":;=") or not name:
                raise ValueError(f"GenericKey.attrs: {name}={value!r} may not contain ':', ';' or '='")
        ins = ",".join(("c" if const else "") + _shape(s) for s, const in zip(self.inputs, self.const_inputs))
        attrs = ";".join(f"{k}={v}" for k, v in self.attrs) or "-"
        object.__setattr__(self, "_key", f"{GENERIC}:{self.op_type}:{ins}->{_shape(self.output)}:{attrs}"
                                         f":{self.dtype}")

    def __hash__(self) -> int:
        return hash(self._key)

    @property
    def key(self) -> str:
        return self._key

    @property
    def digest(self) -> str:
        return file_digest(self.key)

    # The `layers` columns (`writer._layer_params`), from the first run-time input and the output.
    @property
    def op(self) -> str:
        return GENERIC

    @property
    def _first(self) -> tuple[int, ...]:
        dynamic = [s for s, const in zip(self.inputs, self.const_inputs) if not const]
        return (dynamic or list(self.inputs) or [()])[0]

    @property
    def h(self) -> int:
        return self._first[2] if len(self._first) == 4 else 1

    @property
    def w(self) -> int:
        return self._first[3] if len(self._first) == 4 else 1

    @property
    def cin(self) -> int:
        return self._first[1] if len(self._first) >= 2 else 1

    @property
    def cout(self) -> int:
        return self.output[1] if len(self.output) >= 2 else 1

    @property
    def kernel(self) -> int:
        return int(self.attr("kernel_shape", "1").split(",")[0])

    @property
    def stride(self) -> int:
        return int(self.attr("strides", "1").split(",")[0])

    groups, act, hidden = 1, "none", 0

    def attr(self, name: str, default: str = "") -> str:
        return dict(self.attrs).get(name, default)

    def macs(self) -> int:
        """Elements of the output: a size for reports (a generic operator's MACs are not modelled)."""
        n = 1
        for d in self.output:
            n *= d
        return n

    @classmethod
    def from_key(cls, key: str) -> GenericKey:
        """Inverse of `key`."""
        try:
            prefix, op_type, io, attrs, dtype = key.split(":")
            if prefix != GENERIC:
                raise ValueError(key)
            ins, out = io.split("->")
            shapes = [s for s in ins.split(",")] if ins else []
            pairs = () if attrs == "-" else tuple(tuple(p.split("=", 1)) for p in attrs.split(";"))
            return cls(op_type, tuple(_parse_shape(s.removeprefix("c")) for s in shapes),
                       tuple(s.startswith("c") for s in shapes), _parse_shape(out), pairs, dtype)
        except (ValueError, IndexError, TypeError) as exc:
            raise ValueError(f"generic key {key!r}: not of the form generic:op:inputs->output:attrs:dtype") from exc


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape) or "scalar"


def _parse_shape(text: str) -> tuple[int, ...]:
    return () if text == "scalar" else tuple(int(d) for d in text.split("x"))


def parse_key(key: str) -> LayerConfig | GenericKey:
    """A stored key as its object: a `GenericKey` for ``generic:...``, a `BlockConfig` for
    ``block:...``, else a `LayerConfig`."""
    if key.startswith(f"{GENERIC}:"):
        return GenericKey.from_key(key)
    return BlockConfig.from_key(key) if is_block(key) else LayerConfig.from_key(key)


def is_generic(key: str) -> bool:
    """Whether a stored layer key is a `GenericKey` (counted apart by `lutbuild show`)."""
    return key.startswith(f"{GENERIC}:")
