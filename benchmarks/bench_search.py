"""Search ablations at small scale (mbv3-tiny, built-in data), side by side in one run, over seeds.

    .venv/bin/python -m benchmarks.bench_search                # default scale, 3 seeds (~20-25 min, 2 cores)
    .venv/bin/python -m benchmarks.bench_search --quick        # smoke scale (< 3 min; figures meaningless)
    .venv/bin/python -m benchmarks.bench_search --db lut.sqlite [--device ID] [--seeds 3] [--epochs N]

Training: by default the super-network and the plain max network are trained once (seed 0,
`--epochs`, 4: below ~3 epochs both sit near chance on `builtin`) and shared by every search
seed, so the spread over seeds is the search's and the fine-tune's; `--train-per-seed` trains
both per seed (2 x 4 epochs per seed do not fit 25 CPU minutes on 2 cores). Each method's
total time counts its own training once per search.

Per seed s (the searches' random draws and the fine-tune's data order derive from s):

1. **Search time** to one latency target (`--target-fraction` of the max network's latency):
   - *SN + OD + MCD* (NetAdaptV2): train the OD super-network (`search.train.train`,
     `--epochs`), then MCD (`run_mcd`, J candidates shrinking L layers, each scored by
     `SupernetScorer`: sliced, BN recalibrated, top-1 on the held-out split).
     Time = super-network training + MCD.
   - *NetAdapt V1* (no super-network): train the max network plainly for the same epochs
     (the same `train()` loop with every image at the max network: V1 needs a trained start),
     then `baselines.netadapt_v1`: one proposal per width per iteration, each short-fine-tuned
     (`--v1-steps`) from the current weights and scored on the same held-out split.
     Time = plain training + V1's loop.
   Each runs its own default reduction schedule: MCD 5 % of the start network per iteration
   (`--initial-reduction`, L layers share a step), V1 2.5 % (`--v1-initial-reduction`, one
   layer per step), both decaying 0.96 to the target. Reported: wall and CPU seconds of each
   phase, networks evaluated, held-out score,
   val top-1 with the search's weights and after the same short fine-tune (`--finetune-steps`,
   not counted in either search time). The final fine-tune is identical for both.
2. **CBC x MCD** (2x2, same super-network): MCD with L=3 (multi-layer) vs L=1 (single-layer
   coordinate descent), CBC on (residual widths may reach 0: the block is removed) vs off (a
   view of the space without the 0 choices, so candidates never remove a block). Accuracy at
   the same latency target: held-out score (what MCD maximised) and val top-1 with
   super-network weights (BN recalibrated; never seen by any search).
3. **Searched vs baselines** at the same latency: `uniform_baseline` (largest width
   multiplier meeting the target) and `random_baseline` (as many random networks as MCD
   scored): held-out score, val top-1 with super-network weights and after the same fine-tune.
4. **Throughput**: LUT whole-network predictions/s (`bench_lut.predictions_per_second`),
   candidates scored/s (`SupernetScorer` with contiguous vs channels-last candidates, the
   searches here use; same scores), training images/s OD vs plain (`bench_supernet.bench_training`
   interleaved, and the images/s the two trainings above logged), 1 vs 2 torch threads.

Latency: the LUT of `--db` (or `demo_out/lut.sqlite`, or bench_lut's
`runs/bench_lut/mbv3-tiny-tflite-full.sqlite`), slice of this host's local device (or
`--device`). Without a LUT the constraint falls back to MACs (`MacsMetric`) and the output and
JSON say so; latencies are never synthesised.

Threads: `--threads 1` (default) pins torch to one intra-op thread: on this shared 2-core
host, depthwise convolutions ran 2-3x faster per step than with 2 threads (the throughput
part re-measures it). Wall time on a loaded host is noisy, so CPU seconds (process time) are
recorded next to every wall time.

Prints the tables and writes `benchmarks/results/bench_search-<date>.json` (machine,
versions, date, every setting and per-seed figure).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import random
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/bench_search.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_DBS = ("demo_out/lut.sqlite", "runs/bench_lut/mbv3-tiny-tflite-full.sqlite")


@dataclass(frozen=True)
class BenchConfig:
    """Every setting of a run (all recorded in the JSON). Defaults: the default scale."""

    space: str = "mbv3-tiny"
    seeds: int = 3  # mean +- std over seeds 0..seeds-1 (search, fine-tune and, with train_per_seed, training)
    epochs: int = 4  # super-network and plain training epochs (the same for both); at 1 epoch both sit at
    # chance on `builtin` (val ~0.10), at 4 the max network reaches ~0.35 (runs/demo_h200 log: 0.11, 0.21, 0.30, 0.36)
    train_per_seed: bool = False  # False: one super-network + one plain network (seed 0) shared by every search
    # seed: training 2 x 4 epochs per seed does not fit the 25-minute CPU budget
    steps_per_epoch: int | None = None  # cap (None: whole epoch, 70 steps of 128 on `builtin`)
    batch_size: int = 128  # training, fine-tunes, BN calibration batches
    per_image_kernels: bool = False  # OD kernels per batch: ~1.06x plain step time on CPU (per image: ~1.5x)
    target_fraction: float = 0.5  # latency target = this x the max network's
    candidates: int = 4  # J (docs default 16, demo 8): each costs one scoring; 4 keeps 3 seeds x 5 searches in budget
    layers: int = 3  # L of the MCD runs (the 2x2 also runs L=1)
    land: bool = False  # MCD's landing phase (search/mcd/landing.py) in every MCD run (--land). Off until the
    # CBC-off view (`no_removal_view`) also forbids partial CBC widths: the landing's width trades reach them
    initial_reduction: float = 0.05  # MCD's schedule (its defaults): 50 % of the max network in ~10-13 iterations
    decay: float = 0.96
    min_reduction: float = 0.005
    v1_initial_reduction: float = 0.025  # V1's own schedule (its public code), as `netadapt_v1` defaults
    v1_min_reduction: float = 0.005
    holdout_size: int = 500  # held-out images scoring each candidate (MCD, random, uniform, V1)
    calib_batches: int = 1  # BN recalibration batches per candidate (x batch_size images)
    v1_steps: int = 3  # V1's short fine-tune per proposal (SGD, lr 0.01, batch `batch_size`)
    finetune_steps: int = 20  # the same final fine-tune for every compared network (lr 0.02, cosine)
    finetune_bn_batches: int = 4  # BN recalibration before the final fine-tune / val evaluation
    val_batches: int | None = 4  # val batches of 256 for the final figures (None: all 2,000 images)
    train_val_batches: int = 2  # validation inside train() after each epoch (cheap; same for both)
    threads: int = 1
    throughput: bool = True
    quick: bool = False

    def schedule(self):
        from search.mcd.schedule import ReductionSchedule
        return ReductionSchedule(self.initial_reduction, self.decay, self.min_reduction)

    def v1_schedule(self):
        from search.mcd.schedule import ReductionSchedule
        return ReductionSchedule(self.v1_initial_reduction, self.decay, self.v1_min_reduction)


QUICK = dict(seeds=2, epochs=1, steps_per_epoch=4, batch_size=32, candidates=3, initial_reduction=0.1,
             min_reduction=0.02, holdout_size=64, calib_batches=1, v1_steps=1, finetune_steps=2,
             finetune_bn_batches=1, val_batches=1, train_val_batches=1, quick=True)


# ----------------------------------------------------------------------------- helpers
class Clock:
    """Wall and CPU (process) seconds of a block: ``with Clock() as c: ...; c.wall, c.cpu``."""

    def __enter__(self):
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self._w
        self.cpu = time.process_time() - self._c
        return False

    def dict(self) -> dict:
        return {"wall_s": round(self.wall, 2), "cpu_s": round(self.cpu, 2)}


def spread(values) -> dict:
    """{"mean", "std", "n", "values"} (std None below 2 values; NaN values dropped)."""
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return {"mean": None, "std": None, "n": 0, "values": []}
    return {"mean": statistics.mean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else None,
            "n": len(vals), "values": vals}


def fmt(s: dict, digits: int = 1, scale: float = 1.0, sign: bool = False) -> str:
    if s["mean"] is None:
        return "-"
    m = s["mean"] * scale
    text = f"{m:+.{digits}f}" if sign else f"{m:.{digits}f}"
    return text + (f" ± {s['std'] * scale:.{digits}f}" if s["std"] is not None else "")


def no_removal_view(space):
    """`space` as CBC-off candidates see it: residual widths without the 0 choice (no block removal)."""
    view = copy.copy(space)
    view.width_vars = {n: dataclasses.replace(v, choices=tuple(c for c in v.choices if c > 0), zero_allowed=False)
                       if 0 in v.choices else v for n, v in space.width_vars.items()}
    return view


def resolve_latency(args, space) -> dict:
    """The constraint's metric factory + what it is: a LUT slice, or MACs when no LUT exists."""
    from lut_db import DEFAULT_RUNTIME_OPTIONS, LatencyTable
    from profiler.predictor import LatencyPredictor
    from search.mcd.metrics import LutLatencyMetric, MacsMetric
    candidates = [args.db] if args.db else list(DEFAULT_DBS)
    db = next((Path(p) for p in candidates if p and Path(p).is_file()), None)
    if args.db and db is None:
        raise SystemExit(f"--db {args.db}: no such file")
    if db is not None:
        device = args.device
        if device is None:
            from device_agents.local import LocalAgent
            device = LocalAgent().info().device_id
        slices = LatencyTable.slices(db)
        if not any(s.device_id == device and s.runtime == args.runtime for s in slices):
            there = "; ".join(f"{s.device_id} {s.runtime}" for s in slices) or "none"
            raise SystemExit(f"{db}: no {args.runtime} slice for device {device!r} (slices: {there}); "
                             "pass --device")
        table = LatencyTable.load(db, device, args.runtime, DEFAULT_RUNTIME_OPTIONS)
        LatencyPredictor(space, table).check()  # every key of the space measured (fails fast otherwise)
        info = next(s for s in slices if s.device_id == device and s.runtime == args.runtime)
        return {"kind": "lut", "db": str(db), "device": device, "runtime": args.runtime,
                "runtime_options": table.runtime_options, "runtime_version": info.runtime_version,
                "rows": info.rows, "unit": "ms", "name": "latency_ms", "table": table,
                "make": lambda: LutLatencyMetric(space, table),
                "note": f"LUT-predicted latency ({device}, {args.runtime} {table.runtime_options}) from {db}"}
    note = ("NO LUT FOUND (" + ", ".join(candidates) + "): the constraint falls back to MACs; latency "
            "figures below are MAC counts, not milliseconds. Build one with `python -m benchmarks.bench_lut` "
            "or `nas-search demo`, or pass --db.")
    return {"kind": "macs", "db": None, "unit": "MACs", "name": "macs", "table": None,
            "make": lambda: MacsMetric(space), "note": note}


