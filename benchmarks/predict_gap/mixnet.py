"""Why `predict` over-predicts geffnet's mixnet_s on TFLite (docs/predict.md, "mixnet_s:
over-prediction"): pieces of the network and its LUT layer files, timed in ONE process.

    taskset -c 0 nice -n 5 .venv/bin/python -m benchmarks.predict_gap.mixnet export --out /tmp/mx \\
        [--onnx /tmp/bp7/models/mixnet_s-224.onnx] [--cache /tmp/bp7/cache]
    flock /tmp/na-timing.lock taskset -c 1 .venv/bin/python -m benchmarks.predict_gap.mixnet time --out /tmp/mx \\
        [--whole /tmp/bp7/models/mixnet_s-224.tflite] [--rounds 6] [--runs 15]

`export` writes, under `--out`: the pieces (mixed-conv blocks as mixnet_s has them: Split ->
k depthwise or 1x1 convs -> Concat -> BatchNorm -> Swish/ReLU, each exported with the
project's I/O convention), each piece's LUT keys (read by `graph_keys.map_graph` from the
piece's own ONNX export), and for every generic key of the whole model and the pieces its
one-operator model as `generic_ops.export_generic` writes it now (`new/`; the LUT's rows were
measured with the files of the model cache, `--cache`), plus a standalone BatchNorm built as
its scale multiply only (`bnmul/`: what the untrained whole model runs, its BatchNorms being
weight 1, bias 0, mean 0, variance 1), and mixnet_s with trained-looking BatchNorm statistics
(`export.randomize_batchnorm`). Files already there are kept (delete `--out` after a change
of `generic_ops`). Nothing is written to a LUT or to the model cache.

`time` loads every file once (`device_agents.runner.TfliteModel`: XNNPACK, 1 thread) and
interleaves `--rounds` passes over all of them; per model the 10th percentile of thread CPU
time per invoke (ms). A layer line is (its file's p10 - the overhead model's p10), as a LUT
row is its figure minus the batch's overhead; a sum adds the overhead once. Prints, per piece
and for the whole model: measured vs the sum of the old files (the LUT's) and of the new ones.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from device_agents.runner import TfliteModel  # noqa: E402
from lut_db.layer_key import GenericKey  # noqa: E402
from benchmarks.bench_predict import native_activations  # noqa: E402
from profiler.export import exporter_id, export_module, randomize_batchnorm  # noqa: E402
from profiler.generic_ops import export_generic  # noqa: E402
from profiler.graph_keys import map_graph  # noqa: E402
from profiler.model_graph import load_model  # noqa: E402


class MixedBlock(nn.Module):
    """Split -> one conv per group (depthwise k x k, or 1x1 `pw` to `out` channels each) ->
    Concat -> BatchNorm -> activation: a mixnet_s MixedConv2d with its BN and activation."""

    def __init__(self, channels: int, kernels: list[int], stride: int = 1, pw_out: int = 0, act: str = "swish"):
        super().__init__()
        self.sizes = [channels // len(kernels)] * len(kernels)
        if pw_out:
            self.convs = nn.ModuleList(nn.Conv2d(c, pw_out, 1, bias=False) for c in self.sizes)
            out = pw_out * len(kernels)
        else:
            self.convs = nn.ModuleList(nn.Conv2d(c, c, k, stride, k // 2, groups=c, bias=False)
                                       for c, k in zip(self.sizes, kernels))
            out = channels
        self.bn = nn.BatchNorm2d(out)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.1, 0.1)
            self.bn.running_var.uniform_(0.5, 1.5)
            self.bn.weight.uniform_(0.5, 1.5)
            self.bn.bias.uniform_(-0.5, 0.5)
        self.act = act

    def forward(self, x):
        parts = torch.split(x, self.sizes, 1)
        y = self.bn(torch.cat([conv(p) for conv, p in zip(self.convs, parts)], 1))
        return torch.relu(y) if self.act == "relu" else y * torch.sigmoid(y)


#: name -> (input NCHW shape, MixedBlock arguments): blocks of mixnet_s at 224 px
PIECES = {
    "pw112-relu": ((1, 16, 112, 112), dict(channels=16, kernels=[1, 1], pw_out=48, act="relu")),
    "dw56-k357-s2": ((1, 144, 56, 56), dict(channels=144, kernels=[3, 5, 7], stride=2)),
    "dw28-k35": ((1, 240, 28, 28), dict(channels=240, kernels=[3, 5])),
    "dw14-k357": ((1, 480, 14, 14), dict(channels=480, kernels=[3, 5, 7])),
    "dw14-k3579": ((1, 360, 14, 14), dict(channels=360, kernels=[3, 5, 7, 9])),
}


class _ScaleOnly(nn.Module):
    """A standalone BatchNorm as the whole model runs it: one per-channel multiply (NHWC)."""

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("scale", torch.rand(channels) + 0.5)

    def forward(self, x):
        return x * self.scale


def old_keys(key) -> list:
    """The key(s) the mapping gave this line before `graph_keys.MODEL_VERSIONS` and the fused
    BatchNorm + ReLU (the LUT's rows and the model cache's files)."""
    if not isinstance(key, GenericKey):
        return [key]
    attrs = tuple(a for a in key.attrs if a[0] not in ("model", "act"))
    keys = [GenericKey(key.op_type, key.inputs, key.const_inputs, key.output, attrs, key.dtype)]
    if key.attr("act") == "relu":
        keys.append(GenericKey("Relu", (key.output,), (False,), key.output, (), key.dtype))
    return keys


def export_bnrand(path: Path) -> Path:
    """mixnet_s at 224 px with trained-looking BatchNorm statistics (`export.randomize_batchnorm`):
    its standalone BatchNorms are not the single MUL of the untrained model."""
    import geffnet  # why: optional, benchmark only (pip install --no-deps geffnet)

    native_activations()
    model = geffnet.create_model("mixnet_s", pretrained=False).eval()
    randomize_batchnorm(model)
    return export_module(model, (torch.randn(1, 3, 224, 224),), "tflite", path, image_out=False)


def export(args) -> None:
    out = Path(args.out)
    cache = Path(args.cache) / exporter_id("tflite") / "layers"
    layout: dict = {"whole": args.whole, "overhead": str(cache.parent / "overhead-relu1.tflite"), "pieces": {},
                    "model": [], "files": {}}
    if not (out / "mixnet_s-224-bnrand.tflite").exists():
        export_bnrand(out / "mixnet_s-224-bnrand.tflite")
    layout["whole_bnrand"] = str(out / "mixnet_s-224-bnrand.tflite")
    keys: dict[str, object] = {}
    for name, (shape, kw) in PIECES.items():
        torch.manual_seed(0)
        block = MixedBlock(**kw).eval()
        x = torch.randn(shape)
        path = export_module(block, (x,), "tflite", out / "pieces" / f"{name}.tflite")
        with tempfile.TemporaryDirectory() as tmp:
            onnx = export_module(block, (x,), "onnx", Path(tmp) / "piece.onnx")
            lines = map_graph(load_model(str(onnx))).layers
        layout["pieces"][name] = {"file": str(path), "keys": [line.key.key for line in lines]}
        keys.update({line.key.key: line.key for line in lines})
    for line in map_graph(load_model(args.onnx)).layers:
        layout["model"].append(line.key.key)
        keys[line.key.key] = line.key
    for text, key in keys.items():
        files = {"old": [str(cache / f"{k.digest}.tflite") for k in old_keys(key)]}
        if isinstance(key, GenericKey):
            new = out / "new" / f"{key.digest}.tflite"
            files["new"] = [str(new if new.exists() else export_generic(key, "tflite", new))]
            if key.op_type == "BatchNormalization" and not (out / "bnmul" / f"{key.digest}.tflite").exists():
                torch.manual_seed(0)
                n, c, h, w = key.inputs[0]
                module = nn.Sequential(_ScaleOnly(c), nn.ReLU()) if key.attr("act") == "relu" else _ScaleOnly(c)
                export_module(module, (torch.randn(n, h, w, c),), "tflite",
                              out / "bnmul" / f"{key.digest}.tflite", image_args=(), image_out=False)
            if key.op_type == "BatchNormalization":
                files["bnmul"] = [str(out / "bnmul" / f"{key.digest}.tflite")]
        layout["files"][text] = files
    (out / "layout.json").write_text(json.dumps(layout, indent=1) + "\n")
    missing = [k for k, f in layout["files"].items() if not all(Path(x).exists() for x in f["old"])]
    print(f"{len(keys)} keys, {len(layout['model'])} model lines; old files missing: {len(missing)} {missing[:3]}")


#: the sums printed: which file of a key each one takes, first found (old: the LUT's, the model cache's)
SUMS = {"old": ("old",), "new": ("new", "old"), "new, BN as one MUL": ("bnmul", "new", "old")}


def p10_cpu(run, warmup: int, runs: int) -> list[int]:
    for _ in range(warmup):
        run()
    cpu = []
    for _ in range(runs):
        c0 = time.thread_time_ns()
        run()
        cpu.append(time.thread_time_ns() - c0)
    return cpu


def measure(args) -> None:
    layout = json.loads((Path(args.out) / "layout.json").read_text())
    rng = np.random.default_rng(0)
    files = {"whole": args.whole or layout["whole"], "whole_bnrand": layout["whole_bnrand"],
             "overhead": layout["overhead"]}
    files.update({f"piece:{n}": p["file"] for n, p in layout["pieces"].items()})
    for fs in layout["files"].values():
        files.update({f: f for paths in fs.values() for f in paths if Path(f).exists()})
    models = {n: TfliteModel(f, 1, "xnnpack", rng) for n, f in files.items()}
    cpu: dict[str, list[int]] = defaultdict(list)
    gc.disable()
    for _ in range(args.rounds):
        for name, model in models.items():
            cpu[name] += p10_cpu(model.run, args.warmup, args.runs)
    gc.enable()
    p10 = {n: float(np.percentile(v, 10)) / 1e6 for n, v in cpu.items()}
    ovh = p10["overhead"]

    def row(key: str, kinds: tuple[str, ...]) -> float:
        paths = next(layout["files"][key][kind] for kind in kinds if kind in layout["files"][key])
        return sum(p10[f] - ovh for f in paths)

    def sums(keys: list[str]) -> dict[str, float]:
        return {kind: ovh + sum(row(k, kinds) for k in keys) for kind, kinds in SUMS.items()}

    print(f"pid {os.getpid()} cpus {sorted(os.sched_getaffinity(0))} load {os.getloadavg()[0]:.2f} "
          f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC; p10 thread CPU ms; overhead {ovh:.4f}")
    result = {"overhead": ovh, "p10": p10, "load": os.getloadavg()}
    wholes = [("whole (untrained BN)", "whole"), ("whole (trained-like BN)", "whole_bnrand")]
    for name, keys in [*((n, piece["keys"]) for n, piece in layout["pieces"].items()),
                       *((n, layout["model"]) for n, _ in wholes)]:
        measured = p10[dict(wholes).get(name, f"piece:{name}")]
        text = "  ".join(f"{kind} {v:7.3f} ({100 * (v / measured - 1):+.0f}%)" for kind, v in sums(keys).items())
        print(f"  {name:24} measured {measured:7.3f}  {text}")
    by_kind: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for key in layout["model"]:
        group = key.split(":")[1] if key.startswith("generic:") else key.split(":")[0]
        for kind, kinds in SUMS.items():
            by_kind[group][kind] += row(key, kinds)
    for group, v in sorted(by_kind.items(), key=lambda kv: -kv[1]["old"]):
        print(f"    {group:20} " + "  ".join(f"{kind} {x:7.3f}" for kind, x in v.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export")
    e.add_argument("--out", default="/tmp/mx")
    e.add_argument("--onnx", default="/tmp/bp7/models/mixnet_s-224.onnx")
    e.add_argument("--whole", default="/tmp/bp7/models/mixnet_s-224.tflite")
    e.add_argument("--cache", default="/tmp/bp7/cache")
    t = sub.add_parser("time")
    t.add_argument("--out", default="/tmp/mx")
    t.add_argument("--whole")
    t.add_argument("--rounds", type=int, default=6)
    t.add_argument("--runs", type=int, default=15)
    t.add_argument("--warmup", type=int, default=3)
    t.add_argument("--json")
    args = p.parse_args(argv)
    export(args) if args.cmd == "export" else measure(args)


if __name__ == "__main__":
    main()
