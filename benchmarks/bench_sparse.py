"""The sparse plan's own error on a space (issue 15.6): interpolation apart from additivity.

    taskset -c 0 nice -n 5 .venv/bin/python -m benchmarks.bench_sparse export      # untimed exports
    flock /tmp/na-timing.lock .venv/bin/lutbuild build --space mbv3-large --device local --runtime tflite \
        --db ~/.cache/netadaptv2/bench_sparse/sparse.sqlite --plan sparse --jobs 1
    flock /tmp/na-timing.lock .venv/bin/python -m benchmarks.bench_sparse paired   # timed, ~5-8 min
    flock /tmp/na-timing.lock .venv/bin/lutbuild verify --space mbv3-large --device local --runtime tflite \
        --db ~/.cache/netadaptv2/bench_sparse/sparse.sqlite --samples 8 --json verify.json
    .venv/bin/python -m benchmarks.bench_sparse report --verify verify.json

Why paired: on this host a layer's time changes up to ~2x between batches (the core's slow
state, docs/lut.md "Noise protocol"), far more than the interpolation error to measure, so a
probe key timed at another moment than the grid it is interpolated from measures the host.
`paired` times each *probe key* in the same runner batch, interleaved, as exactly the grid
keys its estimate reads (`lut_db.interpolate.support`: the 2 or 4 corners), re-estimates it
from those same-batch corner times (`estimate_family`) and records estimate / measured
(`--rounds` runner processes; the spread between rounds is the method's noise). The same is
done at twice the grid spacing with grid keys alone (a half grid: every other grid value per
axis left out and estimated from the rest, `half_grid_groups`), which needs no export: the
two spacings show how the error falls with a denser grid.

Probe keys (seeded, fixed for a space): every interpolated key of the first `--networks`
networks of `profiler.verify.draw_subnets(space, n, seed)` (usage-weighted: what predictions
are made of; `lutbuild verify --samples n --seed seed` times the same networks), plus
`--per-family` random interpolated keys of every family, plus up to `--fit-keys` keys of the
`fit` rule; `paired` takes those already exported (export them network by network first).
`report` prints per-key error (median / p90 |estimate / measured - 1|, by op kind and rule)
at both spacings, and per network how much of the sparse LUT's prediction is interpolation
error (each paired key's row divided by its paired ratio), and with `--verify` the rest
against the measured network (additivity). Results: `benchmarks/results/bench_sparse-<date>.json`.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/bench_sparse.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from device_agents.local import cpu_model  # noqa: E402
from lut_db.interpolate import estimate_family, estimate_layers, family_key, family_macs, support  # noqa: E402
from lut_db.layer_key import LayerConfig  # noqa: E402
from lut_db.reader import LatencyTable  # noqa: E402
from profiler.agents import open_agent  # noqa: E402
from profiler.export import ModelCache  # noqa: E402
from profiler.plan import Plan, make_plan  # noqa: E402
from profiler.runtimes import DEFAULT_CACHE_DIR, benchmark_settings  # noqa: E402
from profiler.same_batch import Group, plan_batch  # noqa: E402
from profiler.spaces import resolve_space  # noqa: E402
from profiler.verify import draw_subnets  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_WORKDIR = Path("~/.cache/netadaptv2/bench_sparse").expanduser()


def network_keys(space, networks: int, seed: int) -> list[set[LayerConfig]]:
    """The layer keys of each of the first `networks` networks `lutbuild verify --seed` draws."""
    return [set(space.layer_configs(cfg)) for cfg in draw_subnets(space, networks, seed)]


def rules(plan: Plan) -> dict[LayerConfig, str]:
    """The interpolation rule (`estimate_family` method) of each interpolated key of `plan`.

    The rule depends only on which points are measured, so any values do (MACs here)."""
    measured = {c: float(c.macs() or 1) for c in plan.measure}
    return {c: how for c, (_, how) in estimate_layers(measured, plan.interpolate).items()}


def probe_keys(space, plan: Plan, networks: int, seed: int, per_family: int, fit_keys: int) -> list[LayerConfig]:
    """The interpolated keys the benchmark measures (module docstring), sorted by key."""
    interp = set(plan.interpolate)
    chosen: set[LayerConfig] = set()
    for keys in network_keys(space, networks, seed):
        chosen |= keys & interp
    rng = random.Random(seed)
    families: dict[tuple, list[LayerConfig]] = defaultdict(list)
    for cfg in plan.interpolate:
        families[family_key(cfg)].append(cfg)
    for fam in sorted(families, key=repr):
        members = sorted(families[fam], key=lambda c: c.key)
        chosen |= set(rng.sample(members, min(per_family, len(members))))
    fits = sorted((c for c, how in rules(plan).items() if how == "fit"), key=lambda c: c.key)
    chosen |= set(rng.sample(fits, min(fit_keys, len(fits))))
    return sorted(chosen, key=lambda c: c.key)


def cmd_export(args, space, plan: Plan, probe: list[LayerConfig]) -> None:
    keys = list(plan.measure) + probe
    start = time.monotonic()
    with ModelCache(args.cache_dir, "tflite", jobs=1) as cache:
        todo = [c for c in keys if not cache.layer_path(c).exists()]
        print(f"bench_sparse export: {len(keys)} keys, {len(todo)} to export", flush=True)
        for i in range(0, len(todo), 10):
            cache.layers(todo[i:i + 10])
            print(f"  {min(i + 10, len(todo))}/{len(todo)} exported, {cache.export_cpu_s:.0f} CPU-s, "
                  f"{time.monotonic() - start:.0f} s", flush=True)
        # the whole networks `lutbuild verify --samples N --seed S` times (untimed here)
        cache.networks(space.spec, [c.to_dict() for c in draw_subnets(space, args.networks, args.seed)])
        print(f"bench_sparse export: done, {cache.exported} files, {cache.export_cpu_s:.0f} CPU-s, "
              f"{time.monotonic() - start:.0f} s", flush=True)


def paired_groups(plan: Plan, keys: list[LayerConfig]) -> list[tuple[LayerConfig, list[LayerConfig]]]:
    """(key, the grid keys its estimate reads) for each interpolated key not on the `fit` rule."""
    index = {(family_key(c), c.cin, c.cout): c for c in plan.measure}
    points: dict[tuple, set] = defaultdict(set)
    for c in plan.measure:
        points[family_key(c)].add((c.cin, c.cout))
    how = rules(plan)
    out = []
    for cfg in keys:
        if how.get(cfg) not in ("bilinear", "linear"):
            continue
        fam = family_key(cfg)
        out.append((cfg, [index[(fam, ci, co)] for ci, co in support(points[fam], (cfg.cin, cfg.cout))]))
    return out


def half_grid_groups(plan: Plan, count: int, seed: int) -> list[tuple[LayerConfig, list[LayerConfig]]]:
    """Like `paired_groups` at twice the grid spacing: grid keys left out of a half grid (every
    other grid value per axis, ends kept: `half_grid_errors`) with the kept keys that would
    estimate them; `count` of them, drawn with `seed`. Costs no export (all are grid keys)."""
    families: dict[tuple, list[LayerConfig]] = defaultdict(list)
    for c in plan.measure:
        families[family_key(c)].append(c)
    out = []
    for members in families.values():
        def kept(values):
            values = sorted(set(values))
            return set(values[::2]) | {values[0], values[-1]}
        diagonal = all(c.cin == c.cout for c in members)
        cins, couts = kept(c.cin for c in members), kept(c.cout for c in members)
        keep = [c for c in members if c.cin in cins and (diagonal or c.cout in couts)]
        points = {(c.cin, c.cout) for c in keep}
        index = {(c.cin, c.cout): c for c in keep}
        if len(points) < 2:
            continue
        for cfg in members:
            if cfg in keep:
                continue
            used = support(points, (cfg.cin, cfg.cout))
            if len(used) <= 4:  # bilinear or linear, not the fit
                out.append((cfg, [index[p] for p in used]))
    rng = random.Random(seed + 2)
    return sorted(rng.sample(out, min(count, len(out))), key=lambda g: g[0].key)


def cmd_paired(args, space, plan: Plan, probe: list[LayerConfig], work: Path) -> None:
    """Each probe key timed in the same runner batch as the grid keys its estimate reads, so the
    interpolation error is measured with the host's state the same on both sides."""
    with ModelCache(args.cache_dir, "tflite", jobs=1) as cache:
        ready = [c for c in probe if cache.layer_path(c).exists()]
        groups = [(c, corners) for c, corners in paired_groups(plan, ready)
                  if all(cache.layer_path(x).exists() for x in corners)]
        spacing = {c: 1 for c, _ in groups}
        half = half_grid_groups(plan, args.half_keys, args.seed)
        spacing.update({c: 2 for c, _ in half})
        groups += half
        overhead = cache.overhead()
        path = cache.layer_path
    agent = open_agent("local", "tflite")
    settings = benchmark_settings("tflite", 1, 3, "xnnpack")
    ratios: dict[LayerConfig, list[float]] = defaultdict(list)
    values: dict[LayerConfig, list[float]] = defaultdict(list)
    start = time.monotonic()
    print(f"bench_sparse paired: {len(groups)} keys of {len(probe)} probe keys ({len(ready)} exported)", flush=True)
    for r in range(args.rounds):
        for b in range(0, len(groups), args.per_batch):
            chunk = groups[b:b + args.per_batch]
            layout = plan_batch([overhead], [Group(path(c), tuple(path(x) for x in corners)) for c, corners in chunk],
                                share_layers=False)
            medians = [t.median_ms for t in agent.benchmark(layout.files, settings).timings]
            ovh = medians[0]
            for j, (cfg, corners) in enumerate(chunk):
                net = {(x.cin, x.cout): max(0.0, medians[p] - ovh) for x, p in zip(corners, layout.layers_at[j])}
                est = estimate_family(net, [(cfg.cin, cfg.cout)], family_macs(cfg))[(cfg.cin, cfg.cout)][0]
                meas = max(1e-9, medians[layout.model_at[j]] - ovh)
                ratios[cfg].append(est / meas)
                values[cfg].append(meas)
        print(f"  round {r + 1}/{args.rounds}: {time.monotonic() - start:.0f} s", flush=True)
    how = rules(plan)
    rows = [{"key": c.key, "op": c.op, "rule": how.get(c, "grid"), "spacing": spacing[c],
             "family": "/".join(map(str, family_key(c))),
             "measured_ms": statistics.median(values[c]), "ratio": statistics.median(ratios[c]),
             "round_ratios": ratios[c]} for c, _ in groups]
    out = work / f"paired-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                               "load_avg": os.getloadavg(), "cpu": cpu_model(), "rounds": args.rounds,
                               "keys": rows}, indent=1))
    print(f"wrote {out}")