# ----------------------------------------------------------------------------- one seed
class Data:
    def __init__(self, cfg: BenchConfig, space):
        from search.data import make_loader
        from search.tasks import task_of
        task = task_of(space)
        hw = space.spec.input_hw
        self.train_set = task.dataset("builtin", "train", hw)  # training's default holdout (1,000) excluded
        trained_holdout = len(task.dataset("builtin", "holdout", hw))
        if cfg.holdout_size > trained_holdout:
            raise SystemExit(f"--holdout-size {cfg.holdout_size} > the {trained_holdout} images training holds out")
        self.holdout_set = task.dataset("builtin", "holdout", hw, holdout=cfg.holdout_size)
        self.val_set = task.dataset("builtin", "val", hw)
        self.holdout = make_loader(self.holdout_set, 250)
        self.calib = make_loader(self.train_set, cfg.batch_size, shuffle=True, seed=0)  # same images each time
        self.bn = make_loader(self.train_set, cfg.batch_size, shuffle=True, seed=12_345)
        self.val = make_loader(self.val_set, 256)

    def train_loader(self, batch_size: int, seed: int):
        from search.data import make_loader
        return make_loader(self.train_set, batch_size, shuffle=True, seed=seed, drop_last=True)


def train_one(cfg: BenchConfig, space, seed: int, out: Path, od: bool, log) -> dict:
    """Train the OD super-network (od) or the max network plainly (every image at max), timed."""
    from search.checkpoint import load_supernet
    from search.train import TrainConfig, train
    shares = {} if od else {"od_max_share": 1.0, "od_min_share": 0.0}
    tc = TrainConfig(space=space.name, data="builtin", epochs=cfg.epochs, batch_size=cfg.batch_size, seed=seed,
                     per_image_kernels=cfg.per_image_kernels, steps_per_epoch=cfg.steps_per_epoch,
                     val_batches=cfg.train_val_batches, bn_batches=cfg.calib_batches, progress=False, **shares)
    with Clock() as clock:
        result = train(tc, out, device="cpu")
    _, net, meta = load_supernet(result.checkpoint)
    log(f"  {'OD super-network' if od else 'plain max network'}: {clock.wall:.0f}s wall "
        f"({clock.cpu:.0f}s CPU), val max {result.metrics.get('val_acc_max', float('nan')):.3f}")
    lines = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines() if x.strip()]
    return {"time": clock.dict(), "net": net.eval(), "last_epoch": result.metrics,
            "images_per_s": [r["images_per_s"] for r in lines]}


