"""Search benchmarks at convergence: train once, search k latency targets, over seeds (CPU).

    .venv/bin/python -m benchmarks.bench_search                        # mbv3-tiny, default scale
    .venv/bin/python -m benchmarks.bench_search --space fastdepth-tiny # the same protocol for depth
    .venv/bin/python -m benchmarks.bench_search --quick                # smoke scale (< 4 min; figures meaningless)
    .venv/bin/python -m benchmarks.bench_search --db lut.sqlite [--device ID] [--seeds 3] [--epochs N]

Runtime at the defaults (1 torch thread, this project's 2-core Xeon VM; figures and JSON files
in docs/benchmarks.md, "Search at convergence"): mbv3-tiny about 40 minutes on a fresh clone
(LUT built first: under a minute with a warm export cache, ~10 minutes cold), fastdepth-tiny
about 18. The budget goes to training (SN, plain, 6 networks trained alone), then per seed to
V1's per-target searches, the baselines and the fine-tunes, then the ablation's MCD runs.

Protocol (every setting lands in the JSON; `BenchConfig` says why each default is what it is):

0. **LUT** (the constraint; never MACs unless `--metric macs` is asked): `--db`, else the first
   default path holding a complete slice of this space for this host (`DEFAULT_DBS`), else
   `bench_lut_source.ensure_lut` builds (resumably) this host's TFLite LUT of the space into
   ``<workdir>/lut-<space>-tflite.sqlite``; its build time is recorded on its own.
1. **Training once, the same E epochs for both** (seed 0, shared by every search seed: the
   spread over seeds is the searches' and the fine-tunes', not training's):
   the OD super-network with `search.train.train`'s defaults (classification: grouped OD, SGD
   lr 0.2 per 128 images, 2 max-only warm-up epochs, the task's batch; depth: the task's
   AdamW per-image OD recipe), and the plain max network (the same `train()` with every image
   at the max network: NetAdapt V1 needs a trained start).
2. **k latency targets** (`--fractions`, descending, of the max network's LUT latency).
   *SN + OD + MCD*: ONE multi-target trajectory per seed with landing on: `run_mcd` per
   target, each continuing from the previous target's landed network with the chain's
   schedule origin (`ScheduleOrigin`), the public call `search.mcd.targets.search_targets`
   makes. *NetAdapt V1* (`baselines.netadapt_v1`): searched once PER TARGET from the plain
   max network (V1 pays per target). Time of each method for k targets = its training + its
   searches (wall and CPU seconds); the report gives V1 total / SN total per seed.
3. **Accuracy at each target after the same final fine-tune** (`final_eval`: BN recalibrated,
   `--finetune-steps` steps of the task's own fine-tune, the task's val metrics: top-1;
   depth RMSE and δ1, score = `task.score`), per seed 0..S-1 (seeds vary the search draws
   and the fine-tune's data order). Baselines with super-network weights, fine-tuned the same
   way: the uniform width multiplier (`uniform_baseline`) and the fair random search
   (`random_baseline`: draws repaired into the 2 % band, the budget MCD's chain scored to
   reach that target, as `targets.py` gives it). Paired differences (MCD - V1, - uniform,
   - random, - each scratch baseline) with 95 % t-intervals over seeds (`paired_stats`).
4. **From scratch** (`search.scratch.train_from_scratch`, the same E epochs and recipe, seed 0):
   at each target the uniform width multiplier network and the searched architecture itself
   (seed 0's config; `--scratch-seeds` more). No extra fine-tune (trained to the end of their
   own schedule). Their val figures stand beside the searched network's; being trained once,
   the interval of "MCD - scratch" holds only MCD's spread over seeds.
5. **CBC on/off x L = 3 / 1** at the middle target, landing on, fresh MCD runs from the max
   network on `--ablation-seeds` seeds (no training: cheap). CBC off = `cbc_off_view`
   (every residual block computes its whole stream: no removal, no partial bypass; the JSON
   records that every config it produced kept out == in). Gains CBC on - off (L = 3) and
   L3 - L1 (CBC on) with their 95 % intervals at the held-out score and the val score with
   super-network weights; the table says whether an interval resolves 0.5 points.
6. **Throughput** (`--throughput`, off by default: it costs ~2 min): LUT predictions/s,
   candidates scored/s, training images/s.

Threads: `--threads 1` (default): on the shared 2-core host depthwise convolutions ran 2-3x
faster per step than with 2 threads. Wall time on a loaded host is noisy, so CPU seconds are
recorded next to every wall time.

Prints the tables and writes `benchmarks/results/bench_search-<space>-<date>.json` (machine
with CPU model, versions, date, every setting, per-seed figures, the summary).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/bench_search.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.bench_lut import machine, predictions_per_second, versions  # noqa: E402
from benchmarks.bench_lut_source import ensure_lut  # noqa: E402
from benchmarks.bench_search_tables import table_lines  # noqa: E402
from benchmarks.cbc_off_view import computes_whole_stream, no_removal_view  # noqa: E402
from benchmarks.paired_stats import paired, resolves, t_interval  # noqa: E402
from device_agents.local import LocalAgent  # noqa: E402
from lut_db import DEFAULT_RUNTIME_OPTIONS, LatencyTable  # noqa: E402
from profiler.predictor import LatencyPredictor  # noqa: E402
from search.checkpoint import load_supernet  # noqa: E402
from search.data import make_loader  # noqa: E402
from search.errors import SearchError  # noqa: E402
from search.evaluate import recalibrate_bn  # noqa: E402
from search.finetune import FinetuneConfig  # noqa: E402
from search.mcd import (Constraint, LutLatencyMetric, MacsMetric, MCDConfig, ReductionSchedule,  # noqa: E402
                        ScheduleOrigin, SupernetScorer, read_history, run_mcd)
from search.mcd.baselines import netadapt_v1, random_baseline, uniform_baseline  # noqa: E402
from search.mcd.landing import LAND_TOLERANCE  # noqa: E402
from search.scratch import train_from_scratch  # noqa: E402
from search.spaces import get_space  # noqa: E402
from search.spaces.space import SubnetConfig  # noqa: E402
from search.tasks import task_of  # noqa: E402
from search.train import TrainConfig, train  # noqa: E402


RESULTS = Path(__file__).resolve().parent / "results"
#: LUTs looked for before building one (the first with a complete slice of the space for this host wins)
DEFAULT_DBS = {"mbv3-tiny": ("demo_out/lut.sqlite", "runs/bench_lut/mbv3-tiny-tflite-full.sqlite")}
SPACES = ("mbv3-tiny", "fastdepth-tiny")
# Per-space defaults of the fields left None in BenchConfig: the depth task trains on batches of 8
# (250 steps an epoch), so its fine-tunes and V1's proposal fine-tunes take more (cheaper) steps.
SPACE_DEFAULTS = {
    "mbv3-tiny": dict(epochs=5, finetune_steps=20, v1_steps=3, holdout_size=500, calib_batches=1),
    "fastdepth-tiny": dict(epochs=10, finetune_steps=100, v1_steps=10, holdout_size=None, calib_batches=8,
                           fractions=(0.95, 0.9, 0.86), ablation_seeds=5),
}


@dataclass(frozen=True)
class BenchConfig:
    """Every setting of a run (all recorded in the JSON). None: the space's default (SPACE_DEFAULTS)."""

    space: str = "mbv3-tiny"
    seeds: int = 3  # search + fine-tune seeds 0..seeds-1 (training is shared, seed 0)
    epochs: int | None = None  # super-network, plain max network and every scratch network (the same E);
    # mbv3-tiny 5: 8 trainings (SN, plain, 2 x 3 scratch) + searches fit 55 min; the max network is at
    # ~0.6 val top-1 there (0.75 at 10 epochs, the demo's); fastdepth-tiny 10 (~9 s each)
    steps_per_epoch: int | None = None  # cap (None: whole epoch)
    batch_size: int | None = None  # None: the task's (classification 128, depth 8), training and fine-tunes
    fractions: tuple[float, ...] = (0.75, 0.55, 0.40)  # latency targets, x the max network's, descending;
    # fastdepth-tiny (0.95, 0.9, 0.86): on this host's TFLite LUT its decoder and upsampling cost the same at
    # any width, so the smallest network is ~77 % of the max and the uniform x0.25 network ~85 %
    # (`check_reachable` stops a run whose lowest target is under the smallest network, before training)
    candidates: int = 6  # J: each costs one scoring (~0.4 s on mbv3-tiny); 6 keeps 3 seeds x (chain +
    # random baselines + 4 ablation runs) in budget (docs default 16)
    layers: int = 3  # L of MCD (the ablation also runs L=1)
    land_budget: int = 30  # landing candidates per target (5 steps at J=6; the docs measured <= 47 at J=16)
    initial_reduction: float = 0.05  # MCD's schedule (its defaults)
    decay: float = 0.96
    min_reduction: float = 0.005
    v1_initial_reduction: float = 0.025  # V1's own schedule (its public code), as `netadapt_v1` defaults
    v1_min_reduction: float = 0.005
    holdout_size: int | None = None  # held-out images scoring candidates (None: the whole held-out split)
    calib_batches: int | None = None  # BN recalibration batches per candidate (~128 images)
    v1_steps: int | None = None  # V1's short fine-tune per proposal (the task's optimiser and proposal LR)
    finetune_steps: int | None = None  # the same final fine-tune for every compared network (task's LR)
    finetune_bn_batches: int = 4  # BN recalibration before the val figures of super-network weights
    val_batches: int | None = None  # val batches for the final figures (None: the whole val split)
    train_val_batches: int = 2  # validation inside train() after each epoch (cheap; same for both)
    scratch_seeds: int = 1  # searched configs of seeds 0..n-1 trained from scratch per target
    ablation_seeds: int = 3  # seeds of the CBC x L 2x2 (4 MCD runs each, no training)
    metric: str = "latency"  # latency (a LUT, required) | macs (explicitly asked for)
    threads: int = 1
    throughput: bool = False
    quick: bool = False

    def schedule(self) -> ReductionSchedule:
        return ReductionSchedule(self.initial_reduction, self.decay, self.min_reduction)

    def v1_schedule(self) -> ReductionSchedule:
        return ReductionSchedule(self.v1_initial_reduction, self.decay, self.v1_min_reduction)


