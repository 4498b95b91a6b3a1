"""The runner's fast-pass rule, side by side: does pooling only each model's passes within 10%
of its fastest bring a LUT sum closer to the network it predicts, or further? (docs/lut.md,
"Per-pass medians, and a fast-pass rule left off": this decided that the rule stays off.)

    .venv/bin/python -m benchmarks.bench_predict --workdir /tmp/bp --runtimes tflite --models X,Y  # makes the files
    .venv/bin/python -m benchmarks.bench_fast_passes --workdir /tmp/bp --models X,Y --batches 6

For each geffnet model that `bench_predict` exported into `--workdir` (`models/<name>-224.tflite`
and `.onnx`, its LUT layer files in `cache/`), `--batches` times: load the overhead model, the
whole model and its alone-context layer files in fresh LiteRT interpreters (the runner's own
`TfliteModel`, `time_pass`, 3 interleaved passes, one core), then compute BOTH statistics from
the SAME passes: every pass pooled (the default) and only the fast passes (`runner.fast_passes`,
`--within-pct`). Per batch: layers-now (`same_batch.layers_now_ms`, the LUT's sum rule) against
the whole model, per statistic. No LUT rows are read, so the host's drift between a build and a
measurement does not enter: only how each statistic treats a 0.05 s layer pass and a ~1 s
network pass in the same state. Writes `benchmarks/results/bench_fast_passes-<date>.json`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/bench_fast_passes.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.bench_lut import machine, versions  # noqa: E402
from benchmarks.bench_predict import same_batch_files  # noqa: E402
from device_agents import runner  # noqa: E402
from device_agents.contract import BenchmarkSettings  # noqa: E402
from profiler.export import ModelCache  # noqa: E402
from profiler.same_batch import layers_now_ms  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SETTINGS = BenchmarkSettings(runtime="tflite")  # the profiler's warm-up and runs per pass


def one_batch(files: list[str], passes: int, within_pct: float, rng) -> dict:
    """One process-like batch: fresh interpreters, `passes` interleaved passes; both statistics."""
    s = SETTINGS
    loaded = [runner.TfliteModel(f, 1, "xnnpack", rng) for f in files]
    timed: list[list[list[int]]] = [[] for _ in files]
    for _ in range(passes):
        for i, model in enumerate(loaded):
            timed[i].append(runner.time_pass(model.run, s.warmup_runs, s.min_runs, s.max_runs, s.min_seconds))
    fast = [runner.fast_passes([float(np.median(p)) for p in model_passes], within_pct) for model_passes in timed]
    out = {}
    for label, keeps in (("pooled", [[True] * passes for _ in timed]), ("fast", fast)):
        medians = [float(np.median(np.concatenate([p for p, k in zip(model_passes, keep) if k]))) / 1e6
                   for model_passes, keep in zip(timed, keeps)]
        whole, layers = medians[1], layers_now_ms(medians, range(2, len(files)), medians[0])
        out[label] = {"whole_ms": whole, "layers_now_ms": layers, "error_pct": 100 * (layers / whole - 1)}
    out["whole_passes_kept"] = sum(fast[1])
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="a bench_predict --workdir (models/ and cache/)")
    parser.add_argument("--models", default="mobilenetv3_large_100,efficientnet_lite0,mnasnet_a1,mixnet_s")
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--within-pct", type=float, default=10.0)
    parser.add_argument("--core", type=int, default=1, help="the core to pin to (the profiler's 1-thread core)")
    args = parser.parse_args(argv)
    work = Path(args.workdir)
    models = args.models.split(",")
    missing = [m for m in models for s in ("onnx", "tflite") if not (work / "models" / f"{m}-224.{s}").is_file()]
    if missing:
        sys.exit(f"bench_fast_passes: {work / 'models'}: no {missing[0]}-224 export; run bench_predict "
                 f"--workdir {work} first")
    if args.batches < 1 or args.passes < 2:
        parser.error("expected --batches >= 1 and --passes >= 2")
    os.sched_setaffinity(0, {args.core})
    with ModelCache(work / "cache", "tflite", jobs=1) as cache:
        overhead = str(cache.overhead())
        files = {m: [overhead, str(work / "models" / f"{m}-224.tflite"),
                     *map(str, same_batch_files(work / "models" / f"{m}-224.onnx", "tflite", cache))] for m in models}
    rng = np.random.default_rng(0)
    rows = {}
    for name in models:
        rows[name] = []
        for b in range(args.batches):
            rows[name].append(one_batch(files[name], args.passes, args.within_pct, rng))
            r = rows[name][-1]
            print(f"{name} {b} {time.strftime('%H:%M:%S')}: pooled {r['pooled']['error_pct']:+.1f}% "
                  f"fast {r['fast']['error_pct']:+.1f}% (network kept {r['whole_passes_kept']} passes)", flush=True)
    print(f"\n{'model':24} {'pooled err':>10} {'fast err':>9} {'layers fast/pooled':>18} {'whole fast/pooled':>17}")
    shifts = []
    for name, batches in rows.items():
        med = {k: float(np.median([b[k]["error_pct"] for b in batches])) for k in ("pooled", "fast")}
        layers = float(np.median([b["fast"]["layers_now_ms"] / b["pooled"]["layers_now_ms"] for b in batches]))
        whole = float(np.median([b["fast"]["whole_ms"] / b["pooled"]["whole_ms"] for b in batches]))
        shifts += [b["fast"]["error_pct"] - b["pooled"]["error_pct"] for b in batches]
        print(f"{name:24} {med['pooled']:>+9.1f}% {med['fast']:>+8.1f}% {layers:>18.3f} {whole:>17.3f}")
    print(f"fast minus pooled error: median {np.median(shifts):+.1f} points, lower in "
          f"{sum(s < 0 for s in shifts)} of {len(shifts)} batches")
    stamp = datetime.now(timezone.utc)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"bench_fast_passes-{stamp:%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps({"date": stamp.isoformat(timespec="seconds"), "machine": machine(),
                               "versions": versions(), "settings": vars(args), "rows": rows}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