def run_search(space, view, metric_factory, limit, scorer, out: Path, cfg: BenchConfig, seed: int,
               layers: int, log) -> dict:
    from search.mcd.metrics import Constraint
    from search.mcd import MCDConfig, read_history, run_mcd
    constraint = Constraint(metric_factory(), limit)
    mcd = MCDConfig(candidates=cfg.candidates, layers=layers, schedule=cfg.schedule(), seed=seed, land=cfg.land)
    with Clock() as clock:
        result = run_mcd(view, [constraint], scorer, out, mcd, log=lambda _line: None)
    history = read_history(out)
    scored = sum(len(r.get("candidates", [])) for r in history)
    # iterations where no L-layer draw reached the target and one candidate shrank every dimension
    fallback = sum(1 for r in history if r.get("candidates") and r.get("phase") != "land"
                   and any(len(c["shrunk"]) > layers for c in r["candidates"]))
    log(f"  MCD L={layers} {'CBC' if view is space else 'no-CBC'}: {result.iteration} iterations, {scored} scored, "
        f"{clock.wall:.0f}s, held-out {result.score:.4f}, depth {space.depth(result.config):.2f}")
    return {"config": result.config, "value": result.values[constraint.name], "holdout": result.score,
            "iterations": result.iteration, "scored": scored + 1, "candidates_scored": scored,
            "all_dims_fallbacks": fallback, "landing_steps": result.landing_steps,
            "unused_budget": (limit - result.values[constraint.name]) / limit,
            "time": clock.dict(), "depth": space.depth(result.config),
            "macs": space.macs(result.config)}