QUICK = dict(seeds=2, epochs=1, steps_per_epoch=3, candidates=4, land_budget=32,
             v1_initial_reduction=0.1, holdout_size=32, calib_batches=1, v1_steps=1,
             finetune_steps=2, finetune_bn_batches=1, val_batches=1, train_val_batches=1, ablation_seeds=2, quick=True)
QUICK_SPACE = {"mbv3-tiny": dict(batch_size=32), "fastdepth-tiny": dict(batch_size=8)}


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


def _lut_slice(db: Path, space, device: str, runtime: str):
    """(table, slice info) of `db` for `device`/`runtime`, or (None, reason) when it lacks the space."""
    slices = LatencyTable.slices(db)
    info = next((s for s in slices if s.device_id == device and s.runtime == runtime), None)
    if info is None:
        there = "; ".join(f"{s.device_id} {s.runtime}" for s in slices) or "none"
        return None, f"{db}: no {runtime} slice for device {device!r} (slices: {there})"
    table = LatencyTable.load(db, device, runtime, DEFAULT_RUNTIME_OPTIONS)
    try:
        LatencyPredictor(space, table).check()  # every key of the space measured
    except Exception as exc:  # noqa: BLE001 - the predictor's own message says which keys are missing
        return None, f"{db}: {exc}"
    return (table, info), None


