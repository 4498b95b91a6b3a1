"""Is a slow whole-model invoke the model's or the core's? The whole model, then three LUT layer
files right after it, invoke by invoke in thread CPU time (docs/predict.md, "Why the LUT sum
misses"): invokes split by the whole model's time at `--split-ms`, each layer's median on
either side.

    taskset -c 1 .venv/bin/python -m benchmarks.predict_gap.state --gap /tmp/gap [--invokes 120] [--split-ms 7.8]

If the layers (other interpreters, weights hot in L2) slow down exactly when the whole model
does, the state belongs to the core, not to the model. Prints one JSON line (ms).
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from device_agents.runner import TfliteModel  # noqa: E402

#: LUT keys of the model's breakdown timed after each whole-model invoke
LAYERS = ("conv:14x14:112->672:k1s1g1:hswish:r0:float32", "linear:1x1:1280->1000:k1s1g1:none:r0:float32",
          "dwconv:112x112:64->64:k3s2g64:relu:r0:float32")


def cpu_ms(run) -> float:
    c0 = time.thread_time_ns()
    run()
    return (time.thread_time_ns() - c0) / 1e6


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gap", default="/tmp/gap", help="predict_gap.export's folder")
    p.add_argument("--invokes", type=int, default=120)
    p.add_argument("--split-ms", type=float, default=7.8)
    args = p.parse_args(argv)
    layout = json.loads((Path(args.gap) / "layers.json").read_text())
    files = {lay["key"]: lay["file"] for st in layout["stages"] for lay in st["layers"]}
    rng = np.random.default_rng(0)
    whole = TfliteModel(layout["whole"], 1, "xnnpack", rng)
    layers = {k: TfliteModel(files[k], 1, "xnnpack", rng) for k in LAYERS}
    for m in [whole, *layers.values()]:
        for _ in range(3):
            m.run()
    rows = []
    gc.disable()
    for _ in range(args.invokes):
        row = {"whole": cpu_ms(whole.run)}
        for k, m in layers.items():
            m.run()  # untimed: its weights back in cache after the whole model evicted them
            row[k] = min(cpu_ms(m.run) for _ in range(3))
        rows.append(row)
    gc.enable()
    fast = [r for r in rows if r["whole"] < args.split_ms]
    slow = [r for r in rows if r["whole"] >= args.split_ms]
    out = {"invokes": len(rows), "fast_invokes": len(fast)}
    for name in ["whole", *LAYERS]:
        for state, group in (("fast", fast), ("slow", slow)):
            if group:
                out[f"{name}@{state}"] = round(statistics.median(r[name] for r in group), 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