def _slice(supernet, config):
    with torch.no_grad():
        return supernet.subnet(config)


def final_eval(model, data: Data, cfg: BenchConfig, seed: int, finetune: bool) -> dict:
    """Val top-1 with the given weights (BN recalibrated), and after the fine-tune if asked."""
    from search.evaluate import evaluate, recalibrate_bn
    from search.classification.train import train_steps
    model = model.to(memory_format=torch.channels_last)
    torch.manual_seed(seed)
    recalibrate_bn(model, data.bn, cfg.finetune_bn_batches)
    out = {"val_before": evaluate(model, data.val, max_batches=cfg.val_batches)}
    if finetune:
        with Clock() as clock:
            train_steps(model, data.train_loader(cfg.batch_size, seed), cfg.finetune_steps, 0.02, seed=seed)
        out["val_after"] = evaluate(model, data.val, max_batches=cfg.val_batches)
        out["finetune_time"] = clock.dict()
    return out


def train_both(cfg: BenchConfig, space, seed: int, work: Path, log) -> tuple[dict, dict]:
    """The OD super-network and the plain max network, trained one after the other (same host load)."""
    return (train_one(cfg, space, seed, work / "supernet", True, log),
            train_one(cfg, space, seed, work / "plain", False, log))


def run_seed(seed: int, cfg: BenchConfig, space, latency: dict, data: Data, work: Path, log,
             trained: tuple[dict, dict] | None = None) -> dict:
    from search.mcd.baselines import netadapt_v1, random_baseline, uniform_baseline
    from search.mcd.metrics import Constraint
    from search.errors import SearchError
    from search.evaluate import evaluate
    from search.tasks import task_of
    work.mkdir(parents=True, exist_ok=True)
    make = latency["make"]
    max_value = make().value(space.max_config())
    limit = cfg.target_fraction * max_value
    log(f"seed {seed}: target {latency['name']} <= {limit:.4g} ({cfg.target_fraction:.0%} of {max_value:.4g})")
    rec: dict = {"seed": seed, "max_value": max_value, "limit": limit}

    # 1. SN + OD + MCD  vs  plain training + NetAdapt V1 (training runs adjacent: same host load)
    sn, plain = trained if trained is not None else train_both(cfg, space, seed, work, log)
    supernet = sn["net"]
    from search.mcd.scoring import SupernetScorer
    scorer = SupernetScorer(supernet, data.holdout, data.calib, cfg.calib_batches)
    runs = {"cbc_L3": run_search(space, space, make, limit, scorer, work / "mcd_cbc_L3", cfg, seed, cfg.layers, log)}

    task = task_of(space)
    proposal_ft = task.proposal_finetune(data.train_loader(cfg.batch_size, seed), cfg.v1_steps, task.proposal_lr, seed)

    def v1_finetune(model, iteration):
        proposal_ft(model.to(memory_format=torch.channels_last), iteration)

    start = plain["net"].subnet(space.max_config()).to(memory_format=torch.channels_last)
    with Clock() as clock:
        try:
            v1 = netadapt_v1(space, [Constraint(make(), limit)], start, finetune_steps=cfg.v1_steps,
                             schedule=cfg.v1_schedule(), seed=seed, finetune_fn=v1_finetune,
                             evaluate_fn=lambda m: evaluate(m, data.holdout), log=lambda _line: None)
            v1_error = None
        except SearchError as exc:
            v1, v1_error = None, str(exc)
    v1_rec = {"time": clock.dict(), "error": v1_error}
    if v1 is not None:
        v1_rec.update(config=v1.config, value=v1.values[latency["name"]], holdout=v1.score,
                      evaluations=v1.evaluations, iterations=v1.detail["iterations"],
                      depth=space.depth(v1.config), macs=space.macs(v1.config))
        log(f"  NetAdapt V1: {v1.detail['iterations']} iterations, {v1.evaluations} fine-tuned proposals, "
            f"{clock.wall:.0f}s, held-out {v1.score:.4f}")
    else:
        log(f"  NetAdapt V1 failed after {clock.wall:.0f}s: {v1_error}")

    # 2. the other three cells of CBC x MCD, same super-network and scorer
    view = no_removal_view(space)
    runs["cbc_L1"] = run_search(space, space, make, limit, scorer, work / "mcd_cbc_L1", cfg, seed, 1, log)
    runs["nocbc_L3"] = run_search(space, view, make, limit, scorer, work / "mcd_nocbc_L3", cfg, seed, cfg.layers, log)
    runs["nocbc_L1"] = run_search(space, view, make, limit, scorer, work / "mcd_nocbc_L1", cfg, seed, 1, log)

    # 3. baselines at the same latency, same scorer; random gets MCD's evaluation budget
    constraint = Constraint(make(), limit)
    with Clock() as clock:
        uni = uniform_baseline(space, [constraint], scorer)
    baselines = {"uniform": {"config": uni.config, "value": uni.values[latency["name"]], "holdout": uni.score,
                             "evaluations": uni.evaluations, "multiplier": uni.detail["multiplier"],
                             "time": clock.dict()}}
    with Clock() as clock:
        rnd = random_baseline(space, [constraint], scorer, runs["cbc_L3"]["candidates_scored"], seed=seed)
    baselines["random"] = {"config": rnd.config, "value": rnd.values[latency["name"]], "holdout": rnd.score,
                           "evaluations": rnd.evaluations, "time": clock.dict()}
    log(f"  uniform x{uni.detail['multiplier']:.2f}: held-out {uni.score:.4f}; random ({rnd.evaluations}): "
        f"held-out {rnd.score:.4f}")

    # final evaluation: val top-1 with the search's weights, and after the same fine-tune where compared
    for name, r in runs.items():
        r.update(final_eval(_slice(supernet, r["config"]), data, cfg, seed, finetune=(name == "cbc_L3")))
    for r in baselines.values():
        r.update(final_eval(_slice(supernet, r["config"]), data, cfg, seed, finetune=True))
    if v1 is not None:
        v1_rec.update(final_eval(v1.detail["model"], data, cfg, seed, finetune=True))
    log(f"  val top-1 after fine-tune: MCD {runs['cbc_L3']['val_after']:.4f}, V1 "
        f"{v1_rec.get('val_after', float('nan')):.4f}, uniform {baselines['uniform']['val_after']:.4f}, "
        f"random {baselines['random']['val_after']:.4f}")
    for r in [*runs.values(), *baselines.values(), v1_rec]:
        if "config" in r:
            r["config"] = r["config"].to_dict()
    shared = {"shared_by_all_seeds": trained is not None}
    rec.update(supernet_train={**{k: sn[k] for k in ("time", "last_epoch", "images_per_s")}, **shared},
               plain_train={**{k: plain[k] for k in ("time", "last_epoch", "images_per_s")}, **shared},
               mcd=runs, netadapt_v1=v1_rec, baselines=baselines)
    rec["_supernet"] = supernet  # for the throughput part (dropped before writing)
    return rec