def resolve_constraint(args, cfg: BenchConfig, space, work_root: Path, log) -> dict:
    """The constraint's metric factory and what it is: a LUT slice (found or built), or MACs if asked."""
    if cfg.metric == "macs":
        return {"kind": "macs", "db": None, "unit": "MACs", "name": "macs", "table": None, "build": None,
                "make": lambda: MacsMetric(space), "note": "MACs constraint (--metric macs), not latency"}
    device = args.device or LocalAgent().info().device_id
    build = None
    if args.db:
        if not Path(args.db).is_file():
            raise SystemExit(f"--db {args.db}: no such file (a LUT built by `lutbuild` or bench_lut_source)")
        found, why = _lut_slice(Path(args.db), space, device, args.runtime)
        if found is None:
            raise SystemExit(f"--db {why}; pass --device, or omit --db to build this host's LUT")
        db = Path(args.db)
    else:
        found, db = None, None
        for path in DEFAULT_DBS.get(space.name, ()):
            if Path(path).is_file():
                found, _ = _lut_slice(Path(path), space, device, args.runtime)
                if found is not None:
                    db = Path(path)
                    break
        if found is None:
            db = work_root / f"lut-{space.name}-{args.runtime}.sqlite"
            log(f"building this host's {args.runtime} LUT of {space.name} into {db} (resumable)")
            with Clock() as clock:
                db = Path(ensure_lut(space.name, db, runtime=args.runtime, log=log))
            build = {"db": str(db), "time": clock.dict()}
            found, why = _lut_slice(db, space, device, args.runtime)
            if found is None:
                raise SystemExit(f"the LUT built by ensure_lut is incomplete: {why}")
    table, info = found
    return {"kind": "lut", "db": str(db), "device": device, "runtime": args.runtime,
            "runtime_options": table.runtime_options, "runtime_version": info.runtime_version, "rows": info.rows,
            "unit": "ms", "name": "latency_ms", "table": table, "build": build,
            "make": lambda: LutLatencyMetric(space, table),
            "note": f"LUT-predicted latency ({device}, {args.runtime} {table.runtime_options}) from {db}"}


class Data:
    """Loaders of the task's built-in set: train (fine-tunes, BN), held-out (scoring), val (figures)."""

    def __init__(self, cfg: BenchConfig, space, task):
        hw = space.spec.input_hw
        spec = task.default_data
        self.train_set = task.dataset(spec, "train", hw)  # training's holdout excluded
        available = len(task.dataset(spec, "holdout", hw))
        if cfg.holdout_size is not None and cfg.holdout_size > available:
            raise SystemExit(f"--holdout-size {cfg.holdout_size} > the {available} held-out images of {spec}")
        self.holdout_set = task.dataset(spec, "holdout", hw, holdout=cfg.holdout_size or available)
        self.val_set = task.dataset(spec, "val", hw)
        self.eval_batch = 250 if task.name == "classification" else 50
        self.holdout = make_loader(self.holdout_set, self.eval_batch)
        self.calib = make_loader(self.train_set, cfg.batch_size, shuffle=True, seed=0)  # same images each time
        self.bn = make_loader(self.train_set, cfg.batch_size, shuffle=True, seed=12_345)
        self.val = make_loader(self.val_set, self.eval_batch)

    def train_loader(self, batch_size: int, seed: int):
        return make_loader(self.train_set, batch_size, shuffle=True, seed=seed, drop_last=True)


def _config_dict(config) -> dict:
    return config.to_dict()


# ----------------------------------------------------------------------------- training
def train_one(cfg: BenchConfig, space, out: Path, od: bool, log) -> dict:
    """The OD super-network (od) or the max network trained plainly (every image at max), seed 0, timed."""
    shares = {} if od else {"od_max_share": 1.0, "od_min_share": 0.0}
    tc = TrainConfig(space=space.name, epochs=cfg.epochs, batch_size=cfg.batch_size, seed=0,
                     steps_per_epoch=cfg.steps_per_epoch, val_batches=cfg.train_val_batches, progress=False, **shares)
    with Clock() as clock:
        result = train(tc, out, device="cpu")
    _, net, _ = load_supernet(result.checkpoint)
    lines = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines() if x.strip()]
    log(f"  {'OD super-network' if od else 'plain max network'}: {cfg.epochs} epochs, {clock.wall:.0f}s wall "
        f"({clock.cpu:.0f}s CPU); last epoch: " + ", ".join(f"{k} {v:.4g}" for k, v in result.metrics.items()
                                                          if k.startswith("val_")))
    return {"time": clock.dict(), "net": net.eval(), "last_epoch": result.metrics,
            "epoch_seconds": [r.get("seconds") for r in lines], "images_per_s": [r["images_per_s"] for r in lines]}


