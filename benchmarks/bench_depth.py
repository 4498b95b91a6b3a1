"""Depth ablation at small scale: super-network + OD + MCD (NetAdaptV2) vs NetAdapt V1-style search.

The seed's depth result (NYU, FastDepth space): NetAdaptV2 found RMSE 0.576 m at 86.7 ms in
27 GPU-hours where NetAdapt V1 needed 65 (2.4x), at 0.583 m / 87.6 ms. This benchmark runs the
same two pipelines on `fastdepth-tiny` + `builtin-depth` (64x64) on this CPU host, under the
same resource constraint, and reports wall time and RMSE:

- **NetAdaptV2**: train the OD super-network (`--supernet-steps`), run MCD (J candidates of L
  layers per iteration, each scored by -RMSE on the holdout split with sliced super-network
  weights and BN recalibrated), fine-tune the winner (`--finetune-steps`).
- **NetAdapt V1**: train the max network plainly for the same number of steps (V1 starts from
  a trained network), then V1's loop (`search.mcd.baselines.netadapt_v1`, the code `nas-search
  report --baselines netadapt-v1` runs, with the depth task's fine-tune and score): every
  iteration one proposal per width variable, each shrinking that one layer just enough for
  V1's schedule target (2.5 % of the start, decay 0.96), each short-fine-tuned (`--v1-steps`,
  AdamW 5e-4) from the current weights and scored by -RMSE on the holdout split; the best
  proposal is kept with its weights. Same final fine-tune.

Constraint: MACs (`--limit`, a fraction of the max network's). No phone LUT on this host;
with one, MCD's `LutLatencyMetric` drops in for `MacsMetric` unchanged. RMSE / δ1 are on the
val split (never seen by either search). One run, one seed: differences of a few cm are
noise at this scale; the wall-time ratio is the figure to read.

Usage: python benchmarks/bench_depth.py [--quick]  (JSON under benchmarks/results/)

Memory (`--memory`, issue 16 part 5: depth on a laptop): the peak RSS (``VmHWM`` of a
child process, above its peak before the first step) of two OD training steps of `fastdepth` (224 px) at several batch
sizes, the numbers `search.depth.memory` is fitted to, next to its estimate; then peak RSS
and wall time of ``nas-search train --space fastdepth --data builtin-depth --epochs 1
--steps-per-epoch N`` at the task's default batch (rendering the data set, N steps,
validation of the max and min networks). JSON: `benchmarks/results/bench_depth_memory.json`.
The ablation run records its own peak RSS too (``peak_rss_mb``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from search.data.loader import make_loader
from search.depth.memory import estimate_training_memory
from search.depth.task import DepthTask
from search.depth.train import DepthTrainConfig, finetune, train_supernet
from search.evaluate import recalibrate_bn
from search.mcd.baselines import netadapt_v1
from search.mcd.metrics import Constraint, MacsMetric
from search.mcd.scoring import SupernetScorer
from search.mcd.search import MCDConfig, run_mcd
from search.spaces import get_space
from search.optim import make_optimizer
from search.supernet import DepthSuperNet, ODPolicy, build_supernet

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of the whole benchmark")
    parser.add_argument("--limit", type=float, default=0.5, help="MAC constraint as a fraction of the max network")
    parser.add_argument("--supernet-steps", type=int, default=400)
    parser.add_argument("--finetune-steps", type=int, default=150)
    parser.add_argument("--v1-steps", type=int, default=10, help="short fine-tune per V1 proposal")
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: a loaded 2-core host runs depthwise backward 10x slower with 2)")
    parser.add_argument("--memory", action="store_true", help="measure training memory (see the module doc) only")
    parser.add_argument("--memory-batches", default="2,8,16,32", help="--memory: batch sizes of the one-step runs")
    parser.add_argument("--memory-steps", type=int, default=10, help="--memory: steps of the nas-search train run")
    parser.add_argument("--one-step", type=int, default=None, help=argparse.SUPPRESS)  # the child of --memory
    parser.add_argument("--space", default="fastdepth", help="--memory: the depth space")
    args = parser.parse_args()
    if args.one_step is not None:
        return _one_step(args.space, args.one_step, args.threads)
    if args.memory:
        return bench_memory(args)
    if args.quick:
        args.supernet_steps, args.finetune_steps, args.v1_steps, args.candidates = 20, 5, 2, 3
    torch.set_num_threads(args.threads)
    sizes = dict(train=96, holdout=16, val=16) if args.quick else dict(train=1000, holdout=100, val=100)
    log = print

    space, task = get_space("fastdepth-tiny"), DepthTask()
    t0 = time.perf_counter()
    data = {s: task.dataset("builtin-depth", s, space.spec.input_hw, size=n) for s, n in sizes.items()}
    log(f"data: {sizes} images rendered in {time.perf_counter() - t0:.1f}s")
    train_loader = make_loader(data["train"], 32, shuffle=True, seed=0)
    calib_loader = make_loader(data["train"], 32, shuffle=True, seed=1)
    holdout_loader, val_loader = make_loader(data["holdout"], 50), make_loader(data["val"], 50)
    macs = MacsMetric(space)
    constraint = Constraint(macs, args.limit * space.macs(space.max_config()))
    train_cfg = DepthTrainConfig(steps=args.supernet_steps, log_every=100)
    ft_cfg = DepthTrainConfig(steps=args.finetune_steps, lr=5e-4, warmup_steps=5, log_every=10 ** 9)
    rows = []

    def final(name, config, model, times, extra):
        t = time.perf_counter()
        finetune(model, train_loader, ft_cfg)
        times["finetune_s"] = time.perf_counter() - t
        m = task.evaluate(model, val_loader)
        rows.append({"method": name, "macs": macs.value(config), "val": m, **times, **extra,
                     "search_s": sum(v for k, v in times.items() if k != "finetune_s"),
                     "depth": space.depth(config), "config": config.to_dict()})

    # ---- NetAdaptV2: super-network + OD + MCD
    log("NetAdaptV2: OD super-network training")
    torch.manual_seed(0)
    supernet = DepthSuperNet(space)
    t = time.perf_counter()
    train_supernet(supernet, train_loader, train_cfg, log=lambda s: log("  " + s))
    times = {"train_s": time.perf_counter() - t}
    scorer = SupernetScorer.for_task(task, supernet, holdout_loader, calib_loader, calib_batches=3)
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        result = run_mcd(space, [constraint], scorer, out, MCDConfig(candidates=args.candidates, layers=args.layers),
                         log=lambda s: log("  " + s))
    times["search_loop_s"] = time.perf_counter() - t
    model = supernet.subnet(result.config)
    recalibrate_bn(model, calib_loader, 3)
    final("netadapt-v2 (SN+OD+MCD)", result.config, model, times,
          {"iterations": result.iteration, "evaluations": result.iteration * args.candidates,
           "holdout_rmse": -result.score})

    # ---- NetAdapt V1: trained max network, one layer per proposal, short fine-tune each
    log("NetAdapt V1: plain training of the max network")
    torch.manual_seed(0)
    max_model = space.build_subnet(space.max_config())
    t = time.perf_counter()
    finetune(max_model, train_loader, train_cfg, log=lambda s: log("  " + s))
    times = {"train_s": time.perf_counter() - t}
    t = time.perf_counter()
    v1 = netadapt_v1(space, [constraint], max_model, train_loader, holdout_loader, finetune_steps=args.v1_steps,
                     lr=task.proposal_lr, log=lambda s: log("  " + s))
    times["search_loop_s"] = time.perf_counter() - t
    final("netadapt-v1 (per-candidate fine-tune)", v1.config, v1.detail["model"], times,
          {"iterations": v1.detail["iterations"], "evaluations": v1.evaluations, "holdout_rmse": -v1.score})

    # ---- reference points: max network and the uniform width multiplier at the same MACs
    for name, cfg in (("max network (no search)", space.max_config()),):
        m = supernet.subnet(cfg)
        recalibrate_bn(m, calib_loader, 3)
        rows.append({"method": name + ", supernet weights", "macs": macs.value(cfg),
                     "val": task.evaluate(m, val_loader), "search_s": 0.0, "depth": space.depth(cfg),
                     "config": cfg.to_dict()})

    v2, v1 = rows[0], rows[1]
    header = (f"{'method':42} {'MACs(M)':>8} {'val RMSE':>9} {'REL':>6} {'δ1':>6} {'depth':>6} {'search s':>9} "
              f"{'evals':>6}")
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r['method']:42} {r['macs'] / 1e6:8.3f} {r['val']['rmse']:9.4f} {r['val']['rel']:6.3f} "
                     f"{r['val']['delta1']:6.3f} {r['depth']:6.2f} {r['search_s']:9.1f} {r.get('evaluations', 0):6}")
    lines.append(f"search time V1 / V2: {v1['search_s'] / v2['search_s']:.2f}x  "
                 f"(paper, NYU: 65 / 27 GPU-h = 2.4x); constraint {constraint.limit / 1e6:.3f}M MACs")
    print("\n".join(lines))
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / ("bench_depth_quick.json" if args.quick else "bench_depth.json")
    path.write_text(json.dumps({"args": vars(args), "sizes": sizes, "host": platform.node(),
                                "threads": args.threads, "constraint_macs": constraint.limit, "rows": rows,
                                "table": lines, "peak_rss_mb": _peak_rss_mb(resource.RUSAGE_SELF)}, indent=2))
    print(f"-> {path}")


def _maxrss_mb(ru_maxrss: int) -> float:
    """An rusage ``ru_maxrss`` in MB (Linux reports kB, macOS bytes)."""
    return round(ru_maxrss / (2 ** 20 if sys.platform == "darwin" else 2 ** 10), 1)


def _peak_rss_mb(who: int) -> float:
    return _maxrss_mb(resource.getrusage(who).ru_maxrss)


def _proc_status_mb(field: str) -> float | None:
    """VmRSS (now) or VmHWM (peak of this process image) in MB from /proc/self/status; None off Linux.
    Unlike ``ru_maxrss`` these start afresh at exec: a child of a large process (pytest) does not report
    its parent's RSS as its own peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024, 1)  # kB
    except OSError:
        return None
    return None


