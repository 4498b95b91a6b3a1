"""The phone's TFLite GPU delegate: benchmark_model's flags, and which ops it left on the CPU.

`--delegate gpu` measures a slice with `benchmark_model --use_gpu=true` (phones only: the
local agent and the Python runner have no GPU delegate). The GPU delegate takes the ops it
supports and leaves the rest to the CPU kernels; a latency of such a model is GPU + CPU +
the copies between them, so a row must say which ops fell back (`GpuDelegation`), and a
slice never mixes fully and partly delegated models silently.

`gpu_flags(precision_loss)`: `--use_gpu=true` and `--gpu_precision_loss_allowed=true|false`,
given explicitly both ways (benchmark_model's default is true: fp16 arithmetic).

`parse_gpu_delegation(text)` reads what benchmark_model (and the delegate's own logging) print,
with or without logcat prefixes (``05-31 10:38:42.607 22206 22206 E tflite  : ``); formats
from ``tensorflow/lite/delegates/gpu/delegate.cc``, ``tools/delegates/gpu_delegate_provider.cc``
and ``tools/benchmark/benchmark_tflite_model.cc``, checked against outputs quoted in
tensorflow issues #56301, #58379, #40144, #31720 and mattn/go-tflite#7:

- ``Following operations are not supported by GPU delegate:`` (older: ``Next operations
  are not supported by GPU delegate:``), then one ``OP_NAME: reason`` line per op kind;
- ``N operations will run on the GPU, and the remaining M operations will run on the CPU.``
  (older: ``First N operations will run on the GPU, and the remaining M on the CPU.``);
- ``Replacing N out of T node(s) with delegate (TfLiteGpuDelegateV2) node, yielding P
  partitions`` (older: ``Replacing N node(s) with delegate ...``);
- ``Explicitly applied GPU delegate, and the model graph will be completely executed by the
  delegate.`` / ``... partially executed by the delegate w/ K delegate kernels.`` / ``Though
  GPU delegate is explicitly applied, the model graph will not be executed by the delegate.``
"""
from __future__ import annotations

import re
from dataclasses import dataclass

GPU = "gpu"

_PREFIX = re.compile(r"^\s*(?:\d\d-\d\d \d\d:\d\d:\d\d\.\d+\s+\d+\s+\d+\s+[VDIWEF]\s+\S+\s*:\s?)?"
                     r"(?:(?:INFO|ERROR|WARNING|VERBOSE):\s*)?")
_UNSUPPORTED_HEADER = re.compile(r"(?:Following|Next) operations are not supported by GPU delegate:")
_OP_LINE = re.compile(r"^([A-Z][A-Z0-9_]*(?:\s*\(v\d+\))?)\s*:\s*(.*)$")
_SPLIT = re.compile(r"(\d+) operations will run on the GPU, and the remaining (\d+) operations? will run on the CPU")
_SPLIT_OLD = re.compile(r"First (\d+) operations will run on the GPU, and the remaining (\d+) on the CPU")
_REPLACING = re.compile(r"Replacing (\d+)(?: out of (\d+))? node\(s\) with delegate \((\w+)\) node, "
                        r"yielding (\d+) partitions")
_COMPLETE = re.compile(r"Explicitly applied GPU delegate, and the model graph will be completely executed")
_PARTIAL = re.compile(r"Explicitly applied GPU delegate, and the model graph will be partially executed")
_NOT_APPLIED = re.compile(r"Though GPU delegate is explicitly applied, the model graph will not be executed|"
                          r"Failed to apply GPU delegate|Created 0 GPU delegate kernels")


def gpu_flags(precision_loss: bool = False) -> list[str]:
    """benchmark_model flags of a GPU-delegate run (precision loss: fp16 arithmetic allowed)."""
    return ["--use_gpu=true", f"--gpu_precision_loss_allowed={'true' if precision_loss else 'false'}"]


@dataclass(frozen=True)
class GpuDelegation:
    """What the GPU delegate took of one model. Counts are graph nodes (ops); None: not printed."""

    applied: bool | None  # did the delegate run any of the graph? None: the output does not say
    complete: bool | None  # did it run all of it?
    gpu_ops: int | None = None
    cpu_ops: int | None = None
    fallback: tuple[str, ...] = ()  # op kinds left on the CPU, as printed ("HARD_SWISH", ...)
    partitions: int | None = None

    @property
    def summary(self) -> str:
        """One line for a LUT row or a message: ``gpu`` / ``gpu+cpu(HARD_SWISH,MEAN)`` / ``cpu``."""
        if self.applied is False:
            return "cpu (GPU delegate not applied)"
        if self.complete:
            return "gpu"
        if self.complete is None and self.applied is None:
            return "unknown"
        ops = ",".join(self.fallback) or f"{self.cpu_ops if self.cpu_ops is not None else '?'} ops"
        return f"gpu+cpu({ops})"


def parse_gpu_delegation(text: str) -> GpuDelegation:
    """The delegation of one model from benchmark_model's output (module docstring)."""
    lines = [_PREFIX.sub("", line).rstrip() for line in (text or "").splitlines()]
    fallback: list[str] = []
    gpu_ops = cpu_ops = partitions = None
    complete: bool | None = None
    applied: bool | None = None
    in_list = False
    for line in lines:
        if _UNSUPPORTED_HEADER.search(line):
            in_list = True
            continue
        if in_list:
            m = _OP_LINE.match(line.strip())
            if m and not _SPLIT.search(line):
                name = re.sub(r"\s*\(v\d+\)$", "", m.group(1))
                if name not in fallback:
                    fallback.append(name)
                continue
            in_list = False
        if m := _SPLIT.search(line) or _SPLIT_OLD.search(line):
            gpu_ops, cpu_ops = int(m.group(1)), int(m.group(2))
        elif m := _REPLACING.search(line):
            if "Gpu" in m.group(3) or "GPU" in m.group(3):
                replaced, partitions = int(m.group(1)), int(m.group(4))
                gpu_ops = replaced if gpu_ops is None else gpu_ops
                if m.group(2) is not None and cpu_ops is None:
                    cpu_ops = int(m.group(2)) - replaced
        elif _COMPLETE.search(line):
            applied, complete = True, True
        elif _PARTIAL.search(line):
            applied, complete = True, False
        elif _NOT_APPLIED.search(line):
            applied, complete = False, False
    if complete is None and gpu_ops is not None and cpu_ops is not None:
        applied, complete = gpu_ops > 0, gpu_ops > 0 and cpu_ops == 0
    if fallback and complete:
        complete = False  # an op listed as unsupported runs on the CPU, whatever the summary says
    return GpuDelegation(applied=applied, complete=complete, gpu_ops=gpu_ops, cpu_ops=cpu_ops,
                         fallback=tuple(fallback), partitions=partitions)