def ratio_stats(ratios: list[float]) -> dict:
    """|estimate / measured - 1| in %: n, median, p90, and the signed median."""
    if not ratios:
        return {"n": 0}
    errs = [100 * (r - 1) for r in ratios]
    absolute = sorted(abs(e) for e in errs)
    return {"n": len(errs), "median_abs_pct": round(statistics.median(absolute), 2),
            "p90_abs_pct": round(absolute[min(len(absolute) - 1, int(0.9 * len(absolute)))], 2),
            "median_signed_pct": round(statistics.median(errs), 2)}


def by(rows: list[dict], field: str) -> dict:
    """`ratio_stats` of `rows` grouped by `field`."""
    groups: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        groups[str(row[field])].append(row["ratio"])
    return {name: ratio_stats(values) for name, values in sorted(groups.items())}


def network_effect(space, table: LatencyTable, ratios: dict[str, float], networks: int, seed: int,
                   verify: dict | None) -> list[dict]:
    """Per network: the sparse LUT's prediction, the same with each paired interpolated key's row
    divided by its paired ratio (the row as it would be measured: interpolation taken out), and,
    with `verify` (`lutbuild verify --json` of the same networks), the measured latency."""
    measured = {}
    if verify:
        measured = {json.dumps(s["subnet"], sort_keys=True): s["measured_ms"] for s in verify["samples"]}
    out = []
    for cfg in draw_subnets(space, networks, seed):
        layers = space.layer_configs(cfg)
        interp = [c for c in layers if c.key in table.interpolated_keys]
        covered = [c for c in interp if c.key in ratios]
        pred = table.predict(layers)
        fixed = pred - sum(table.latency(c) * (1 - 1 / ratios[c.key]) for c in covered)
        row = {"subnet": cfg.to_dict(), "layers": len(layers), "interpolated": len(interp), "paired": len(covered),
               "interpolated_share_pct": 100 * sum(table.latency(c) for c in interp) / pred,
               "paired_share_pct": 100 * sum(table.latency(c) for c in covered) / pred,
               "predicted_ms": pred, "interpolation_out_ms": fixed, "interpolation_pct": 100 * (pred / fixed - 1)}
        m = measured.get(json.dumps(cfg.to_dict(), sort_keys=True))
        if m:
            row.update(measured_ms=m, total_error_pct=100 * (pred / m - 1), additivity_pct=100 * (fixed / m - 1))
        out.append(row)
    return out


