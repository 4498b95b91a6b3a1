"""Is a user's file a model the runtime can load? Checked before any device is touched.

`lutbuild profile MODEL` takes any `.tflite` or `.onnx` file. A missing file, a suffix that
does not match the runtime, or a file that is not a model at all is one line naming the file
(`ProfilerError`), before an agent is opened: the runner on a phone would otherwise only say
so after the batch was pushed. The checks read the file's structure, not just its name:

* TFLite: a FlatBuffer whose file identifier (bytes 4..8) is ``TFL3``;
* ONNX: a protobuf ``ModelProto``: every top-level field well formed to the last byte, with an
  ``ir_version`` (field 1, varint) and a ``graph`` (field 7, length-delimited). No ``onnx``
  import: the wire format is walked directly (stdlib only, at the speed of reading the file).
"""
from __future__ import annotations

from pathlib import Path

from .errors import ProfilerError
from .runtimes import EXTENSIONS, check_runtime

#: File suffix -> runtime, for a `profile` without `--runtime`.
SUFFIX_RUNTIMES = {suffix: runtime for runtime, suffix in EXTENSIONS.items()}
_TFLITE_ID = b"TFL3"
_ONNX_IR_VERSION, _ONNX_GRAPH = 1, 7


def check_model_file(path: str | Path, runtime: str | None = None) -> str:
    """The runtime of the model file `path` (`runtime`, or the one its suffix names); a
    `ProfilerError` naming the file when it is missing, not a file, has a suffix that does not
    match the runtime, or is not a model of that runtime."""
    path = Path(path)
    if not path.exists():
        raise ProfilerError(f"{path}: no such file")
    if not path.is_file():
        raise ProfilerError(f"{path}: not a file (expected a .tflite or .onnx model)")
    suffix = path.suffix.lower()
    if runtime is None:
        runtime = SUFFIX_RUNTIMES.get(suffix)
        if runtime is None:
            raise ProfilerError(f"{path}: cannot tell the runtime from the suffix {suffix or '(none)'!r}: "
                                f"expected .tflite or .onnx (or give --runtime)")
    check_runtime(runtime)
    if suffix != EXTENSIONS[runtime]:
        raise ProfilerError(f"{path}: --runtime {runtime} expects a {EXTENSIONS[runtime]} file, got "
                            f"{suffix or 'no suffix'!r}")
    data = path.read_bytes()
    if runtime == "tflite" and not is_tflite(data):
        raise ProfilerError(f"{path}: not a TFLite model (no 'TFL3' FlatBuffer identifier)")
    if runtime == "onnx" and not is_onnx(data):
        raise ProfilerError(f"{path}: not an ONNX model (not a protobuf ModelProto with a graph)")
    return runtime


def is_tflite(data: bytes) -> bool:
    """A TFLite FlatBuffer: root offset, then the ``TFL3`` file identifier."""
    return len(data) >= 8 and data[4:8] == _TFLITE_ID


def is_onnx(data: bytes) -> bool:
    """A protobuf message whose top level is well formed and holds fields 1 (varint) and 7 (bytes)."""
    seen: set[tuple[int, int]] = set()
    pos, end = 0, len(data)
    while pos < end:
        key, pos = _varint(data, pos)
        if key is None:
            return False
        field, wire = key >> 3, key & 7
        if field == 0:
            return False
        if wire == 0:
            _, pos = _varint(data, pos)
            if pos < 0:
                return False
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(data, pos)
            if length is None:
                return False
            pos += length
        else:  # 3/4: groups, never in ONNX; 6/7: no such wire type
            return False
        if pos > end:
            return False
        seen.add((field, wire))
    return (_ONNX_IR_VERSION, 0) in seen and (_ONNX_GRAPH, 2) in seen


def _varint(data: bytes, pos: int) -> tuple[int | None, int]:
    """(value, next position) of the varint at `pos`; (None, -1) when it is cut off or too long."""
    value = shift = 0
    while pos < len(data) and shift < 64:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    return None, -1