def train_scratch(cfg: BenchConfig, space, config, task, data: Data, log) -> dict:
    """`config` trained alone from fresh weights (the super-network's recipe, E epochs, seed 0): val figures."""
    with Clock() as clock:
        result = train_from_scratch(space, config, cfg.epochs, 0, data_spec=task.default_data,
                                    batch_size=cfg.batch_size, steps_per_epoch=cfg.steps_per_epoch,
                                    log=lambda _line: None, evaluate=False)
    val = task.evaluate(result.model, data.val, max_batches=cfg.val_batches)
    return {"config": _config_dict(config), "time": clock.dict(), "reported_time": result.time,
            "train_metrics": result.train_metrics, "val": val, "score": task.score(val)}


# ----------------------------------------------------------------------------- evaluation
def final_eval(model, task, data: Data, cfg: BenchConfig, seed: int, finetune: bool) -> dict:
    """The task's val metrics with the given weights (BN recalibrated) and, if asked, after the same
    fine-tune (`finetune_steps` steps of the task's own fine-tune, seeded data order)."""
    model = model.to(memory_format=torch.channels_last)
    torch.manual_seed(seed)
    recalibrate_bn(model, data.bn, cfg.finetune_bn_batches)
    before = task.evaluate(model, data.val, max_batches=cfg.val_batches)
    out = {"val_before": before, "score_before": task.score(before)}
    if finetune:
        ft = FinetuneConfig.for_task(task, epochs=1, batch_size=cfg.batch_size, seed=seed)
        with Clock() as clock:
            task.train_epochs(model, data.train_loader(cfg.batch_size, seed), cfg.finetune_steps, ft,
                              lambda _epoch, _loss: None)
        after = task.evaluate(model, data.val, max_batches=cfg.val_batches)
        out.update(val_after=after, score_after=task.score(after), finetune_time=clock.dict())
    return out


def _slice(supernet, config):
    with torch.no_grad():
        return supernet.subnet(config)


def _net_record(space, config, values: dict, limit: float, name: str) -> dict:
    value = values[name]
    return {"config": _config_dict(config), "value": value, "unused_budget": (limit - value) / limit,
            "landed": 0.0 <= (limit - value) / limit <= LAND_TOLERANCE + 1e-9, "depth": space.depth(config),
            "macs": space.macs(config)}


# ----------------------------------------------------------------------------- searches
def mcd_chain(space, view, metric_factory, limits: list[float], scorer, out: Path, cfg: BenchConfig, seed: int,
              layers: int, log) -> list[dict]:
    """One MCD trajectory through every limit (descending), landing on, as `targets.search_targets` runs
    it: each target continues from the previous target's network and the chain's schedule origin."""
    metric = metric_factory()
    mcd = MCDConfig(candidates=cfg.candidates, layers=layers, schedule=cfg.schedule(), seed=seed, land=True,
                    land_budget=cfg.land_budget)
    origin_value = {metric.name: metric.value(space.max_config())}
    start, iterations, cumulative, records = None, 0, 0, []
    for index, limit in enumerate(limits):
        folder = out / f"t{index}"
        with Clock() as clock:
            result = run_mcd(view, [Constraint(metric, limit)], scorer, folder, mcd, start=start,
                             log=lambda _line: None, origin=ScheduleOrigin(origin_value, iterations))
        history = read_history(folder)
        scored = sum(len(r.get("candidates", [])) for r in history)
        cumulative += scored
        configs = [result.config] + [c for r in history for c in _history_configs(r)]
        rec = {**_net_record(space, result.config, result.values, limit, metric.name), "limit": limit,
               "holdout": result.score, "iterations": result.iteration,
               "landing_steps": result.landing_steps, "scored": scored, "scored_cumulative": cumulative,
               "time": clock.dict(), "whole_stream": all(computes_whole_stream(space, c) for c in configs),
               "configs_checked": len(configs)}
        log(f"  MCD L={layers} {'CBC' if view is space else 'CBC off'} target {index + 1}: {rec['iterations']} "
            f"iterations + {result.landing_steps} landing steps, {scored} scored, {clock.wall:.0f}s, "
            f"{metric.name} {rec['value']:.4g} (unused {rec['unused_budget']:.1%}), held-out {result.score:.4f}")
        records.append(rec)
        start, iterations = result.config, iterations + result.iteration
    return records


def _history_configs(record: dict):
    """Configs of every candidate a history record holds (MCD iterations and landing steps)."""
    for cand in record.get("candidates", []):
        yield SubnetConfig.from_dict(cand["config"])


