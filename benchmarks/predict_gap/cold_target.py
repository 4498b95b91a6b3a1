"""Does a colder row close more of the gap? Weights-cold files of a model's keys at another
copy target (`--target-mib`) than `--context cold`'s own (`cold_models.COLD_TARGET_BYTES`),
timed in one process beside the whole model, its hot layer files and the cache's cold files
(docs/predict.md, "What was built from it": its four runs compared 24 MiB with the first
default, 8 MiB).

    .venv/bin/python -m benchmarks.predict_gap.cold_target export --onnx M.onnx --out /tmp/cold24 [--target-mib 24]
    .venv/bin/python -m benchmarks.predict_gap.cold_target time --onnx M.onnx --tflite M.tflite \\
        --cache /tmp/bp8/cache --out /tmp/cold24 [--target-mib 24] [--blocks 20]

The hot and cold files are those `bench_predict --contexts alone,cold` left in `--cache`.
`--target-mib` changes `cold_models.COLD_TARGET_BYTES` / `MAX_COPIES` in this process only
(`--max-copies`, default 48). Timing: pinned to core 1, every file `--blocks` x 20 invokes,
thread CPU time; prints p10 and median sums (each file less the overhead model, per copy,
plus one overhead) against the whole model.
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import profiler.cold_models as cold_models  # noqa: E402
from device_agents.runner import TfliteModel  # noqa: E402
from profiler.export import ModelCache, export_cold_layer  # noqa: E402
from profiler.graph_keys import map_graph  # noqa: E402
from profiler.model_graph import load_model  # noqa: E402
from profiler.runtimes import COLD  # noqa: E402
from profiler.same_batch import layers_now_ms  # noqa: E402


def copies_at(keys: list, target_mib: float | None, max_copies: int) -> list[int]:
    """Each key's N at `target_mib` (None: the module's own target)."""
    saved = cold_models.COLD_TARGET_BYTES, cold_models.MAX_COPIES
    if target_mib is not None:
        cold_models.COLD_TARGET_BYTES, cold_models.MAX_COPIES = int(target_mib * 2**20), max_copies
    try:
        return [cold_models.copies(k) for k in keys]
    finally:
        cold_models.COLD_TARGET_BYTES, cold_models.MAX_COPIES = saved


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("step", choices=("export", "time"))
    p.add_argument("--onnx", required=True)
    p.add_argument("--tflite")
    p.add_argument("--cache", default="/tmp/bp8/cache")
    p.add_argument("--out", default="/tmp/cold24")
    p.add_argument("--target-mib", type=float, default=24.0)
    p.add_argument("--max-copies", type=int, default=48)
    p.add_argument("--blocks", type=int, default=20)
    args = p.parse_args(argv)
    keys = [m.key for m in map_graph(load_model(args.onnx)).layers]
    big = copies_at(keys, args.target_mib, args.max_copies)
    out = Path(args.out)
    if args.step == "export":
        cold_models.COLD_TARGET_BYTES, cold_models.MAX_COPIES = int(args.target_mib * 2**20), args.max_copies
        for key, n in dict(zip(keys, big)).items():
            path = out / f"{key.digest}.tflite"
            if n > 1 and not path.exists():
                export_cold_layer(key, "tflite", path)
                print(f"{key.key}: N={n}", flush=True)
        return
    os.sched_setaffinity(0, {1})
    with ModelCache(args.cache, "tflite", jobs=1) as cache, ModelCache(args.cache, "tflite", jobs=1,
                                                                       context=COLD) as cold_cache:
        hot = [cache.layer_path(k) for k in keys]
        small = copies_at(keys, None, 0)
        cold = [cold_cache.layer_path(k) if n > 1 else h for k, h, n in zip(keys, hot, small)]
        overhead = cache.overhead()
    colder = [out / f"{k.digest}.tflite" if n > 1 else h for k, h, n in zip(keys, hot, big)]
    files = {"whole": Path(args.tflite), "overhead": overhead,
             **{str(f): f for f in dict.fromkeys(hot + cold + colder)}}
    rng = np.random.default_rng(0)
    models = {name: TfliteModel(str(f), 1, "xnnpack", rng) for name, f in files.items()}
    cpu: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.blocks):
        gc.disable()
        for name, model in models.items():
            model.run()
            for _ in range(20):
                c0 = time.thread_time_ns()
                model.run()
                cpu[name].append((time.thread_time_ns() - c0) / 1e6)
        gc.enable()
    for stat, fn in (("p10", lambda v: float(np.percentile(v, 10))), ("median", statistics.median)):
        names = list(cpu)
        t = [fn(cpu[name]) for name in names]
        o, whole = t[names.index("overhead")], t[names.index("whole")]
        default = f"cache cold {cold_models.COLD_TARGET_BYTES / 2**20:g} MiB"  # what --context cold measures
        sums = {label: layers_now_ms(t, [names.index(str(f)) for f in paths], o, copies)
                for label, paths, copies in (("hot", hot, ()), (default, cold, small),
                                             (f"--target-mib {args.target_mib:g}", colder, big))}
        print(f"{stat:6} whole {whole:.3f}  " + "  ".join(f"{k} {v:.3f} ({100 * (v / whole - 1):+.1f}%)"
                                                         for k, v in sums.items()))
    print(f"load {os.getloadavg()[0]:.2f} at {time.strftime('%H:%M:%S')}")


if __name__ == "__main__":
    main()