def cmd_report(args, space, plan: Plan, work: Path) -> None:
    """Per-key interpolation error from the `paired` runs (rounds pooled), and what it does to networks."""
    runs = sorted(work.glob("paired-*.json"))
    if not runs:
        raise SystemExit(f"bench_sparse: no paired-*.json in {work}: run the paired step first")
    paired = json.loads(runs[-1].read_text())
    pooled: dict[str, dict] = {}  # every run's rounds of a key pooled: the ratio is their median
    for run in runs:
        for row in json.loads(run.read_text())["keys"]:
            if row["key"] in pooled:
                pooled[row["key"]]["round_ratios"] += row["round_ratios"]
            else:
                pooled[row["key"]] = dict(row)
    for row in pooled.values():
        row["ratio"] = statistics.median(row["round_ratios"])
    rows = list(pooled.values())
    probe = [r for r in rows if r["spacing"] == 1]
    half = [r for r in rows if r["spacing"] == 2]
    two = [r["round_ratios"][:2] for r in rows if len(r["round_ratios"]) >= 2]
    lut = work / "sparse.sqlite"
    slice_ = [s for s in LatencyTable.slices(lut) if s.runtime == "tflite"][0]
    table = LatencyTable.load(lut, slice_.device_id, "tflite", slice_.runtime_options)
    verify = json.loads(Path(args.verify).read_text()) if args.verify else None
    nets = network_effect(space, table, {r["key"]: r["ratio"] for r in probe}, args.networks, args.seed, verify)
    result = {
        "space": space.name, "paired_files": [str(r) for r in runs], "paired_date": paired["date"],
        "paired_load_avg": paired["load_avg"], "cpu": paired["cpu"], "rounds": paired["rounds"],
        "plan": {"measured": len(plan.measure), "interpolated": len(plan.interpolate)},
        "grid_spacing": {"all": ratio_stats([r["ratio"] for r in probe]), "by_op": by(probe, "op"),
                         "by_rule": by(probe, "rule")},
        "twice_grid_spacing": {"all": ratio_stats([r["ratio"] for r in half]), "by_op": by(half, "op")},
        "noise_between_rounds": ratio_stats([a / b for a, b in two]),
        "networks": nets,
        "verify": None if verify is None else {k: verify.get(k) for k in (
            "created", "mape_pct", "within_5pct", "within_10pct", "spearman", "bias_pct", "noise")},
    }
    for name in ("grid_spacing", "twice_grid_spacing"):
        print(name, json.dumps(result[name]))
    print("noise between rounds (ratio of the two rounds' ratios):", result["noise_between_rounds"])
    print("| network | layers | interpolated (share of ms) | paired (share of ms) | interpolation % | additivity % "
          "| total % |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for i, n in enumerate(nets):
        print(f"| {i} | {n['layers']} | {n['interpolated']} ({n['interpolated_share_pct']:.0f}%) | {n['paired']} "
              f"({n['paired_share_pct']:.0f}%) | "
              f"{n['interpolation_pct']:+.1f} | {n.get('additivity_pct', float('nan')):+.1f} | "
              f"{n.get('total_error_pct', float('nan')):+.1f} |")
    out = RESULTS / f"bench_sparse-{space.name}-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("step", choices=("export", "paired", "report"))
    parser.add_argument("--rounds", type=int, default=2, help="paired: runner processes per key")
    parser.add_argument("--per-batch", type=int, default=8, help="paired: keys per runner process")
    parser.add_argument("--half-keys", type=int, default=120, help="paired: grid keys estimated from a half grid")
    parser.add_argument("--space", default="mbv3-large")
    parser.add_argument("--workdir", default=str(DEFAULT_WORKDIR))
    parser.add_argument("--cache-dir", default=str(DEFAULT_CACHE_DIR))
    parser.add_argument("--networks", type=int, default=12, help="networks whose keys are all probed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-family", type=int, default=2)
    parser.add_argument("--fit-keys", type=int, default=10)
    parser.add_argument("--verify", default=None, help="report: `lutbuild verify --json` of the sparse LUT")
    args = parser.parse_args(argv)
    space = resolve_space(args.space)
    plan = make_plan(space, "sparse")
    probe = probe_keys(space, plan, args.networks, args.seed, args.per_family, args.fit_keys)
    work = Path(args.workdir).expanduser()
    work.mkdir(parents=True, exist_ok=True)
    if args.step == "export":  # network by network, then the rest: a late run can stop at fewer networks
        first: list[LayerConfig] = []
        for keys in network_keys(space, args.networks, args.seed):
            first += sorted((keys & set(probe)) - set(first), key=lambda c: c.key)
        cmd_export(args, space, plan, first + sorted(set(probe) - set(first), key=lambda c: c.key))
    elif args.step == "paired":
        cmd_paired(args, space, plan, probe, work)
    else:
        cmd_report(args, space, plan, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