def _one_step(space_name: str, batch: int, threads: int) -> None:
    """Child of `--memory`: two OD training steps (as `search.train` runs them: channels-last, per-image
    OD, AdamW) on random data; prints JSON with the RSS before the first step and the peak, in MB."""
    torch.set_num_threads(threads)
    space, task = get_space(space_name), DepthTask()
    h, w = space.spec.input_hw
    net = build_supernet(space, ODPolicy(0.25, 0.25, True, 0)).to(memory_format=torch.channels_last)
    optimizer = make_optimizer(net, "adamw", 2e-3, 1e-4, 0.9, True)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, h, w, generator=g).contiguous(memory_format=torch.channels_last)
    y = torch.rand(batch, 1, h, w, generator=g) * 5
    before = _proc_status_mb("VmHWM") or _peak_rss_mb(resource.RUSAGE_SELF)
    t = time.perf_counter()
    for _ in range(2):
        loss = task.loss(net(x, net.sample_od(batch, g)), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(json.dumps({"before_mb": before, "peak_mb": _proc_status_mb("VmHWM") or _peak_rss_mb(resource.RUSAGE_SELF),
                      "s_per_step": (time.perf_counter() - t) / 2}))


def _run_child(argv: list[str]) -> tuple[subprocess.CompletedProcess, float, float]:
    """(result, wall s, peak RSS MB of that child alone: `os.wait4`; Linux counts the RSS of this process at
    the fork too, so it holds for a child larger than this small parent)."""
    t = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - t
    return subprocess.CompletedProcess(argv, os.waitstatus_to_exitcode(status), out), wall, _maxrss_mb(usage.ru_maxrss)


def bench_memory(args) -> None:
    """Peak RSS of training steps at several batch sizes and of a short `nas-search train` run."""
    space, task = get_space(args.space), DepthTask()
    default_batch = task.train_defaults["batch_size"]
    steps = []
    for batch in (int(b) for b in args.memory_batches.split(",")):
        result, wall, peak = _run_child([sys.executable, __file__, "--one-step", str(batch), "--space", space.name,
                                         "--threads", str(args.threads)])
        if result.returncode:
            raise SystemExit(f"one-step child (batch {batch}) failed: {result.stdout.strip()[-500:]}")
        child = json.loads(result.stdout.strip().splitlines()[-1])
        est = estimate_training_memory(space, batch, "builtin-depth")
        step_estimate = est.needed_bytes - est.data_bytes  # the step alone: the child holds no data set
        steps.append({"batch": batch, "peak_rss_mb": peak, "rss_before_step_mb": child["before_mb"],
                      "step_mb": round(peak - child["before_mb"], 1),
                      "estimated_step_mb": round(step_estimate / 2 ** 20, 1), "s_per_step": child["s_per_step"]})
        print(f"{space.name} batch {batch:3}: peak RSS {peak:7.0f} MB (step +{steps[-1]['step_mb']:.0f} MB, "
              f"estimate +{steps[-1]['estimated_step_mb']:.0f} MB), {child['s_per_step']:.1f} s/step")
    nas_search = str(Path(sys.executable).with_name("nas-search"))
    with tempfile.TemporaryDirectory() as out:
        argv = [nas_search, "train", "--task", "depth", "--space", space.name, "--data", "builtin-depth",
                "--epochs", "1", "--steps-per-epoch", str(args.memory_steps), "--out", out, "--no-progress"]
        result, wall, peak = _run_child(argv)
        if result.returncode:
            raise SystemExit(f"nas-search train failed: {result.stdout.strip()[-500:]}")
        log = json.loads((Path(out) / "train_log.jsonl").read_text().splitlines()[-1])
    est = estimate_training_memory(space, default_batch, "builtin-depth")
    train = {"argv": argv[1:], "batch": default_batch, "steps": args.memory_steps, "wall_s": round(wall, 1),
             "peak_rss_mb": peak, "train_seconds": round(log["seconds"], 1),
             "estimated_peak_mb_above_start": round(est.needed_bytes / 2 ** 20, 1)}
    print(f"nas-search train {space.name}, batch {default_batch}, {args.memory_steps} steps: peak RSS {peak:.0f} MB, "
          f"wall {wall:.0f} s (of which training steps {log['seconds']:.0f} s; the rest renders the data and "
          f"validates); estimate {train['estimated_peak_mb_above_start']:.0f} MB above the process at start")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "bench_depth_memory.json"
    path.write_text(json.dumps({"host": platform.node(), "cpus": os.cpu_count(), "threads": args.threads,
                                "space": space.name, "image_hw": list(space.spec.input_hw), "steps": steps,
                                "nas_search_train": train,
                                "note": "2-core host shared with other jobs: times are under load"}, indent=2))
    print(f"-> {path}")


if __name__ == "__main__":
    main()