# ----------------------------------------------------------------------------- throughput
def throughput(cfg: BenchConfig, space, latency: dict, supernet, data: Data, log) -> dict:
    from benchmarks.bench_lut import predictions_per_second
    from benchmarks.bench_supernet import bench_training
    from search.mcd.scoring import SupernetScorer
    out: dict = {}
    if latency["table"] is not None:
        out["lut"] = predictions_per_second(space, latency["table"], n=2_000 if cfg.quick else 50_000)
    else:
        out["lut"] = None
    rng = random.Random(0)
    configs = [space.random_config(rng) for _ in range(2 if cfg.quick else 6)]
    scored = {}
    for name, channels_last in (("contiguous", False), ("channels_last", True)):
        scorer = SupernetScorer(supernet, data.holdout, data.calib, cfg.calib_batches, channels_last=channels_last)
        scorer(configs[0])  # warm-up
        with Clock() as clock:
            scores = [scorer(c) for c in configs]
        scored[name] = {"candidates_per_s": len(configs) / clock.wall, "s_per_candidate": clock.wall / len(configs),
                        "scores": scores}
    scored["equal_scores"] = scored["contiguous"]["scores"] == scored["channels_last"]["scores"]
    scored.update(holdout_images=len(data.holdout_set), calib_batches=cfg.calib_batches,
                  calib_batch_size=cfg.batch_size)
    out["scoring"] = scored
    batch, steps = (16, 1) if cfg.quick else (cfg.batch_size, 4)
    training = {}
    for threads in ([cfg.threads] if cfg.quick else sorted({1, 2, cfg.threads})):
        torch.set_num_threads(threads)
        training[str(threads)] = bench_training(space, torch.device("cpu"), batch, steps, warmup=1 if cfg.quick else 2)
    torch.set_num_threads(cfg.threads)
    out["training_step"] = training
    log("  throughput measured")
    return out


