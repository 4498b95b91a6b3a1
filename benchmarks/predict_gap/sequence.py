"""Is the LUT sum's residual miss the order of execution? Time a model's LUT layer files as the
LUT times them (each file's invokes back to back) and as the network runs them (one invoke
of each line in the model's order, sweep after sweep), beside the whole model, in ONE process
(docs/predict.md, "Why the LUT sum misses").

    taskset -c 1 .venv/bin/python -m benchmarks.predict_gap.sequence --workdir /tmp/bp \
        --model mobilenetv3_large_100 [--px 224] [--rounds 6] [--runs 20] [--sweeps 20] [--json F]

Needs a `bench_predict` run of the model (TFLite) in `--workdir`: its whole-model files and the
model cache's layer files (the files the LUT's rows were measured with; generic keys' one-operator
models). Every breakdown line gets its own interpreter (repeated keys too: distinct packed
weights, as the network's layers have). Per round, interleaved, wall time per invoke:

| mode | what each line's figure is |
| --- | --- |
| `whole` | the whole model, its invokes back to back |
| `b2b` | the LUT's protocol: the line's file invoked back to back (warm-up, then `--runs`) |
| `cold` | the weights-cold file of `--context cold` (N copies; (time - overhead) / N), back to back |
| `sequence` | one invoke of each line in the model's order, `--sweeps` times: each layer runs right |
| | after its predecessor, as in the network (code and weights as cold as there; its input colder: |
| | each file holds its own input buffer, last written a sweep ago) |
| `fed` | `sequence` with each line's input written again (untimed) just before its invoke: hot, as a |
| | predecessor's output is in the network; weights, code and the output buffer left as cold |
| `shuffled` | `sequence` with the lines in a new random order each sweep (a batch of unrelated layers) |
| `flushed` | back to back, each timed invoke after (untimed) a read of `--flush-mib` (every cache level |
| | evicted: weights cold) and its input written again (hot, as a predecessor's output) |

A mode's sum = sum over lines of (line's median - the overhead model's median) + one overhead,
as `LatencyTable.predict`; the same with 10th percentiles. The ratio to the whole model is taken
within each round (the host's state shared), then its median over rounds is printed.
Nothing here is used by the package or its tests.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.bench_predict import model_keys  # noqa: E402
from benchmarks.predict_gap.chains import time_model  # noqa: E402
from device_agents.runner import TfliteModel  # noqa: E402
from profiler.export import ModelCache  # noqa: E402
from profiler.layer_files import cold_layer_files, layer_files  # noqa: E402

MODES = ("b2b", "cold", "sequence", "fed", "shuffled", "flushed")


def timed(run) -> int:
    t0 = time.perf_counter_ns()
    run()
    return time.perf_counter_ns() - t0


def back_to_back(run, warmup: int, runs: int, before=None) -> list[int]:
    """Wall ns of `runs` invokes after `warmup` (chains.time_model's loop; `before()` untimed before each)."""
    return time_model(run, warmup, runs, before)[0]


def feeder(model: TfliteModel):
    """Writes the model's inputs again (the values it holds): leaves its input buffers hot."""
    interpreter = model.interpreter
    inputs = [(d["index"], interpreter.get_tensor(d["index"])) for d in interpreter.get_input_details()]

    def feed() -> None:
        for index, value in inputs:
            interpreter.set_tensor(index, value)
    return feed


def flush_and_feed(buf: np.ndarray, feed):
    """Read all of `buf` (evicts every cache level it exceeds), then `feed()`."""
    def before() -> None:
        float(buf.sum())
        feed()
    return before


def sweeps(runs: list, orders: list[list[int]], feeds: list | None = None) -> list[list[int]]:
    """Per line, its invoke times over the sweeps; `orders[k]` is sweep k's line order, and the
    first sweep is untimed (first invokes pay allocation); `feeds[i]()` runs untimed before line i."""
    times: list[list[int]] = [[] for _ in runs]
    for i in orders[0]:
        runs[i]()
    for order in orders[1:]:
        for i in order:
            if feeds:
                feeds[i]()
            times[i].append(timed(runs[i]))
    return times


def stat(values: list[int], q: float) -> float:
    return float(np.percentile(values, q)) / 1e6


def mode_sum(per_line: list[list[int]], overhead: list[int], q: float, copies: list[int] | None = None) -> float:
    """sum over lines of (line's q-th percentile - overhead's) [/ copies] + one overhead, in ms."""
    ovh = stat(overhead, q)
    copies = copies or [1] * len(per_line)
    return sum(max(stat(t, q) - ovh, 0.0) / c for t, c in zip(per_line, copies)) + ovh


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True, help="bench_predict's --workdir")
    p.add_argument("--model", default="mobilenetv3_large_100")
    p.add_argument("--px", type=int, default=224)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--runs", type=int, default=20, help="timed invokes per line and round, back to back")
    p.add_argument("--sweeps", type=int, default=20, help="timed sweeps per round in sequence / shuffled")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--flush-mib", type=float, default=64.0, help="`flushed`: MiB read before each invoke")
    p.add_argument("--no-cold", action="store_true", help="skip the weights-cold files")
    p.add_argument("--json")
    args = p.parse_args(argv)
    for name in ("rounds", "runs", "sweeps", "flush_mib"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')}: expected a number > 0, got {getattr(args, name)}")
    work = Path(args.workdir)
    stem = work / "models" / f"{args.model}-{args.px}"
    onnx, tflite = stem.with_suffix(".onnx"), stem.with_suffix(".tflite")
    if not onnx.is_file() or not tflite.is_file():
        sys.exit(f"predict_gap.sequence: no bench_predict run of {args.model} at {args.px} px in {work}")
    keys = model_keys(onnx)  # read once: the hot and the cold files of the same lines
    with ModelCache(work / "cache", "tflite", jobs=1) as cache:
        files = layer_files(keys, "tflite", cache)
        overhead_file = cache.overhead()
    cold, copies = (None, None) if args.no_cold else cold_layer_files(keys, "tflite", work / "cache", files)
    rng = np.random.default_rng(0)
    whole = TfliteModel(str(tflite), 1, "xnnpack", rng).run
    overhead = TfliteModel(str(overhead_file), 1, "xnnpack", rng).run
    models = [TfliteModel(str(f), 1, "xnnpack", rng) for f in files]
    lines, feeds = [m.run for m in models], [feeder(m) for m in models]
    cold_lines = [TfliteModel(str(f), 1, "xnnpack", rng).run for f in cold] if cold else None
    order = list(range(len(lines)))
    print(f"{args.model} {args.px} px: {len(lines)} lines, pid {os.getpid()}, cpus {sorted(os.sched_getaffinity(0))}")

    buf = np.ones(int(args.flush_mib * 2**20) // 8)
    rounds = []
    gc.disable()
    for r in range(args.rounds):
        fig = {"load": os.getloadavg()[0]}
        w = back_to_back(whole, args.warmup, args.runs)
        ovh = back_to_back(overhead, args.warmup, args.runs)
        per = {"b2b": [back_to_back(run, args.warmup, args.runs) for run in lines],
               "sequence": sweeps(lines, [order] * (args.sweeps + 1)),
               "fed": sweeps(lines, [order] * (args.sweeps + 1), feeds)}
        if cold_lines:
            per["cold"] = [back_to_back(run, args.warmup, args.runs) for run in cold_lines]
        per["flushed"] = [back_to_back(run, 2, max(args.runs // 2, 5), flush_and_feed(buf, feed))
                          for run, feed in zip(lines, feeds)]
        shuffles = [rng.permutation(len(lines)).tolist() for _ in range(args.sweeps + 1)]
        per["shuffled"] = sweeps(lines, shuffles)
        w += back_to_back(whole, args.warmup, args.runs)  # the whole model on both sides of the round
        for q, name in ((50, "median"), (10, "p10")):
            fig[f"whole_{name}_ms"] = stat(w, q)
            for mode in MODES:
                if mode in per:
                    s = mode_sum(per[mode], ovh, q, copies if mode == "cold" else None)
                    fig[f"{mode}_{name}_ms"] = s
                    fig[f"{mode}_{name}_error_pct"] = 100 * (s / fig[f"whole_{name}_ms"] - 1)
        # the sequence's own per-sweep totals: the whole model's op list run as separate models
        totals = [sum(t[k] for t in per["sequence"]) for k in range(args.sweeps)]
        fig["sequence_sweep_median_ms"] = statistics.median(totals) / 1e6
        rounds.append(fig)
        print(f"round {r}: load {fig['load']:.2f}  whole {fig['whole_median_ms']:.3f} / {fig['whole_p10_ms']:.3f} ms  "
              + "  ".join(f"{m} {fig[f'{m}_median_error_pct']:+.1f}% / {fig[f'{m}_p10_error_pct']:+.1f}%"
                          for m in MODES if f"{m}_median_ms" in fig))
    gc.enable()
    summary = {f"{m}_{s}_error_pct": statistics.median(f[f"{m}_{s}_error_pct"] for f in rounds)
               for m in MODES if f"{m}_median_ms" in rounds[0] for s in ("median", "p10")}
    print("median over rounds (median / p10): "
          + "  ".join(f"{m} {summary[f'{m}_median_error_pct']:+.1f}% / {summary[f'{m}_p10_error_pct']:+.1f}%"
                      for m in MODES if f"{m}_median_error_pct" in summary))
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "px": args.px, "args": vars(args),
                                               "cpus": sorted(os.sched_getaffinity(0)), "rounds": rounds,
                                               "summary": summary}, indent=1) + "\n")


if __name__ == "__main__":
    main()