def run_v1(space, plain_net, metric_factory, limit: float, task, data: Data, cfg: BenchConfig, seed: int,
           log) -> dict:
    """NetAdapt V1 from the plain max network to one limit (V1 pays per target), timed."""
    proposal_ft = task.proposal_finetune(data.train_loader(cfg.batch_size, seed), cfg.v1_steps, task.proposal_lr,
                                         seed)
    start = plain_net.subnet(space.max_config()).to(memory_format=torch.channels_last)
    metric = metric_factory()
    with Clock() as clock:
        try:
            v1 = netadapt_v1(space, [Constraint(metric, limit)], start, schedule=cfg.v1_schedule(), seed=seed,
                             finetune_fn=lambda m, it: proposal_ft(m.to(memory_format=torch.channels_last), it),
                             evaluate_fn=lambda m: task.score(task.evaluate(m, data.holdout)),
                             log=lambda _line: None)
            error = None
        except SearchError as exc:
            v1, error = None, str(exc)
    rec = {"time": clock.dict(), "error": error, "limit": limit}
    if v1 is None:
        log(f"  NetAdapt V1 to {limit:.4g} failed after {clock.wall:.0f}s: {error}")
        return rec
    rec.update(_net_record(space, v1.config, v1.values, limit, metric.name), holdout=v1.score,
               evaluations=v1.evaluations, iterations=v1.detail["iterations"])
    rec["_model"] = v1.detail["model"]
    log(f"  NetAdapt V1 to {limit:.4g}: {v1.detail['iterations']} iterations, {v1.evaluations} fine-tuned "
        f"proposals, {clock.wall:.0f}s, held-out {v1.score:.4f}")
    return rec


def run_seed(seed: int, cfg: BenchConfig, space, task, latency: dict, limits: list[float], data: Data,
             supernet, plain_net, work: Path, log) -> dict:
    """One seed: the MCD chain, V1 per target, the baselines, and the same fine-tune of each network."""
    log(f"seed {seed}")
    scorer = SupernetScorer.for_task(task, supernet, data.holdout, data.calib, cfg.calib_batches)
    chain = mcd_chain(space, space, latency["make"], limits, scorer, work / "mcd", cfg, seed, cfg.layers, log)
    targets = []
    for index, (limit, mcd) in enumerate(zip(limits, chain)):
        v1 = run_v1(space, plain_net, latency["make"], limit, task, data, cfg, seed, log)
        constraint = Constraint(latency["make"](), limit)
        with Clock() as clock:
            try:
                uni = uniform_baseline(space, [constraint], scorer)
            except SearchError as exc:  # every width at its minimum, kernels at max, still over the target
                uni = None
                uniform = {"error": str(exc), "time": clock.dict()}
        if uni is not None:
            uniform = {**_net_record(space, uni.config, uni.values, limit, latency["name"]), "holdout": uni.score,
                       "multiplier": uni.detail["multiplier"], "time": clock.dict(), "error": None}
        with Clock() as clock:
            rnd = random_baseline(space, [constraint], scorer, mcd["scored_cumulative"], seed=seed)
        rand = {**_net_record(space, rnd.config, rnd.values, limit, latency["name"]), "holdout": rnd.score,
                "evaluations": rnd.evaluations, "time": clock.dict()}
        mcd.update(final_eval(_slice(supernet, SubnetConfig.from_dict(mcd["config"])), task, data, cfg, seed, True))
        if uni is not None:
            uniform.update(final_eval(_slice(supernet, uni.config), task, data, cfg, seed, True))
        rand.update(final_eval(_slice(supernet, rnd.config), task, data, cfg, seed, True))
        if v1.get("error") is None:
            v1.update(final_eval(v1.pop("_model"), task, data, cfg, seed, True))
        log(f"  target {index + 1}: score after fine-tune: MCD {mcd['score_after']:.4f}, "
            f"V1 {v1.get('score_after', float('nan')):.4f}, uniform x{uniform.get('multiplier', float('nan')):.2f} "
            f"{uniform.get('score_after', float('nan')):.4f}, random ({rnd.evaluations}) {rand['score_after']:.4f}")
        targets.append({"limit": limit, "mcd": mcd, "netadapt_v1": v1, "uniform": uniform, "random": rand})
    return {"seed": seed, "targets": targets}


def run_ablation(seed: int, cfg: BenchConfig, space, task, latency: dict, limit: float, data: Data, supernet,
                 work: Path, log) -> dict:
    """CBC on/off x L=3/1 at one limit, landing on, fresh runs from the max network; val with SN weights."""
    scorer = SupernetScorer.for_task(task, supernet, data.holdout, data.calib, cfg.calib_batches)
    view = no_removal_view(space)
    cells = {}
    for cbc, searched in (("cbc", space), ("nocbc", view)):
        for layers in dict.fromkeys((cfg.layers, 1)):
            name = f"{cbc}_L{layers}"
            rec = mcd_chain(space, searched, latency["make"], [limit], scorer, work / name, cfg, seed, layers, log)[0]
            rec.update(final_eval(_slice(supernet, SubnetConfig.from_dict(rec["config"])), task, data, cfg, seed,
                                  False))
            cells[name] = rec
    return {"seed": seed, "limit": limit, "cells": cells}


