"""LUT benchmark on this host for the small space: build time, verify figures, predictions/s.

    .venv/bin/python -m benchmarks.bench_lut                 # TFLite + ONNX, 50 networks each
    .venv/bin/python -m benchmarks.bench_lut --runtimes onnx --samples 20   # quicker

For each runtime: builds the `full` and the `sparse` LUT of the space with the local agent
(into `--workdir`, resuming; exported models cached under `<workdir>/cache`), measures
`--samples` whole sub-networks once (`profiler.verify`), and scores on those same
measurements the LUT of each plan and the MAC proxy (a*MACs+b fitted on them). Then times
whole-network predictions per second (`LatencyPredictor`, and the plain
`LatencyTable.predict(space.layer_configs(cfg))` path for comparison), and counts the
measurements each plan needs on mbv3-large. Prints a table and writes
`benchmarks/results/bench_lut-<date>.json` (machine, versions, date, every figure).
The build times are only meaningful on an otherwise idle host.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import random
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/bench_lut.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lut_db.reader import LatencyTable  # noqa: E402
from profiler.agents import open_agent  # noqa: E402
from profiler.build import BuildOptions, build_lut, slice_runtime  # noqa: E402
from profiler.plan import make_plan  # noqa: E402
from profiler.predictor import LatencyPredictor  # noqa: E402
from profiler.verify import VerifyOptions, verify_lut  # noqa: E402
from profiler.verify_report import ErrorStats, error_stats, format_error_stats  # noqa: E402
from search.spaces import get_space  # noqa: E402
from search.spaces.space import SubnetConfig  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def versions() -> dict:
    out = {"python": platform.python_version()}
    for dist in ("torch", "litert-torch", "ai-edge-litert", "onnxruntime", "onnx", "numpy"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def machine() -> dict:
    from device_agents.local import cpu_model

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
            "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def predictions_per_second(space, table, n: int = 100_000, seed: int = 0) -> dict:
    rng = random.Random(seed)
    configs = [space.random_config(rng) for _ in range(n)]
    predictor = LatencyPredictor(space, table)
    predictor.predict_many(configs[:2000])  # fill the per-block caches (a search does this once)
    start = time.perf_counter()
    predictor.predict_many(configs)
    fast = n / (time.perf_counter() - start)
    sample = configs[:5000]
    start = time.perf_counter()
    for cfg in sample:
        table.predict(space.layer_configs(cfg))
    plain = len(sample) / (time.perf_counter() - start)
    return {"networks": n, "predictor_per_s": fast, "layer_configs_sum_per_s": plain}


def bench_runtime(space, runtime: str, args, agent) -> dict:
    work = Path(args.workdir)
    out: dict = {"runtime": runtime, "plans": {}}
    dbs = {}
    for plan in ("full", "sparse"):
        db = dbs[plan] = work / f"{space.name}-{runtime}-{plan}.sqlite"
        options = BuildOptions(plan=plan, jobs=args.jobs, cache_dir=work / "cache")
        report = build_lut(space, agent, db, runtime, options, progress=not args.quiet)
        out["plans"][plan] = {"build": {k: v for k, v in vars(report).items()},
                              "measured_keys": len(make_plan(space, plan).measure)}
        print(f"[{runtime}] {report.summary()}", file=sys.stderr)
    verify = verify_lut(space, agent, dbs["full"], runtime,
                        VerifyOptions(samples=args.samples, seed=args.seed, jobs=args.jobs, cache_dir=work / "cache"),
                        progress=not args.quiet).to_json_dict()
    measured = [s["measured_ms"] for s in verify["samples"]]
    configs = [SubnetConfig.from_dict(s["subnet"]) for s in verify["samples"]]
    info = agent.info()
    rt = slice_runtime(runtime)
    for plan, db in dbs.items():
        table = LatencyTable.load(db, info.device_id, runtime, rt.options)
        predicted = LatencyPredictor(space, table).predict_many(configs)
        out["plans"][plan]["lut"] = error_stats(predicted, measured).to_json_dict()
    out["mac_proxy"] = verify["mac_proxy"]
    out["noise"] = verify["noise"]
    out["runtime_version"] = verify["runtime_version"]
    out["overhead_ms"] = verify["overhead_ms"]
    out["samples"] = verify["samples"]
    table = LatencyTable.load(dbs["full"], info.device_id, runtime, rt.options)
    out["prediction_speed"] = predictions_per_second(space, table)
    return out


def table_lines(result: dict) -> list[str]:
    lines = [f"{'runtime':<7} {'predictor':<16} {'measured keys':>13} {'MAPE %':>7} {'±5 %':>6} {'±10 %':>6} "
             f"{'Spearman':>8} {'bias %':>7}"]
    for r in result["runtimes"]:
        rows = [(f"LUT {p}", r["plans"][p]["measured_keys"], r["plans"][p]["lut"]) for p in ("full", "sparse")]
        rows.append(("MAC proxy", 0, r["mac_proxy"]))
        for name, keys, s in rows:
            lines.append(f"{r['runtime']:<7} {name:<16} {keys:>13} {format_error_stats(ErrorStats.from_json_dict(s))}")
        n = r["noise"]
        speed = r["prediction_speed"]
        lines.append(f"{r['runtime']:<7} noise: CoV between rounds {n['cov_between_rounds_pct_median']:.2f}% (median), "
                     f"reference drift {n['reference_drift_pct']}; build full "
                     f"{r['plans']['full']['build']['wall_s']:.0f} s; predictions "
                     f"{speed['predictor_per_s']:,.0f}/s (LatencyPredictor), "
                     f"{speed['layer_configs_sum_per_s']:,.0f}/s (LatencyTable over layer_configs)")
    large = result["mbv3_large_plans"]
    lines.append(f"mbv3-large: full plan {large['full']} measurements, sparse {large['sparse']} "
                 f"({large['full'] / large['sparse']:.1f}x fewer)")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="mbv3-tiny")
    p.add_argument("--runtimes", default="tflite,onnx")
    p.add_argument("--samples", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--workdir", default="runs/bench_lut", help="LUT files and the export cache (resumed)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    space = get_space(args.space)
    agent = open_agent("local")
    started = datetime.now(timezone.utc)
    result = {"benchmark": "bench_lut", "date": started.isoformat(timespec="seconds"), "space": space.name,
              "machine": machine(), "versions": versions(), "device": vars(agent.info()),
              "samples": args.samples, "seed": args.seed, "runtimes": []}
    for runtime in [r.strip() for r in args.runtimes.split(",") if r.strip()]:
        result["runtimes"].append(bench_runtime(space, runtime, args, agent))
    large = get_space("mbv3-large")
    result["mbv3_large_plans"] = {p: len(make_plan(large, p).measure) for p in ("full", "sparse")}
    result["wall_s"] = (datetime.now(timezone.utc) - started).total_seconds()
    lines = table_lines(result)
    print("\n".join(lines))
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"bench_lut-{started.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