# ----------------------------------------------------------------------------- summary + tables
def summarize(seeds: list[dict]) -> dict:
    def col(f):
        return spread([f(s) for s in seeds])

    def v1(key):
        return lambda s: s["netadapt_v1"].get(key)

    def ratio(a, b):
        return lambda s: (a(s) / b(s)) if a(s) is not None and b(s) else None

    sn_train_w = lambda s: s["supernet_train"]["time"]["wall_s"]  # noqa: E731
    pl_train_w = lambda s: s["plain_train"]["time"]["wall_s"]  # noqa: E731
    mcd_w = lambda s: s["mcd"]["cbc_L3"]["time"]["wall_s"]  # noqa: E731
    v1_w = lambda s: s["netadapt_v1"]["time"]["wall_s"] if s["netadapt_v1"].get("error") is None else None  # noqa: E731
    sn_train_c = lambda s: s["supernet_train"]["time"]["cpu_s"]  # noqa: E731
    pl_train_c = lambda s: s["plain_train"]["time"]["cpu_s"]  # noqa: E731
    mcd_c = lambda s: s["mcd"]["cbc_L3"]["time"]["cpu_s"]  # noqa: E731
    v1_c = lambda s: s["netadapt_v1"]["time"]["cpu_s"] if s["netadapt_v1"].get("error") is None else None  # noqa: E731

    def plus(a, b):
        return lambda s: a(s) + b(s) if a(s) is not None and b(s) is not None else None

    m = lambda key, run="cbc_L3": (lambda s: s["mcd"][run].get(key))  # noqa: E731
    search_time = {
        "sn_od_mcd": {"train_wall_s": col(sn_train_w), "search_wall_s": col(mcd_w),
                      "total_wall_s": col(plus(sn_train_w, mcd_w)), "total_cpu_s": col(plus(sn_train_c, mcd_c)),
                      "evaluated": col(m("scored")), "iterations": col(m("iterations")), "value": col(m("value")),
                      "holdout": col(m("holdout")), "val_before": col(m("val_before")),
                      "val_after": col(m("val_after")), "depth": col(m("depth"))},
        "netadapt_v1": {"train_wall_s": col(pl_train_w), "search_wall_s": col(v1_w),
                        "total_wall_s": col(plus(pl_train_w, v1_w)), "total_cpu_s": col(plus(pl_train_c, v1_c)),
                        "evaluated": col(v1("evaluations")), "iterations": col(v1("iterations")),
                        "value": col(v1("value")), "holdout": col(v1("holdout")), "val_before": col(v1("val_before")),
                        "val_after": col(v1("val_after")), "depth": col(v1("depth")),
                        "failed": sum(1 for s in seeds if s["netadapt_v1"].get("error"))},
        "speedup": {"total_wall": col(ratio(plus(pl_train_w, v1_w), plus(sn_train_w, mcd_w))),
                    "total_cpu": col(ratio(plus(pl_train_c, v1_c), plus(sn_train_c, mcd_c))),
                    "search_only_wall": col(ratio(v1_w, mcd_w)), "search_only_cpu": col(ratio(v1_c, mcd_c))},
        "val_after_delta_sn_minus_v1": col(lambda s: (s["mcd"]["cbc_L3"]["val_after"] - s["netadapt_v1"]["val_after"])
                                           if "val_after" in s["netadapt_v1"] else None),
    }
    ablation = {}
    for run in ("nocbc_L1", "nocbc_L3", "cbc_L1", "cbc_L3"):
        ablation[run] = {k: col(m(k, run)) for k in ("holdout", "val_before", "value", "depth", "scored", "iterations",
                                                     "all_dims_fallbacks")}
        ablation[run]["holdout_delta"] = col(lambda s, r=run: s["mcd"][r]["holdout"] - s["mcd"]["nocbc_L1"]["holdout"])
        ablation[run]["val_delta"] = col(
            lambda s, r=run: s["mcd"][r]["val_before"] - s["mcd"]["nocbc_L1"]["val_before"])
    b = lambda name, key: (lambda s: s["baselines"][name].get(key))  # noqa: E731
    baselines = {"searched": {k: col(m(k)) for k in ("value", "holdout", "val_before", "val_after", "scored")},
                 **{name: {k: col(b(name, k)) for k in ("value", "holdout", "val_before", "val_after", "evaluations")}
                    for name in ("uniform", "random")}}
    for name in ("uniform", "random"):
        baselines[name]["val_after_delta_searched_minus"] = col(
            lambda s, n=name: s["mcd"]["cbc_L3"]["val_after"] - s["baselines"][n]["val_after"])
        baselines[name]["holdout_delta_searched_minus"] = col(
            lambda s, n=name: s["mcd"]["cbc_L3"]["holdout"] - s["baselines"][n]["holdout"])
    return {"search_time": search_time, "cbc_mcd": ablation, "baselines": baselines}


def row(cells, widths) -> str:
    """Left-aligned first cell, the others right-aligned, two spaces between columns."""
    return "  ".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(cells, widths)))