# ----------------------------------------------------------------------------- throughput
def throughput(cfg: BenchConfig, space, task, latency: dict, supernet, data: Data, sn: dict, plain: dict,
               log) -> dict:
    out: dict = {"lut": predictions_per_second(space, latency["table"], n=2_000 if cfg.quick else 50_000)
                 if latency["table"] is not None else None}
    rng = random.Random(0)
    configs = [space.random_config(rng) for _ in range(2 if cfg.quick else 6)]
    scorer = SupernetScorer.for_task(task, supernet, data.holdout, data.calib, cfg.calib_batches)
    scorer(configs[0])  # warm-up
    with Clock() as clock:
        for c in configs:
            scorer(c)
    out["scoring"] = {"candidates_per_s": len(configs) / clock.wall, "holdout_images": len(data.holdout_set),
                      "calib_batches": cfg.calib_batches, "calib_batch_size": cfg.batch_size}
    out["training_images_per_s"] = {"od": sum(sn["images_per_s"]) / len(sn["images_per_s"]),
                                    "plain": sum(plain["images_per_s"]) / len(plain["images_per_s"])}
    log("  throughput measured")
    return out


# ----------------------------------------------------------------------------- summary
def _get(rec: dict, *keys):
    for key in keys:
        if rec is None or not isinstance(rec, dict):
            return None
        rec = rec.get(key)
    return rec


def summarize(cfg: BenchConfig, task, seeds: list[dict], scratch: list[dict], ablation: list[dict],
              sn: dict, plain: dict) -> dict:
    """Per target: each method's figures and paired differences (95 % t-intervals over seeds); time; ablation."""
    metrics = list(task.headline)
    methods = ("mcd", "netadapt_v1", "uniform", "random")
    per_target = []
    for index, _ in enumerate(cfg.fractions):
        rows = [s["targets"][index] for s in seeds]
        target = {"limit": rows[0]["limit"], "fraction": cfg.fractions[index], "methods": {}, "differences": {}}
        for m in methods:
            recs = [r[m] for r in rows]
            target["methods"][m] = {
                "value": t_interval([_get(r, "value") for r in recs]),
                "unused_budget": t_interval([_get(r, "unused_budget") for r in recs]),
                "landed_all": all(r.get("landed") for r in recs if r.get("error") is None),
                "holdout": t_interval([_get(r, "holdout") for r in recs]),
                "score_before": t_interval([_get(r, "score_before") for r in recs]),
                "score_after": t_interval([_get(r, "score_after") for r in recs]),
                **{f"val_{k}": t_interval([_get(r, "val_after", k) for r in recs]) for k in metrics},
                "failed": sum(1 for r in recs if r.get("error"))}
        sc = scratch[index]
        for name in ("uniform", "searched"):
            entries = sc[name]
            target["methods"][f"scratch_{name}"] = {
                "value": t_interval([e["value"] for e in entries]),
                "score_after": t_interval([e["score"] for e in entries]),
                **{f"val_{k}": t_interval([e["val"][k] for e in entries]) for k in metrics}}
        mcd_after = [_get(r["mcd"], "score_after") for r in rows]
        for m in ("netadapt_v1", "uniform", "random"):
            target["differences"][f"mcd_minus_{m}"] = paired(mcd_after, [_get(r[m], "score_after") for r in rows])
            for k in metrics:
                target["differences"][f"mcd_minus_{m}_{k}"] = paired(
                    [_get(r["mcd"], "val_after", k) for r in rows], [_get(r[m], "val_after", k) for r in rows])
        for name in ("uniform", "searched"):
            ref = sc[name][0]["score"] if sc[name] else None  # trained once (seed 0's config): the spread is MCD's
            target["differences"][f"mcd_minus_scratch_{name}"] = paired(mcd_after, [ref] * len(mcd_after))
        per_target.append(target)

    def total(method_train: dict, per_seed) -> list[dict]:
        return [{k: method_train["time"][k] + per_seed(s, k) for k in ("wall_s", "cpu_s")} for s in seeds]

    mcd_search = lambda s, k: sum(t["mcd"]["time"][k] for t in s["targets"])  # noqa: E731
    v1_search = lambda s, k: sum(t["netadapt_v1"]["time"][k] for t in s["targets"])  # noqa: E731
    sn_total, v1_total = total(sn, mcd_search), total(plain, v1_search)
    time_summary = {
        "sn_od_mcd": {"train": sn["time"], "search_wall_s": t_interval([mcd_search(s, "wall_s") for s in seeds]),
                      "search_cpu_s": t_interval([mcd_search(s, "cpu_s") for s in seeds]),
                      "total_wall_s": t_interval([t["wall_s"] for t in sn_total]),
                      "total_cpu_s": t_interval([t["cpu_s"] for t in sn_total])},
        "netadapt_v1": {"train": plain["time"], "search_wall_s": t_interval([v1_search(s, "wall_s") for s in seeds]),
                        "search_cpu_s": t_interval([v1_search(s, "cpu_s") for s in seeds]),
                        "total_wall_s": t_interval([t["wall_s"] for t in v1_total]),
                        "total_cpu_s": t_interval([t["cpu_s"] for t in v1_total])},
        "ratio_v1_over_sn": {"wall": t_interval([v["wall_s"] / s["wall_s"] for v, s in zip(v1_total, sn_total)]),
                             "cpu": t_interval([v["cpu_s"] / s["cpu_s"] for v, s in zip(v1_total, sn_total)])},
        "targets": len(cfg.fractions),
        "mean_score_after": {"sn_od_mcd": t_interval([sum(_get(t["mcd"], "score_after") for t in s["targets"])
                                                      / len(s["targets"]) for s in seeds]),
                             "netadapt_v1": t_interval([_mean_or_none([_get(t["netadapt_v1"], "score_after")
                                                                       for t in s["targets"]]) for s in seeds])}}
    time_summary["mean_score_after"]["difference"] = paired(
        time_summary["mean_score_after"]["sn_od_mcd"]["values"] if len(seeds) else [],
        [_mean_or_none([_get(t["netadapt_v1"], "score_after") for t in s["targets"]]) for s in seeds]) \
        if all(_mean_or_none([_get(t["netadapt_v1"], "score_after") for t in s["targets"]]) is not None
               for s in seeds) else t_interval([])
    ab = {}
    if ablation:
        cells = list(ablation[0]["cells"])
        for name in cells:
            recs = [a["cells"][name] for a in ablation]
            ab[name] = {"value": t_interval([r["value"] for r in recs]),
                        "unused_budget": t_interval([r["unused_budget"] for r in recs]),
                        "holdout": t_interval([r["holdout"] for r in recs]),
                        "score_before": t_interval([r["score_before"] for r in recs]),
                        "depth": t_interval([r["depth"] for r in recs]),
                        "scored": t_interval([r["scored"] for r in recs]),
                        "whole_stream_all": all(r["whole_stream"] for r in recs)}
        L = cfg.layers
        gains = {}
        for gain, (a, b) in {"cbc_on_minus_off": (f"cbc_L{L}", f"nocbc_L{L}"),
                             f"L{L}_minus_L1": (f"cbc_L{L}", "cbc_L1"),
                             "both": (f"cbc_L{L}", "nocbc_L1")}.items():
            entry = {}
            for key in ("holdout", "score_before"):
                interval = paired([x["cells"][a][key] for x in ablation], [x["cells"][b][key] for x in ablation])
                entry[key] = {**interval, "resolves_0.5_points": resolves(interval, 0.005)}
            gains[gain] = entry
        ab["gains"] = gains
    return {"targets": per_target, "time": time_summary, "ablation": ab}


