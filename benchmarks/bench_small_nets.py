"""Do small networks carry a size-dependent LUT bias on this host? (issue 15.3)

    taskset -c 0 nice -n 5 .venv/bin/python -m benchmarks.bench_small_nets --export-only   # untimed
    flock /tmp/na-timing.lock .venv/bin/python -m benchmarks.bench_small_nets               # timed

An AMD host showed networks under ~0.06 ms over-predicted by +3..+7% (the per-invoke
overhead model: a one-element ReLU timed per batch, `profiler/calibrate.py`). Here: draw a
pool of `--pool` random networks of `--space` (seeded), rank them by their LUT prediction
(`--db`), and take the `--smallest` smallest (plus the space's min network) and `--spread`
more at evenly spaced quantiles of the pool. Each network is timed in the same runner
batches as its own LUT layer files (`profiler.same_batch`: the host's slow state affects both
sides alike) and as the overhead probes below, `--rounds` runner processes of 3 interleaved
passes each. Per network: the LUT's error against the network, and the *additivity* error
(layers timed now, each minus the batch's overhead, summed, plus one overhead, against the
network), by size.

Overhead probes (same batch): the one-element ReLU (what the LUT subtracts), and a model
with the network's input and output tensors (NHWC image in, logits out: a global average
pool and a 3 -> classes linear, a few hundred ns of work): if a whole network's per-invoke
cost depends on its I/O tensors, the second shows it. Results:
`benchmarks/results/bench_small_nets-<date>.json`.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/bench_small_nets.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from device_agents.local import cpu_model  # noqa: E402
from lut_db.reader import LatencyTable  # noqa: E402
from profiler.agents import open_agent  # noqa: E402
from profiler.export import ModelCache, export_module, layer_module  # noqa: E402
from profiler.runtimes import DEFAULT_CACHE_DIR, benchmark_settings  # noqa: E402
from profiler.same_batch import Group, layers_now_ms, plan_batch  # noqa: E402
from profiler.spaces import resolve_space  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


class IoProbe(nn.Module):
    """NHWC image (1, H, W, 3) in, (1, classes) out, with almost no work: mean over H, W, a
    3 -> classes linear. Times what a network's invoke pays for its own I/O tensors."""

    def __init__(self, classes: int):
        super().__init__()
        self.fc = nn.Linear(3, classes)

    def forward(self, x):
        return self.fc(x.mean(dim=(1, 2)))


def pick_networks(space, table: LatencyTable, pool: int, smallest: int, spread: int, seed: int) -> list:
    """The smallest `smallest` of `pool` random networks (and the min network), then `spread`
    at evenly spaced quantiles of the pool's predicted latencies; sorted by prediction."""
    rng = random.Random(seed)
    configs = {space.canonical(space.min_config())}
    while len(configs) < pool:
        configs.add(space.random_config(rng))
    ranked = sorted(configs, key=lambda c: (table.predict(space.layer_configs(c)), repr(c)))
    chosen = ranked[:smallest + 1]
    for i in range(1, spread + 1):
        cfg = ranked[min(len(ranked) - 1, round(i * (len(ranked) - 1) / spread))]
        if cfg not in chosen:
            chosen.append(cfg)
    return chosen


def io_probe_path(cache: ModelCache, space) -> Path:
    """The `IoProbe` file of the space's image size and classes (exported once)."""
    (h, w), classes = space.spec.input_hw, space.spec.num_classes
    path = cache.root / "probes" / f"io-probe-{h}x{w}-{classes}.tflite"
    if not path.exists():
        torch.manual_seed(0)
        export_module(IoProbe(classes).eval(), (torch.randn(1, h, w, space.spec.in_channels),), "tflite", path,
                      image_args=(), image_out=False)
    return path


def doubled_paths(cache: ModelCache, layers: list) -> list[tuple]:
    """(layer, its file, file of the layer applied twice in a row) for each shape-preserving
    image layer of `layers` (cin == cout, stride 1). 2 T(L) - T(LL) is what one invoke of the
    layer's own model costs beyond its work: the quantity the ReLU-1 overhead model stands for."""
    out = []
    for cfg in layers:
        module, inputs, image_args, image_out = layer_module(cfg)
        if cfg.cin != cfg.cout or cfg.stride != 1 or image_args != [0] or not image_out or len(inputs) != 1:
            continue
        path = cache.root / "probes" / f"double-{cfg.digest}.tflite"
        if not path.exists():
            export_module(nn.Sequential(module, layer_module(cfg)[0]).eval(), inputs, "tflite", path)
        out.append((cfg, cache.layers([cfg])[0], path))
    return out


