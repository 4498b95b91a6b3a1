"""A weights-cold LUT row, tried: each key whose weights are 64 KiB..4 MiB is also timed as an
N-branch model (N copies of the layer with distinct weights, all reading the same input, each
output a model output), row = (time - overhead) / N: the input is hot as in a network, the
weights of N - 1 other copies went through the cache since a copy last ran
(docs/predict.md, "Why the LUT sum misses").

    .venv/bin/python -m benchmarks.predict_gap.cold export --gap /tmp/gap      # after predict_gap.export
    taskset -c 1 .venv/bin/python -m benchmarks.predict_gap.cold time --gap /tmp/gap [--rounds 6]

N = min(16, ceil(8 MiB / the layer's weight bytes)). Squeeze-excite keys are left hot: N SE
branches reading one input share one global pool after conversion, so they are not N copies.
The time step times, interleaved in one process (thread CPU time, median and 10th percentile
of the pooled runs): the whole model, every LUT layer file of its breakdown (hot rows, now)
and the N-branch files, and prints the breakdown's sum with hot rows and with cold rows for
the keys that have one, against the whole.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from device_agents.runner import TfliteModel  # noqa: E402
from lut_db.layer_key import LayerConfig  # noqa: E402
from profiler.cold_models import Branches, distinct, weight_bytes  # noqa: E402
from profiler.export import export_module, layer_module  # noqa: E402

MIN_BYTES, MAX_BYTES, TARGET_BYTES, MAX_N = 64 * 2**10, 4 * 2**20, 8 * 2**20, 16


def export(gap: Path) -> None:
    layout = json.loads((gap / "layers.json").read_text())
    keys = dict.fromkeys(lay["key"] for st in layout["stages"] for lay in st["layers"])
    cold = {}
    for key in keys:
        if key.startswith("se:"):
            continue  # N SE branches on one input share ONE global pool after conversion: not N copies
        cfg = LayerConfig.from_key(key)
        module, inputs, image_args, image_out = layer_module(cfg)
        size = weight_bytes(module)
        if not MIN_BYTES <= size < MAX_BYTES:
            continue
        n = min(MAX_N, math.ceil(TARGET_BYTES / size))
        model = Branches([distinct(layer_module(cfg)[0], i + 1) for i in range(n)]).eval()
        path = gap / f"cold-{len(cold)}.tflite"
        export_module(model, inputs, "tflite", path, image_args, image_out, outputs=n)
        cold[key] = {"file": str(path), "n": n, "weight_bytes": size}
        print(f"{key}: {size / 2**20:.2f} MiB, N={n}")
    (gap / "cold.json").write_text(json.dumps(cold, indent=1) + "\n")


def timing(gap: Path, whole: str, overhead: str, rounds: int, runs: int) -> None:
    layout = json.loads((gap / "layers.json").read_text())
    cold = {k: c for k, c in json.loads((gap / "cold.json").read_text()).items() if not k.startswith("se:")}
    rng = np.random.default_rng(0)
    files = {"whole": whole, "overhead": overhead}
    files |= {lay["key"]: lay["file"] for st in layout["stages"] for lay in st["layers"]}
    files |= {f"cold:{k}": c["file"] for k, c in cold.items()}
    models = {name: TfliteModel(f, 1, "xnnpack", rng) for name, f in files.items()}
    cpu = {n: [] for n in models}
    gc.disable()
    for _ in range(rounds):
        for name, m in models.items():
            for _ in range(2):
                m.run()
            for _ in range(runs):
                c0 = time.thread_time_ns()
                m.run()
                cpu[name].append((time.thread_time_ns() - c0) / 1e6)
    gc.enable()
    for stat, fn in (("median", np.median), ("p10", lambda v: np.percentile(v, 10))):
        t = {n: float(fn(v)) for n, v in cpu.items()}
        o = t["overhead"]
        breakdown = [lay["key"] for st in layout["stages"] for lay in st["layers"]]
        hot = sum(t[k] - o for k in breakdown) + o
        colder = sum((t[f"cold:{k}"] - o) / cold[k]["n"] if k in cold else t[k] - o for k in breakdown) + o
        print(f"{stat:6}: whole {t['whole']:.3f}  layers hot {hot:.3f} ({100 * (hot / t['whole'] - 1):+.1f}%)  "
              f"with cold rows {colder:.3f} ({100 * (colder / t['whole'] - 1):+.1f}%)")
        for k, c in cold.items():
            print(f"    {k:48} hot {t[k] - o:.4f}  cold {(t[f'cold:{k}'] - o) / c['n']:.4f}  "
                  f"x{((t[f'cold:{k}'] - o) / c['n']) / (t[k] - o):.2f}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("step", choices=("export", "time"))
    p.add_argument("--gap", default="/tmp/gap")
    p.add_argument("--whole", help="the whole-model file (default: the one predict_gap.export recorded)")
    p.add_argument("--overhead", default=None, help="the LUT cache's overhead model (default: found in it)")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--runs", type=int, default=10)
    args = p.parse_args(argv)
    gap = Path(args.gap)
    if args.step == "export":
        export(gap)
    else:
        layout = json.loads((gap / "layers.json").read_text())
        layer_dir = Path(layout["stages"][0]["layers"][0]["file"]).parent
        overhead = args.overhead or str(next(layer_dir.parent.glob("overhead*.tflite")))
        timing(gap, args.whole or layout["whole"], overhead, args.rounds, args.runs)


if __name__ == "__main__":
    main()