def _mean_or_none(values):
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if len(vals) == len(values) and vals else None


def _scratch_all(cfg: BenchConfig, space, task, seeds: list[dict], data: Data, log) -> list[dict]:
    """Per target: the uniform network and the searched configs (seeds 0..scratch_seeds-1) trained alone."""
    out = []
    for index, _ in enumerate(cfg.fractions):
        first = seeds[0]["targets"][index]
        entries = {"uniform": [] if first["uniform"].get("error") else [
            {**train_scratch(cfg, space, SubnetConfig.from_dict(first["uniform"]["config"]), task, data, log),
             "value": first["uniform"]["value"], "multiplier": first["uniform"]["multiplier"]}]}
        entries["searched"] = []
        for s in seeds[:cfg.scratch_seeds]:
            rec = s["targets"][index]["mcd"]
            entries["searched"].append({**train_scratch(cfg, space, SubnetConfig.from_dict(rec["config"]), task,
                                                        data, log), "value": rec["value"], "from_seed": s["seed"]})
        log(f"  scratch at target {index + 1}: uniform "
            + ", ".join(f"{e['score']:.4f} ({e['time']['wall_s']:.0f}s)" for e in entries["uniform"]) + "; searched "
            + ", ".join(f"{e['score']:.4f}" for e in entries["searched"]))
        out.append(entries)
    return out


# ----------------------------------------------------------------------------- main
def check_reachable(cfg: BenchConfig, space, latency: dict) -> None:
    """One line and exit 1, before any training, when the lowest target is under the smallest network."""
    metric = latency["make"]()
    max_value, min_value = metric.value(space.max_config()), metric.value(space.min_config())
    if cfg.fractions[-1] * max_value < min_value:
        raise SystemExit(f"--fractions {','.join(map(str, cfg.fractions))}: the smallest network of {space.name} "
                         f"already costs {min_value / max_value:.1%} of the max network's {latency['name']} "
                         f"({min_value:.4g} of {max_value:.4g}); pass fractions above that")


def build_config(args) -> BenchConfig:
    if args.space not in SPACES:
        raise SystemExit(f"--space {args.space!r}: expected one of {', '.join(SPACES)}")
    base = dict(SPACE_DEFAULTS[args.space])
    if args.quick:
        base.update(QUICK, **QUICK_SPACE[args.space])
    for field in dataclasses.fields(BenchConfig):
        value = getattr(args, field.name, None)
        if value is not None and field.name not in ("quick", "throughput"):
            base[field.name] = value
    base["throughput"] = bool(args.throughput)
    base["space"] = args.space
    cfg = BenchConfig(**base)
    if cfg.batch_size is None:
        cfg = dataclasses.replace(cfg, batch_size=task_of(get_space(cfg.space)).train_defaults["batch_size"])
    fr = cfg.fractions
    if not fr or any(not 0 < f < 1 for f in fr) or any(b >= a for a, b in zip(fr, fr[1:])):
        raise SystemExit(f"--fractions {','.join(map(str, fr))}: expected strictly descending values in (0, 1)")
    for name in ("seeds", "epochs", "candidates", "layers", "scratch_seeds", "finetune_steps", "v1_steps",
                 "calib_batches"):
        if getattr(cfg, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} {getattr(cfg, name)}: expected >= 1")
    if cfg.ablation_seeds < 0 or cfg.scratch_seeds > cfg.seeds:
        raise SystemExit(f"--ablation-seeds must be >= 0 and --scratch-seeds <= --seeds ({cfg.seeds})")
    return cfg