def invoke_costs(agent, settings, overhead: Path, doubles: list[tuple], rounds: int) -> list[dict]:
    """Per doubled layer: T(L), T(LL), the invoke cost 2 T(L) - T(LL) and the ReLU-1 overhead
    of the same batch (us, medians over `rounds` runner processes)."""
    per: list[dict] = [dict(single=[], double=[], invoke=[], relu1=[]) for _ in doubles]
    files = [overhead] + [p for _, single, double in doubles for p in (single, double)]
    for _ in range(rounds):
        medians = [t.median_ms * 1000 for t in agent.benchmark(files, settings).timings]
        for i, rec in enumerate(per):
            one, two = medians[1 + 2 * i], medians[2 + 2 * i]
            rec["single"].append(one)
            rec["double"].append(two)
            rec["invoke"].append(2 * one - two)
            rec["relu1"].append(medians[0])
    return [{"layer": cfg.key, **{k: statistics.median(v) for k, v in rec.items()}}
            for (cfg, *_), rec in zip(doubles, per)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--space", default="mbv3-tiny")
    parser.add_argument("--db", default="demo_out/lut.sqlite")
    parser.add_argument("--device-id", default=None, help="the LUT slice's device (default: its one tflite slice)")
    parser.add_argument("--pool", type=int, default=2000)
    parser.add_argument("--smallest", type=int, default=8)
    parser.add_argument("--spread", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--per-batch", type=int, default=4, help="networks per runner process")
    parser.add_argument("--cache-dir", default=str(DEFAULT_CACHE_DIR))
    parser.add_argument("--export-only", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    space = resolve_space(args.space)
    wanted = "threads=1;delegate=xnnpack"
    slices = [s for s in LatencyTable.slices(args.db) if s.runtime == "tflite" and s.runtime_options == wanted
              and (args.device_id is None or s.device_id == args.device_id)]
    if len(slices) != 1:
        raise SystemExit(f"bench_small_nets: {args.db}: expected one tflite {wanted} slice, found {len(slices)}")
    sl = slices[0]
    table = LatencyTable.load(args.db, sl.device_id, "tflite", sl.runtime_options)
    nets = pick_networks(space, table, args.pool, args.smallest, args.spread, args.seed)
    with ModelCache(args.cache_dir, "tflite", jobs=1) as cache:
        net_paths = cache.networks(space.spec, [c.to_dict() for c in nets])
        layer_paths = [cache.layers(space.layer_configs(c)) for c in nets]
        extra = [cache.overhead(), io_probe_path(cache, space)]
        distinct = sorted({c for cfg in nets[:args.smallest] for c in space.layer_configs(cfg)}, key=lambda c: c.key)
        doubles = doubled_paths(cache, distinct)
    if args.export_only:
        print(f"bench_small_nets: {len(nets)} networks and their layers exported")
        return 0
    groups = [Group(p, tuple(lp)) for p, lp in zip(net_paths, layer_paths)]
    agent = open_agent("local", "tflite")
    settings = benchmark_settings("tflite", 1, 3, "xnnpack")
    invoke = invoke_costs(agent, settings, extra[0], doubles, args.rounds)
    rounds: list[dict] = [dict(whole=[], now=[], ovh=[], io=[]) for _ in groups]
    start = time.monotonic()
    for r in range(args.rounds):
        for b in range(0, len(groups), args.per_batch):
            chunk = groups[b:b + args.per_batch]
            layout = plan_batch(extra, chunk, share_layers=False)
            medians = [t.median_ms for t in agent.benchmark(layout.files, settings).timings]
            ovh, io = medians[0], medians[1]
            for j, _ in enumerate(chunk):
                rec = rounds[b + j]
                rec["whole"].append(medians[layout.model_at[j]])
                rec["now"].append(layers_now_ms(medians, layout.layers_at[j], ovh))
                rec["ovh"].append(ovh)
                rec["io"].append(io)
        print(f"round {r + 1}/{args.rounds} done, {time.monotonic() - start:.0f} s", flush=True)
    rows = []
    for cfg, rec in zip(nets, rounds):
        whole = statistics.median(rec["whole"])
        rows.append({
            "subnet": cfg.to_dict(), "layers": len(space.layer_configs(cfg)), "macs": space.macs(cfg)
            if hasattr(space, "macs") else None,
            "measured_ms": whole, "round_ms": rec["whole"],
            "lut_ms": table.predict(space.layer_configs(cfg)),
            "lut_error_pct": 100 * (table.predict(space.layer_configs(cfg)) / whole - 1),
            "additivity_pct": 100 * statistics.median(n / w - 1 for n, w in zip(rec["now"], rec["whole"])),
            "overhead_ms": statistics.median(rec["ovh"]), "io_probe_ms": statistics.median(rec["io"]),
        })
    load = os.getloadavg()
    result = {"space": space.name, "db": str(args.db), "slice": sl.runtime_options, "device_id": sl.device_id,
              "lut_overhead_ms": table.overhead_ms, "cpu": cpu_model(), "load_avg": load,
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "networks": rows,
              "invoke_costs_us": invoke,
              "args": vars(args)}
    print(f"{space.name}: LUT overhead {table.overhead_ms * 1000:.2f} us, load {load[0]:.2f}")
    print("| measured ms | layers | LUT err % | additivity % | ReLU1 ovh us | I/O probe us |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['measured_ms']:.4f} | {row['layers']} | {row['lut_error_pct']:+.1f} | "
              f"{row['additivity_pct']:+.1f} | {row['overhead_ms'] * 1000:.2f} | {row['io_probe_ms'] * 1000:.2f} |")
    print("| layer | T(L) us | T(LL) us | invoke 2T(L)-T(LL) us | ReLU-1 us |")
    print("| --- | --- | --- | --- | --- |")
    for row in invoke:
        print(f"| {row['layer']} | {row['single']:.2f} | {row['double']:.2f} | {row['invoke']:.2f} "
              f"| {row['relu1']:.2f} |")
    out = Path(args.out) if args.out else RESULTS / f"bench_small_nets-{args.space}-" \
        f"{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