def table_lines(result: dict) -> list[str]:
    lat = result["latency"]
    unit, scale = (("ms", 1.0) if lat["kind"] == "lut" else ("MMACs", 1e-6))
    S = result["summary"]
    n = result["settings"]["seeds"]
    training = ("trained once per seed" if result["settings"]["train_per_seed"] else
                "one super-network and one plain network (seed 0) shared by all seeds: the spread is the "
                "search's and the fine-tune's, not training's")
    lines = [f"NetAdaptV2 search ablations, {result['space']}, built-in data, {n} seed(s), mean ± std; "
             f"torch threads {result['threads']['torch']}; {result['settings']['epochs']} training epoch(s), "
             f"{training}",
             f"constraint: {lat['note']}",
             f"target: {result['settings']['target_fraction']:.0%} of the max network "
             f"({fmt(S['target'], 3, scale)} {unit})", ""]
    st = S["search_time"]
    lines.append("1. Search time to the target: SN + OD + MCD vs NetAdapt V1 (no super-network); seconds")
    w = (12, 9, 9, 9, 10, 10, 13, 13, 13, 13)
    lines.append(row(("method", "train", "search", "total", "total CPU", "evaluated", f"latency {unit}",
                      "held-out", "val (search)", "val fine-tuned"), w))
    for key, name in (("sn_od_mcd", "SN+OD+MCD"), ("netadapt_v1", "NetAdapt V1")):
        r = st[key]
        lines.append(row((name, fmt(r["train_wall_s"], 0), fmt(r["search_wall_s"], 0), fmt(r["total_wall_s"], 0),
                          fmt(r["total_cpu_s"], 0), fmt(r["evaluated"], 0), fmt(r["value"], 3, scale),
                          fmt(r["holdout"], 3), fmt(r["val_before"], 3), fmt(r["val_after"], 3)), w))
    sp = st["speedup"]
    lines.append(f"V1 / SN time: total {fmt(sp['total_wall'], 2)}x wall, {fmt(sp['total_cpu'], 2)}x CPU; "
                 f"search phase only {fmt(sp['search_only_wall'], 2)}x wall, {fmt(sp['search_only_cpu'], 2)}x CPU "
                 f"(paper: 3.3x; goal >= 5x)")
    lines.append(f"val top-1 after the same fine-tune, SN - V1 (paired): "
                 f"{fmt(st['val_after_delta_sn_minus_v1'], 2, 100, True)} points")
    if st["netadapt_v1"]["failed"]:
        lines.append(f"NetAdapt V1 failed on {st['netadapt_v1']['failed']} seed(s) (see JSON)")
    lines.append("")
    lines.append("2. CBC x MCD at the same target (same super-network); Δ: paired per seed vs CBC off + L=1, points")
    w = (20, 13, 11, 13, 11, 13, 11, 8)
    lines.append(row(("variant", f"latency {unit}", "depth", "held-out", "Δ", "val (SN w.)", "Δ", "scored"), w))
    for key, name in (("nocbc_L1", "CBC off, L=1"), ("nocbc_L3", "CBC off, L=3 (MCD)"),
                      ("cbc_L1", "CBC on, L=1"), ("cbc_L3", "CBC on, L=3 (MCD)")):
        r = S["cbc_mcd"][key]
        lines.append(row((name, fmt(r["value"], 3, scale), fmt(r["depth"], 2), fmt(r["holdout"], 3),
                          fmt(r["holdout_delta"], 1, 100, True), fmt(r["val_before"], 3),
                          fmt(r["val_delta"], 1, 100, True), fmt(r["scored"], 0)), w))
    lines.append("(paper, ImageNet top-1: CBC +0.3, MCD +0.4, both +0.7)")
    lines.append("")
    lines.append("3. Searched network vs baselines at the same target (held-out, val with super-network weights, "
                 "val after the same fine-tune)")
    w = (20, 13, 9, 13, 13, 13, 13)
    lines.append(row(("network", f"latency {unit}", "scored", "held-out", "val (SN w.)", "val fine-tuned",
                      "searched - it"), w))
    for key, name in (("searched", "searched (MCD, CBC)"), ("uniform", "uniform multiplier"),
                      ("random", "random search")):
        r = S["baselines"][key]
        ev = r.get("scored") or r.get("evaluations")
        delta = fmt(r["val_after_delta_searched_minus"], 1, 100, True) if "val_after_delta_searched_minus" in r else ""
        lines.append(row((name, fmt(r["value"], 3, scale), fmt(ev, 0), fmt(r["holdout"], 3), fmt(r["val_before"], 3),
                          fmt(r["val_after"], 3), delta), w))
    tp = result.get("throughput")
    if tp:
        lines.append("")
        lines.append("4. Throughput (this host)")
        if tp["lut"]:
            lines.append(f"LUT whole-network predictions: {tp['lut']['predictor_per_s']:,.0f}/s (LatencyPredictor), "
                         f"{tp['lut']['layer_configs_sum_per_s']:,.0f}/s (LatencyTable over layer_configs)")
        else:
            lines.append("LUT predictions: n/a (no LUT)")
        sc = tp["scoring"]
        lines.append(f"candidates scored: {sc['contiguous']['candidates_per_s']:.2f}/s (contiguous), "
                     f"{sc['channels_last']['candidates_per_s']:.2f}/s (channels-last), equal scores "
                     f"{sc['equal_scores']} ({sc['holdout_images']} held-out images + {sc['calib_batches']}x"
                     f"{sc['calib_batch_size']} BN calibration)")
        for threads, r in tp["training_step"].items():
            ips = r["images_per_s"]
            lines.append(f"training step, {threads} thread(s), batch {r['batch_size']}: "
                         f"plain {ips['plain']:.0f} img/s, OD per-batch kernels {ips['od-batch-kernel']:.0f} img/s "
                         f"({r['ratio_vs_plain']['od-batch-kernel']:.2f}x time), OD per-image kernels "
                         f"{ips['od']:.0f} img/s ({r['ratio_vs_plain']['od']:.2f}x time)")
        lines.append(f"in the runs above: OD super-network {fmt(S['train_images_per_s']['od'], 0)} img/s, "
                     f"plain {fmt(S['train_images_per_s']['plain'], 0)} img/s")
    lines.append("")
    lines.append(f"wall time of this run: {result['wall_s']:.0f}s")
    return lines


