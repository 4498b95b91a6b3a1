"""LUT benchmark on this host for the small space: build time, verify figures, predictions/s.

    .venv/bin/python -m benchmarks.bench_lut                 # TFLite + ONNX, 50 networks each
    .venv/bin/python -m benchmarks.bench_lut --runtimes onnx --samples 20   # quicker
    .venv/bin/python -m benchmarks.bench_lut --granularity layer,block --block-plans sparse
    taskset -c 0 .venv/bin/python -m benchmarks.bench_lut --warm ...   # export every file first, time nothing

For each runtime and each `--granularity` (``layer``: one row per layer; ``block``: one row
per whole ir/ds block, `lutbuild build --granularity block`): builds the LUT of each plan
(`--plans` for layer keys, `--block-plans` for block keys) with the local agent (into
`--workdir`, resuming; exported models cached under `--cache-dir`), measures `--samples`
whole sub-networks once (`profiler.verify`), and scores on those same measurements the LUT
of each (granularity, plan) and the MAC proxy (a*MACs+b fitted on them), with the
measurements each plan needs and its build time. `--warm` only exports what a run needs
(layer and block models, the sampled networks) and records the export CPU seconds per
plan in `<workdir>/export_cost.json`, which a later timed run reports beside its
benchmark times (run it on another core than the timed run). Then times
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
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/bench_lut.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lut_db.reader import LatencyTable  # noqa: E402
from profiler.agents import open_agent  # noqa: E402
from profiler.block_plan import GRANULARITIES, make_block_plan  # noqa: E402
from profiler.build import DEFAULT_CACHE_DIR, BuildOptions, build_lut, slice_runtime  # noqa: E402
from profiler.export import ModelCache  # noqa: E402
from profiler.plan import PLANS, make_plan  # noqa: E402
from profiler.predictor import LatencyPredictor  # noqa: E402
from profiler.runtimes import benchmark_settings  # noqa: E402
from profiler.same_batch import Group, layers_now_ms, plan_batch  # noqa: E402
from profiler.verify import VerifyOptions, draw_subnets, verify_lut  # noqa: E402
from profiler.verify_report import ErrorStats, error_stats, format_error_stats  # noqa: E402
from search.spaces import get_space  # noqa: E402
from search.spaces.space import SubnetConfig  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
#: Keys per plan exported into an empty cache by `--warm` to price a build's exports.
EXPORT_SAMPLE = 12
#: Networks per runner process in the `--same-batch` comparison (each with its layer and block files).
SAME_BATCH_NETWORKS = 5


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


def runs(args) -> list[tuple[str, str]]:
    """(granularity, plan) of every LUT a run builds, in build order."""
    plans = {"layer": args.plans, "block": args.block_plans}
    return [(g, p) for g in args.granularity for p in plans[g]]


def make_any_plan(space, granularity: str, plan: str):
    return make_block_plan(space, plan) if granularity == "block" else make_plan(space, plan)


def lut_path(work: Path, space, runtime: str, granularity: str, plan: str) -> Path:
    """The LUT file of one (granularity, plan); layer files keep their old names (resumed across versions)."""
    suffix = plan if granularity == "layer" else f"block-{plan}"
    return work / f"{space.name}-{runtime}-{suffix}.sqlite"


def warm_runtime(space, runtime: str, args, priced: dict) -> dict:
    """Export every model a timed run of `runtime` needs, and the export CPU seconds each plan costs
    from an empty cache: `EXPORT_SAMPLE` of its keys (evenly spread) exported again into a fresh
    folder, one worker, scaled to the plan's size (the shared cache already holds most files)."""
    out = {}
    configs = draw_subnets(space, args.samples, args.seed)
    with ModelCache(args.cache_dir, runtime, args.jobs) as cache:
        for granularity, plan in runs(args):
            keys = make_any_plan(space, granularity, plan).measure
            cache.layers(keys)
            if f"{granularity}-{plan}" in priced:  # priced by an earlier --warm run
                continue
            sample = list(keys[::max(1, len(keys) // EXPORT_SAMPLE)])[:EXPORT_SAMPLE]
            with tempfile.TemporaryDirectory() as tmp, ModelCache(tmp, runtime, 1) as fresh:
                fresh.layers(sample)
                per_file = fresh.export_cpu_s / len(sample)
            out[f"{granularity}-{plan}"] = {"files": len(keys), "sample": len(sample),
                                            "export_cpu_s_per_file": per_file, "export_cpu_s": per_file * len(keys)}
            print(f"[{runtime}] warm {granularity} {plan}: {out[f'{granularity}-{plan}']}", file=sys.stderr)
        before_n = cache.exported
        cache.networks(space.spec, [c.to_dict() for c in configs])
        for cfg in configs[:args.same_batch]:  # the files `same_batch_granularity` times
            cache.layers(space.block_configs(cfg))
        out["networks"] = {"exported": cache.exported - before_n}
    return out


def bench_runtime(space, runtime: str, args, agent) -> dict:
    work = Path(args.workdir)
    out: dict = {"runtime": runtime, "luts": {}}
    dbs = {}
    for granularity, plan in runs(args):
        name = f"{granularity}-{plan}"
        db = dbs[name] = lut_path(work, space, runtime, granularity, plan)
        options = BuildOptions(plan=plan, jobs=args.jobs, cache_dir=args.cache_dir, granularity=granularity)
        report = build_lut(space, agent, db, runtime, options, progress=not args.quiet)
        out["luts"][name] = {"granularity": granularity, "plan": plan,
                             "build": {k: v for k, v in vars(report).items()},
                             "measured_keys": len(make_any_plan(space, granularity, plan).measure)}
        print(f"[{runtime}] {report.summary()}", file=sys.stderr)
    verify = verify_lut(space, agent, next(iter(dbs.values())), runtime,
                        VerifyOptions(samples=args.samples, seed=args.seed, jobs=args.jobs, cache_dir=args.cache_dir),
                        progress=not args.quiet).to_json_dict()
    measured = [s["measured_ms"] for s in verify["samples"]]
    configs = [SubnetConfig.from_dict(s["subnet"]) for s in verify["samples"]]
    info = agent.info()
    rt = slice_runtime(runtime)
    for name, db in dbs.items():
        table = LatencyTable.load(db, info.device_id, runtime, rt.options)
        predicted = LatencyPredictor(space, table, granularity=out["luts"][name]["granularity"]).predict_many(configs)
        out["luts"][name]["lut"] = error_stats(predicted, measured).to_json_dict()
        out["luts"][name]["predicted_ms"] = predicted
    if args.same_batch:
        out["same_batch"] = same_batch_granularity(space, runtime, args, agent, configs[:args.same_batch])
    out["mac_proxy"] = verify["mac_proxy"]
    out["noise"] = verify["noise"]
    out["runtime_version"] = verify["runtime_version"]
    out["overhead_ms"] = verify["overhead_ms"]
    out["samples"] = verify["samples"]
    table = LatencyTable.load(next(iter(dbs.values())), info.device_id, runtime, rt.options)
    out["prediction_speed"] = predictions_per_second(space, table)
    return out


def same_batch_granularity(space, runtime: str, args, agent, configs: list) -> dict:
    """Layer vs block additivity with the host's drift taken out: each network's file, its layer files
    and its block files timed in the same runner batches (`profiler.same_batch`: each group's files
    right after its model, `--same-batch-rounds` rounds); per network, the median over rounds of
    the layer files' sum and of the block files' sum (each minus the batch's overhead, plus it once)
    against the median of its whole-model timings."""
    settings = benchmark_settings(runtime)
    per_net: list[dict[str, list[float]]] = [{"whole": [], "layer": [], "block": []} for _ in configs]
    with ModelCache(args.cache_dir, runtime, args.jobs) as cache:
        models = cache.networks(space.spec, [c.to_dict() for c in configs])
        groups = []
        for model, cfg in zip(models, configs):
            groups.append(Group(model, tuple(cache.layers(space.layer_configs(cfg)))))
            groups.append(Group(model, tuple(cache.layers(space.block_configs(cfg)))))
        extra = [cache.overhead()]
    for _ in range(args.same_batch_rounds):
        for start in range(0, len(groups), 2 * SAME_BATCH_NETWORKS):
            chunk = groups[start:start + 2 * SAME_BATCH_NETWORKS]
            layout = plan_batch(extra, chunk, share_layers=False)
            medians = [t.median_ms for t in agent.benchmark(layout.files, settings).timings]
            for j, (at, layers_at) in enumerate(zip(layout.model_at, layout.layers_at)):
                net = per_net[(start + j) // 2]
                net["whole"].append(medians[at])
                net["layer" if j % 2 == 0 else "block"].append(layers_now_ms(medians, layers_at, medians[0]))
    whole = [statistics.median(n["whole"]) for n in per_net]
    out = {"networks": len(configs), "rounds": args.same_batch_rounds, "whole_ms": whole}
    for granularity in ("layer", "block"):
        now = [statistics.median(n[granularity]) for n in per_net]
        out[granularity] = {"now_ms": now, "stats": error_stats(now, whole).to_json_dict()}
    return out


def table_lines(result: dict) -> list[str]:
    lines = [f"{'runtime':<7} {'predictor':<18} {'measured keys':>13} {'build s':>8} {'MAPE %':>7} {'±5 %':>6} "
             f"{'±10 %':>6} {'Spearman':>8} {'bias %':>7}"]
    export_cost = result.get("export_cost", {})
    for r in result["runtimes"]:
        rows = [(f"LUT {lut['granularity']} {lut['plan']}", lut["measured_keys"],
                 _build_s(lut, export_cost.get(r["runtime"], {}).get(name)), lut["lut"])
                for name, lut in r["luts"].items()]
        rows.append(("MAC proxy", 0, "-", r["mac_proxy"]))
        for name, keys, build_s, s in rows:
            lines.append(f"{r['runtime']:<7} {name:<18} {keys:>13} {build_s:>8} "
                         f"{format_error_stats(ErrorStats.from_json_dict(s))}")
        same = r.get("same_batch")
        for g in ("layer", "block") if same else ():
            lines.append(f"{r['runtime']:<7} {'same-batch ' + g:<18} {'-':>13} {'-':>8} "
                         f"{format_error_stats(ErrorStats.from_json_dict(same[g]['stats']))}")
        n = r["noise"]
        speed = r["prediction_speed"]
        lines.append(f"{r['runtime']:<7} noise: CoV between rounds {n['cov_between_rounds_pct_median']:.2f}% (median), "
                     f"reference drift {n['reference_drift_pct']}; predictions "
                     f"{speed['predictor_per_s']:,.0f}/s (LatencyPredictor), "
                     f"{speed['layer_configs_sum_per_s']:,.0f}/s (LatencyTable over layer_configs)")
    large = result["mbv3_large_plans"]
    lines.append(f"mbv3-large: full plan {large['full']} measurements, sparse {large['sparse']} "
                 f"({large['full'] / large['sparse']:.1f}x fewer); block keys: full {large['block_full']}, "
                 f"sparse {large['block_sparse']}")
    lines.append("same-batch: each network against its own layer / block files timed in its batches (drift out)")
    lines.append("build s: benchmark s of this run + the plan's export CPU s priced by --warm (when recorded): "
                 "a build from an empty export cache, exports on one core")
    return lines


def _build_s(lut: dict, warm: dict | None) -> str:
    """Benchmark seconds of the (warm-cache) build, plus the export CPU seconds the --warm run recorded."""
    total = lut["build"]["benchmark_s"] + lut["build"]["export_cpu_s"] + (warm or {}).get("export_cpu_s", 0.0)
    return f"{total:.0f}"


def _choices(allowed: tuple[str, ...]):
    """argparse type: a comma-separated subset of `allowed`, in the order given (one-line error otherwise)."""
    def parse(text: str) -> list[str]:
        values = [v.strip() for v in text.split(",") if v.strip()]
        bad = [v for v in values if v not in allowed]
        if bad or not values:
            raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {', '.join(allowed)}, got {text!r}")
        return list(dict.fromkeys(values))
    return parse


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="mbv3-tiny")
    p.add_argument("--runtimes", default="tflite,onnx")
    p.add_argument("--samples", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--workdir", default="runs/bench_lut", help="LUT files (resumed)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help=f"exported models (default <workdir>/cache; {DEFAULT_CACHE_DIR} is lutbuild's)")
    p.add_argument("--granularity", default="layer,block", type=_choices(GRANULARITIES),
                   help="LUT key granularities to compare (layer, block)")
    p.add_argument("--plans", default="full,sparse", type=_choices(PLANS), help="plans of the layer LUTs")
    p.add_argument("--block-plans", default="full,sparse", type=_choices(PLANS), help="plans of the block LUTs")
    p.add_argument("--same-batch", type=int, default=0, metavar="N",
                   help="also time the first N networks with their layer and block files in the same batches")
    p.add_argument("--same-batch-rounds", type=int, default=2)
    p.add_argument("--warm", action="store_true", help="only export every model a run needs (time nothing)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    args.cache_dir = args.cache_dir or Path(args.workdir) / "cache"
    space = get_space(args.space)
    runtimes = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    cost_path = Path(args.workdir) / "export_cost.json"
    if args.warm:
        cost = json.loads(cost_path.read_text()) if cost_path.exists() else {}
        for runtime in runtimes:
            cost.setdefault(runtime, {}).update(warm_runtime(space, runtime, args, cost.get(runtime, {})))
        cost_path.parent.mkdir(parents=True, exist_ok=True)
        cost_path.write_text(json.dumps(cost, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {cost_path}")
        return 0
    agent = open_agent("local")
    started = datetime.now(timezone.utc)
    result = {"benchmark": "bench_lut", "date": started.isoformat(timespec="seconds"), "space": space.name,
              "machine": machine(), "versions": versions(), "device": vars(agent.info()),
              "samples": args.samples, "seed": args.seed, "runtimes": []}
    result["granularity"], result["plans"], result["block_plans"] = args.granularity, args.plans, args.block_plans
    result["export_cost"] = json.loads(cost_path.read_text()) if cost_path.exists() else {}
    for runtime in runtimes:
        result["runtimes"].append(bench_runtime(space, runtime, args, agent))
    result["load_avg_end"] = os.getloadavg()
    large = get_space("mbv3-large")
    result["mbv3_large_plans"] = {p: len(make_plan(large, p).measure) for p in ("full", "sparse")}
    result["mbv3_large_plans"].update({f"block_{p}": len(make_block_plan(large, p).measure)
                                       for p in ("full", "sparse")})
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