def _fractions(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="mbv3-tiny", help=f"one of {', '.join(SPACES)}")
    p.add_argument("--quick", action="store_true", help="smoke scale: tiny training and searches (< 4 min)")
    p.add_argument("--seeds", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--steps-per-epoch", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--fractions", type=_fractions, help="latency targets as fractions of the max network's, "
                   "descending (default 0.75,0.55,0.40)")
    p.add_argument("-J", "--candidates", type=int)
    p.add_argument("-L", "--layers", type=int)
    p.add_argument("--land-budget", type=int)
    p.add_argument("--initial-reduction", type=float)
    p.add_argument("--min-reduction", type=float)
    p.add_argument("--v1-initial-reduction", type=float)
    p.add_argument("--holdout-size", type=int)
    p.add_argument("--calib-batches", type=int)
    p.add_argument("--v1-steps", type=int)
    p.add_argument("--finetune-steps", type=int)
    p.add_argument("--val-batches", type=int)
    p.add_argument("--scratch-seeds", type=int)
    p.add_argument("--ablation-seeds", type=int)
    p.add_argument("--threads", type=int)
    p.add_argument("--metric", choices=("latency", "macs"), help="constraint (default latency: a LUT)")
    p.add_argument("--throughput", action="store_true", help="also measure LUT/scoring/training throughput")
    p.add_argument("--db", help="LUT (default: a known path holding this space, else built by ensure_lut)")
    p.add_argument("--device", help="device_id of the LUT slice (default: this host's local agent)")
    p.add_argument("--runtime", default="tflite")
    p.add_argument("--workdir", default="runs/bench_search", help="LUT, training runs and search folders (kept)")
    p.add_argument("--out", help="JSON path (default: benchmarks/results/bench_search-<space>-<date>.json)")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = build_config(args)
    torch.set_num_threads(cfg.threads)
    log = (lambda _line: None) if args.quiet else (lambda line: print(line, flush=True))
    space = get_space(cfg.space)
    task = task_of(space)
    started = datetime.now(timezone.utc)
    stamp = started.strftime("%Y%m%d-%H%M%S")
    work_root = Path(args.workdir)
    work = work_root / f"{cfg.space}-{stamp}"
    t0 = time.perf_counter()
    latency = resolve_constraint(args, cfg, space, work_root, log)
    log(latency["note"])
    check_reachable(cfg, space, latency)
    with Clock() as run_clock:
        data = Data(cfg, space, task)
        log(f"training once (seed 0, {cfg.epochs} epochs each), shared by the {cfg.seeds} search seeds")
        sn = train_one(cfg, space, work / "train" / "supernet", True, log)
        plain = train_one(cfg, space, work / "train" / "plain", False, log)
        max_value = latency["make"]().value(space.max_config())
        limits = [f * max_value for f in cfg.fractions]
        log(f"targets: {', '.join(f'{v:.4g}' for v in limits)} {latency['unit']} "
            f"({', '.join(f'{f:.0%}' for f in cfg.fractions)} of {max_value:.4g})")
        seeds = [run_seed(seed, cfg, space, task, latency, limits, data, sn["net"], plain["net"],
                          work / f"seed{seed}", log) for seed in range(cfg.seeds)]
        log("from scratch (same epochs and recipe, seed 0)")
        scratch = _scratch_all(cfg, space, task, seeds, data, log)
        middle = limits[len(limits) // 2]
        log(f"CBC x L ablation at {middle:.4g} ({cfg.ablation_seeds} seeds)")
        ablation = [run_ablation(seed, cfg, space, task, latency, middle, data, sn["net"], work / f"ablation{seed}",
                                 log) for seed in range(cfg.ablation_seeds)]
        tp = throughput(cfg, space, task, latency, sn["net"], data, sn, plain, log) if cfg.throughput else None
    summary = summarize(cfg, task, seeds, scratch, ablation, sn, plain)
    result = {"benchmark": "bench_search", "date": started.isoformat(timespec="seconds"), "space": space.name,
              "task": task.name, "score_metric": task.score_metric, "headline": list(task.headline),
              "data": task.default_data, "machine": machine(), "versions": versions(),
              "threads": {"torch": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
              "command": "python -m benchmarks.bench_search " + " ".join(argv if argv is not None else sys.argv[1:]),
              "settings": asdict(cfg),
              "schedule": {"mcd": asdict(cfg.schedule()), "netadapt_v1": asdict(cfg.v1_schedule())},
              "latency": {k: v for k, v in latency.items() if k not in ("make", "table")},
              "max_value": max_value, "limits": limits,
              "training": {"supernet": {k: sn[k] for k in ("time", "last_epoch", "epoch_seconds", "images_per_s")},
                           "plain": {k: plain[k] for k in ("time", "last_epoch", "epoch_seconds", "images_per_s")},
                           "shared_by_all_seeds": True, "seed": 0},
              "workdir": str(work), "seeds": seeds, "scratch": scratch, "ablation": ablation,
              "summary": summary, "throughput": tp, "wall_s": time.perf_counter() - t0,
              "wall_s_without_lut_build": run_clock.wall}
    result["machine"]["load_avg_1m_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print("\n".join(table_lines(result)))
    path = Path(args.out) if args.out else RESULTS / f"bench_search-{cfg.space}-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
