"""Is the host's "slow state" the other vCPU's work? A whole model and its LUT layer files on
core 1 while core 0 is idle, spins (compute, a few KiB of data) or streams memory (64 MiB
copies), in interleaved blocks (docs/predict.md, "Why the LUT sum misses").

    .venv/bin/python -m benchmarks.predict_gap.neighbour --onnx M.onnx --tflite M.tflite \\
        --cache /tmp/bp7/cache [--blocks 4] [--invokes 30]

The model's breakdown (`map_graph` of the .onnx) names its LUT layer files in the TFLite model
cache (exported by `lutbuild predict --measure-missing` into `--cache`; generic keys' files
too); the cold files of `--context cold` are used where the cache has them. Each block starts
the co-runner on core 0 (`taskset -c 0`), waits 1 s, times every model `--invokes` times
(wall and thread CPU time, pinned to core 1), and stops the co-runner. Prints, per condition,
the whole model's p10/median and its layers' sum (each p10/median less the overhead model's,
plus one overhead), for wall and CPU time. Needs core 0 otherwise idle: run it alone.
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from device_agents.runner import TfliteModel  # noqa: E402
from profiler.cold_models import copies  # noqa: E402
from profiler.export import ModelCache  # noqa: E402
from profiler.graph_keys import map_graph  # noqa: E402
from profiler.model_graph import load_model  # noqa: E402
from profiler.runtimes import COLD  # noqa: E402

CO_RUNNERS = {
    "idle": None,
    "spin": "x = 0\nwhile True:\n    x = (x * 1103515245 + 12345) & 0xFFFFFFFF\n",
    "stream": ("import numpy as np\na = np.ones(2**24, np.float32); b = np.empty_like(a)\n"
               "while True:\n    np.copyto(b, a)\n"),
}


def timed(model: TfliteModel, n: int) -> tuple[list[float], list[float]]:
    """(wall ms, thread CPU ms) of `n` invokes after one untimed."""
    model.run()
    wall, cpu = [], []
    for _ in range(n):
        w0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        model.run()
        wall.append((time.perf_counter_ns() - w0) / 1e6)
        cpu.append((time.thread_time_ns() - c0) / 1e6)
    return wall, cpu


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--onnx", required=True)
    p.add_argument("--tflite", required=True)
    p.add_argument("--cache", required=True)
    p.add_argument("--blocks", type=int, default=4)
    p.add_argument("--invokes", type=int, default=30)
    args = p.parse_args(argv)
    os.sched_setaffinity(0, {1})
    keys = [m.key for m in map_graph(load_model(args.onnx)).layers]
    with ModelCache(args.cache, "tflite", jobs=1) as cache, ModelCache(args.cache, "tflite", jobs=1,
                                                                       context=COLD) as cold_cache:
        hot = [cache.layer_path(k) for k in keys]
        cold = [cold_cache.layer_path(k) for k in keys]
        overhead = cache.overhead()
    n = [copies(k) for k in keys]
    cold = [c if c.exists() and m > 1 else h for c, h, m in zip(cold, hot, n)]
    rng = np.random.default_rng(0)
    files = {"whole": Path(args.tflite), "overhead": overhead,
             **{str(f): f for f in dict.fromkeys(hot + cold)}}
    models = {name: TfliteModel(str(f), 1, "xnnpack", rng) for name, f in files.items()}
    runs: dict[str, dict[str, dict[str, list[float]]]] = {c: {} for c in CO_RUNNERS}
    for block in range(args.blocks):
        for cond, code in CO_RUNNERS.items():
            co = None if code is None else subprocess.Popen(["taskset", "-c", "0", sys.executable, "-c", code])
            time.sleep(1.0)
            gc.disable()
            try:
                for name, model in models.items():
                    wall, cpu = timed(model, args.invokes)
                    slot = runs[cond].setdefault(name, {"wall": [], "cpu": []})
                    slot["wall"] += wall
                    slot["cpu"] += cpu
            finally:
                gc.enable()
                if co is not None:
                    co.kill()
                    co.wait()
        print(f"block {block + 1}/{args.blocks} done, load {os.getloadavg()[0]:.2f}", file=sys.stderr)
    for cond, by_model in runs.items():
        for clock in ("wall", "cpu"):
            for stat, fn in (("p10", lambda v: float(np.percentile(v, 10))), ("median", statistics.median)):
                t = {name: fn(v[clock]) for name, v in by_model.items()}
                o = t["overhead"]
                alone = sum(t[str(f)] - o for f in hot) + o
                colder = sum((t[str(f)] - o) / m for f, m in zip(cold, n)) + o
                w = t["whole"]
                print(f"{cond:6} {clock:4} {stat:6} whole {w:7.3f}  layers alone {alone:7.3f} "
                      f"({100 * (alone / w - 1):+5.1f}%)  with cold rows {colder:7.3f} "
                      f"({100 * (colder / w - 1):+5.1f}%)")


if __name__ == "__main__":
    main()
