"""Why the LUT sum misses mobilenetv3_large_100 (TFLite, 1 thread): time the whole model, its
stage sub-models, its prefix chains and its LUT layer files in ONE process, interleaved, with
wall and thread CPU time per invoke (docs/predict.md, "Why the LUT sum misses").

    .venv/bin/python -m benchmarks.predict_gap.export --out /tmp/gap     # once
    taskset -c 1 .venv/bin/python -m benchmarks.predict_gap.chains --gap /tmp/gap [--rounds 8] [--runs 15]
        [--flush-mb 0] [--instances 3] [--json F]

Every model of the set is loaded once (the project runner's `TfliteModel`: XNNPACK, 1 thread,
random inputs), then `--rounds` passes go over all of them (A, B, C, A, B, C...: load and
frequency drift spread over all), each pass `--warmup` untimed then `--runs` timed invokes.
With `--flush-mb M`, every timed invoke of a LAYER file is preceded by a pass over an M MiB
buffer (`--flush-mode read`: summed, clean evictions; `write`: dirty lines), which evicts the
core's L2 (4 MiB here) as the ~21 MB of weights of the rest of a whole network do; only the
invoke is timed. Figures are medians of the pooled runs, in ms; thread
CPU time (CLOCK_THREAD_CPUTIME_ID) does not count time the thread was descheduled, so it
stays honest on a loaded host where wall time does not, and "uninterrupted" is the median
wall time of the invokes during which the thread had no involuntary context switch
(getrusage RUSAGE_THREAD ru_nivcsw unchanged): no other task took the core and its caches.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from device_agents.runner import TfliteModel  # noqa: E402


def _switches() -> int:
    """Involuntary context switches of this thread so far (another task took the core)."""
    return resource.getrusage(resource.RUSAGE_THREAD).ru_nivcsw


def time_model(run, warmup: int, runs: int, flush=None) -> tuple[list[int], list[int], list[int]]:
    """(wall ns, thread CPU ns, wall ns of the invokes no other task interrupted) per timed
    invoke; `flush()` runs untimed before each invoke."""
    for _ in range(warmup):
        if flush:
            flush()
        run()
    wall, cpu, clean = [], [], []
    for _ in range(runs):
        if flush:
            flush()
        s0 = _switches()
        c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
        run()
        t1, c1 = time.perf_counter_ns(), time.thread_time_ns()
        wall.append(t1 - t0)
        cpu.append(c1 - c0)
        if _switches() == s0:
            clean.append(t1 - t0)
    return wall, cpu, clean


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gap", default="/tmp/gap", help="predict_gap.export's folder")
    p.add_argument("--whole", help="the whole-model file (default: the one predict_gap.export recorded)")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--runs", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--flush-mb", type=float, default=0.0)
    p.add_argument("--flush-mode", choices=("read", "write"), default="read",
                   help="read: sum the buffer (clean evictions, as reading the next layers' weights); "
                        "write: add 1 to it (dirty lines the timed invoke then writes back)")
    p.add_argument("--instances", type=int, default=3,
                   help="interpreters of each whole / prefix / stage file (layer files: one each)")
    p.add_argument("--only", default="whole,prefix,stage,layer")
    p.add_argument("--json")
    args = p.parse_args(argv)
    gap = Path(args.gap)
    layout = json.loads((gap / "layers.json").read_text())
    rng = np.random.default_rng(0)
    only = set(args.only.split(","))
    models: dict[str, tuple[str, object]] = {}  # name -> (group, model)
    if "whole" in only:
        for i in range(args.instances):
            models[f"whole#{i}"] = ("whole", TfliteModel(args.whole or layout["whole"], 1, "xnnpack", rng))
    if "prefix" in only:
        for pr in layout["prefixes"]:
            for i in range(args.instances):
                models[f"prefix-{pr['k']}#{i}"] = ("prefix", TfliteModel(pr["file"], 1, "xnnpack", rng))
    if "stage" in only:
        for st in layout["stages"]:
            for i in range(args.instances):
                models[f"stage-{st['stage']}#{i}"] = ("stage", TfliteModel(st["file"], 1, "xnnpack", rng))
    if "layer" in only:
        for st in layout["stages"]:
            for lay in st["layers"]:
                if lay["key"] not in models:
                    models[lay["key"]] = ("layer", TfliteModel(lay["file"], 1, "xnnpack", rng))
    buf = np.zeros(int(args.flush_mb * 2**20) // 8) if args.flush_mb else None

    def flush() -> None:
        if args.flush_mode == "write":
            np.add(buf, 1.0, out=buf)
        else:
            float(buf.sum())

    wall = {n: [] for n in models}
    cpu = {n: [] for n in models}
    clean = {n: [] for n in models}
    gc.disable()
    for _ in range(args.rounds):
        for name, (group, model) in models.items():
            w, c, k = time_model(model.run, args.warmup, args.runs, flush if (buf is not None and group == "layer")
                              else None)
            wall[name] += w
            cpu[name] += c
            clean[name] += k
    gc.enable()
    med = {n: statistics.median(wall[n]) / 1e6 for n in models}
    cmed = {n: statistics.median(cpu[n]) / 1e6 for n in models}
    # 10th percentile of CPU time: the runs of the core's fast state that no other task disturbed
    cp10 = {n: float(np.percentile(cpu[n], 10)) / 1e6 for n in models}
    mn = {n: min(wall[n]) / 1e6 for n in models}
    # the median of the uninterrupted invokes (the wall median when none was)
    cl = {n: statistics.median(clean[n] or wall[n]) / 1e6 for n in models}
    ncl = {n: len(clean[n]) / len(wall[n]) for n in models}
    out = {"pid": os.getpid(), "cpus": sorted(os.sched_getaffinity(0)), "load": os.getloadavg(),
           "args": vars(args), "wall_ms": med, "cpu_ms": cmed, "cpu_p10_ms": cp10, "min_ms": mn,
           "clean_ms": cl, "clean_share": ncl}
    print(f"pid {os.getpid()} cpus {out['cpus']} load {out['load'][0]:.2f} flush {args.flush_mb} MiB {args.flush_mode}")
    for n in models:
        if models[n][0] != "layer":
            print(f"  {n:12} wall {med[n]:7.3f}  cpu {cmed[n]:7.3f} p10 {cp10[n]:7.3f}  min {mn[n]:7.3f}  "
                  f"uninterrupted {cl[n]:7.3f} ({100 * ncl[n]:.0f}% of runs)")
    if "layer" in only:
        for st in layout["stages"]:
            lw = sum(med[lay["key"]] for lay in st["layers"])
            lc = sum(cmed[lay["key"]] for lay in st["layers"])
            lm = sum(mn[lay["key"]] for lay in st["layers"])
            s = f"stage-{st['stage']}#0"
            alone = f" stage#0 min {mn[s]:7.3f} cpu {cmed[s]:7.3f}" if s in med else ""
            print(f"  layers of stage {st['stage']}: LUT {st['lut_ms']:6.3f}  now wall {lw:6.3f} cpu {lc:6.3f} "
                  f"min {lm:6.3f}{alone}")
        tot = sum(med[lay["key"]] for st in layout["stages"] for lay in st["layers"])
        totc = sum(cmed[lay["key"]] for st in layout["stages"] for lay in st["layers"])
        totk = sum(cl[lay["key"]] for st in layout["stages"] for lay in st["layers"])
        totp = sum(cp10[lay["key"]] for st in layout["stages"] for lay in st["layers"])
        lut = sum(st["lut_ms"] for st in layout["stages"])
        print(f"  sum of layers now: wall {tot:.3f} cpu {totc:.3f} cpu p10 {totp:.3f} uninterrupted {totk:.3f} "
              f"(LUT {lut:.3f})")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