# ----------------------------------------------------------------------------- main
def build_config(args) -> BenchConfig:
    base = dict(QUICK) if args.quick else {}
    for field in dataclasses.fields(BenchConfig):
        value = getattr(args, field.name, None)
        if value is not None and field.name not in ("quick",):
            base[field.name] = value
    if args.no_throughput:
        base["throughput"] = False
    if args.land:
        base["land"] = True
    return BenchConfig(**base)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke scale: tiny training and searches (< 3 min)")
    p.add_argument("--seeds", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--train-per-seed", action="store_true", default=None,
                   help="train the super-network and the plain network once per seed (default: once, shared)")
    p.add_argument("--steps-per-epoch", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--target-fraction", type=float)
    p.add_argument("-J", "--candidates", type=int)
    p.add_argument("-L", "--layers", type=int)
    p.add_argument("--initial-reduction", type=float)
    p.add_argument("--min-reduction", type=float)
    p.add_argument("--v1-initial-reduction", type=float)
    p.add_argument("--holdout-size", type=int)
    p.add_argument("--calib-batches", type=int)
    p.add_argument("--v1-steps", type=int)
    p.add_argument("--finetune-steps", type=int)
    p.add_argument("--val-batches", type=int)
    p.add_argument("--threads", type=int)
    p.add_argument("--no-throughput", action="store_true")
    p.add_argument("--land", action="store_true", help="every MCD run with its landing phase (default: MCD alone)")
    p.add_argument("--db", help="LUT (default: demo_out/lut.sqlite, then runs/bench_lut/mbv3-tiny-tflite-full.sqlite)")
    p.add_argument("--device", help="device_id of the LUT slice (default: this host's local agent)")
    p.add_argument("--runtime", default="tflite")
    p.add_argument("--workdir", default="runs/bench_search", help="training runs and search folders (kept)")
    p.add_argument("--out", help="JSON path (default: benchmarks/results/bench_search-<date>.json)")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = build_config(args)
    torch.set_num_threads(cfg.threads)
    log = (lambda _line: None) if args.quiet else (lambda line: print(line, flush=True))
    from benchmarks.bench_lut import machine, versions
    from search.spaces import get_space
    space = get_space(cfg.space)
    latency = resolve_latency(args, space)
    log(latency["note"])
    started = datetime.now(timezone.utc)
    stamp = started.strftime("%Y%m%d-%H%M%S")
    work = Path(args.workdir) / stamp
    t0 = time.perf_counter()
    data = Data(cfg, space)
    seeds, supernet = [], None
    trained = None
    if not cfg.train_per_seed:
        log(f"training once (seed 0), shared by the {cfg.seeds} search seeds")
        trained = train_both(cfg, space, 0, work / "train", log)
    for seed in range(cfg.seeds):
        rec = run_seed(seed, cfg, space, latency, data, work / f"seed{seed}", log, trained)
        supernet = supernet or rec["_supernet"]
        seeds.append({k: v for k, v in rec.items() if k != "_supernet"})
    tp = throughput(cfg, space, latency, supernet, data, log) if cfg.throughput else None
    summary = summarize(seeds)
    summary["target"] = spread([s["limit"] for s in seeds])
    summary["train_images_per_s"] = {
        "od": spread([statistics.mean(s["supernet_train"]["images_per_s"]) for s in seeds]),
        "plain": spread([statistics.mean(s["plain_train"]["images_per_s"]) for s in seeds])}
    result = {"benchmark": "bench_search", "date": started.isoformat(timespec="seconds"), "space": space.name,
              "data": "builtin", "machine": machine(), "versions": versions(),
              "threads": {"torch": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
              "command": "python -m benchmarks.bench_search " + " ".join(argv if argv is not None else sys.argv[1:]),
              "settings": asdict(cfg),
              "schedule": {"mcd": asdict(cfg.schedule()), "netadapt_v1": asdict(cfg.v1_schedule())},
              "latency": {k: v for k, v in latency.items() if k not in ("make", "table")},
              "workdir": str(work), "seeds": seeds, "summary": summary, "throughput": tp,
              "wall_s": time.perf_counter() - t0}
    result["machine"]["load_avg_1m_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print("\n".join(table_lines(result)))
    path = Path(args.out) if args.out else RESULTS / f"bench_search-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=str) + "\n", encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
