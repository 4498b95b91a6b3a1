"""Cold weights, isolated: per-block time of a chain of K identical 1x1-conv blocks (14x14,
112 -> 672 hard-swish -> 112; 0.6 MB of float32 weights each, distinct weights per block) as K
grows past the core's L2 (docs/predict.md, "Why the LUT sum misses").

    .venv/bin/python -m benchmarks.predict_gap.weights export --out /tmp/gapw
    taskset -c 1 .venv/bin/python -m benchmarks.predict_gap.weights time --out /tmp/gapw [--rounds 20]

The activations (14x14x672 floats, 0.5 MB at most) stay in L2 at any K; only the weights a
block reads were last touched K - 1 blocks ago. Chains are timed interleaved (one pass of
`--runs` invokes per chain per round) in thread CPU time; printed: the median and the 10th
percentile per block (ms) and their ratio to K = 1.
"""
from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from device_agents.runner import TfliteModel  # noqa: E402
from profiler.export import export_module  # noqa: E402

KS = (1, 2, 4, 8, 16, 32)


def export(out: Path) -> None:
    torch.manual_seed(0)
    for k in KS:
        blocks = [nn.Sequential(nn.Conv2d(112, 672, 1), nn.Hardswish(), nn.Conv2d(672, 112, 1)) for _ in range(k)]
        export_module(nn.Sequential(*blocks).eval(), (torch.randn(1, 112, 14, 14),), "tflite",
                      out / f"chain-{k}.tflite")
        print(f"chain-{k}: {k * 2 * 112 * 672 * 4 / 2**20:.1f} MiB of weights")


def timing(out: Path, rounds: int, runs: int) -> None:
    rng = np.random.default_rng(0)
    models = {k: TfliteModel(str(out / f"chain-{k}.tflite"), 1, "xnnpack", rng) for k in KS}
    cpu = {k: [] for k in KS}
    gc.disable()
    for _ in range(rounds):
        for k, m in models.items():
            for _ in range(2):
                m.run()
            for _ in range(runs):
                c0 = time.thread_time_ns()
                m.run()
                cpu[k].append((time.thread_time_ns() - c0) / 1e6 / k)
    gc.enable()
    base_med = statistics.median(cpu[1])
    base_p10 = float(np.percentile(cpu[1], 10))
    for k in KS:
        med, p10 = statistics.median(cpu[k]), float(np.percentile(cpu[k], 10))
        print(f"K={k:2}  weights {k * 0.574:5.1f} MiB  per block: median {med:.3f} ms ({med / base_med:.2f}x)  "
              f"p10 {p10:.3f} ms ({p10 / base_p10:.2f}x)")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("step", choices=("export", "time"))
    p.add_argument("--out", default="/tmp/gapw")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    export(out) if args.step == "export" else timing(out, args.rounds, args.runs)


if __name__ == "__main__":
    main()
