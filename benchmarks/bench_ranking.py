"""Does a super-network score rank sub-networks like fine-tuning them does? (issue 16)

    python -m benchmarks.bench_ranking [--quick] [--supernet run/supernet.pt] [--train-epochs 12]
        [--od-groups G] [--od-warmup-epochs E] [--distill] [--n 24] [--finetune-epochs 2] [--tag NAME]

NetAdaptV2's saving rests on one assumption: a candidate scored with super-network weights
(sliced, BN recalibrated, held-out split) ranks where it would rank after training. This
measures it on `mbv3-tiny` and the built-in data set:

1. Super-network: `--supernet`, or trained here with `search.train.train` (`--train-epochs`,
   `--od-groups`, `--od-warmup-epochs`, `--distill`; None = the task's defaults). The recipe is
   recorded in the JSON.
2. Sample: `--n` sub-networks stratified over MACs (2,000 `random_config` draws cut into
   `n - 2` equal-count strata, one seeded pick per stratum) plus the max and min networks.
3. (a) each scored exactly as MCD scores a candidate (`SupernetScorer`: sliced, BN
   recalibrated on `--calib-batches` training batches, top-1 on the super-network's holdout
   split), with its binomial standard error; (b) the same network fine-tuned stand-alone from
   its super-network weights with one fixed recipe (what `nas-search finetune` does: SGD
   Nesterov, cosine from lr 0.02, label smoothing 0.1, `--finetune-epochs`), top-1 on val.
4. Kendall tau and Spearman between (a) and (b), the max / median / min rows, the gap between
   (a) and (b) of the networks near half the max network's MACs, wall and CPU time, peak RSS;
   JSON + scatter PNG under benchmarks/results/ (`bench_ranking_<tag>.*`), a table on stdout.

`--quick`: 6 networks, 1 epoch of 20 steps, 20 fine-tune steps: a smoke run of the pipeline
(its tau means nothing).
"""
from __future__ import annotations

import argparse
import json
import math
import random
import resource
import time
from pathlib import Path

import matplotlib
import torch
from scipy.stats import kendalltau, spearmanr

from benchmarks.bench_lut import machine, versions
from search.checkpoint import load_supernet
from search.classification.train import train_steps
from search.data import get_dataset, make_loader
from search.evaluate import evaluate, recalibrate_bn
from search.mcd.scoring import SupernetScorer
from search.train import TrainConfig, train

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)

RESULTS = Path(__file__).resolve().parent / "results"
FINETUNE_LR = 0.02  # FinetuneConfig's classification default: the weights are trained already


def stratified_sample(space, n: int, seed: int = 0, pool: int = 2000) -> list:
    """The max network, `n - 2` random networks (one per equal-count MAC stratum), the min network."""
    rng = random.Random(seed)
    draws = sorted(((space.macs(c), i, c) for i, c in enumerate(space.random_config(rng) for _ in range(pool))),
                   key=lambda t: t[:2])
    k = n - 2
    picks = [draws[rng.randrange(j * len(draws) // k, (j + 1) * len(draws) // k)][2] for j in range(k)]
    return [space.canonical(space.max_config())] + picks + [space.canonical(space.min_config())]


def binomial_se(p: float, n: int) -> float:
    """Standard error of an accuracy `p` measured on `n` images."""
    return math.sqrt(max(p * (1 - p), 1e-12) / max(n, 1))


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run (tau meaningless)")
    ap.add_argument("--space", default="mbv3-tiny")
    ap.add_argument("--supernet", default=None, help="checkpoint to rank (default: train one here)")
    ap.add_argument("--train-epochs", type=int, default=12)
    ap.add_argument("--od-groups", type=int, default=None, help="default: the task's (classification 4)")
    ap.add_argument("--od-warmup-epochs", type=int, default=None, help="default: the task's (classification 2)")
    ap.add_argument("--distill", action="store_true")
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--finetune-epochs", type=float, default=2.0)
    ap.add_argument("--calib-batches", type=int, default=10, help="BN recalibration batches, as MCD's default")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tag", default=None, help="names the output files (default: quick / cpu)")
    a = ap.parse_args(argv)
    if a.quick:
        a.n, a.train_epochs = 6, 1
    return a


def train_supernet(a: argparse.Namespace, out_dir: Path) -> str:
    cfg = TrainConfig(space=a.space, epochs=a.train_epochs, od_groups=a.od_groups,
                      od_warmup_epochs=0 if a.quick else a.od_warmup_epochs, distill=a.distill, seed=a.seed,
                      progress=False, steps_per_epoch=20 if a.quick else None)
    return str(train(cfg, out_dir / "supernet").checkpoint)


def training_splits(space, meta: dict) -> tuple:
    """(train, holdout) of the built-in set exactly as the super-network in `meta` was trained
    and MCD scores it: the holdout images were never trained on."""
    side = space.spec.input_hw[0]
    holdout_size = (meta.get("train_config") or {}).get("holdout")
    return (get_dataset("builtin", "train", side, holdout=holdout_size),
            get_dataset("builtin", "holdout", side, holdout=holdout_size))


def rank(a: argparse.Namespace, supernet_path: str) -> tuple[list[dict], dict]:
    """Score and fine-tune every sampled network; one row each."""
    space, supernet, meta = load_supernet(supernet_path)
    supernet.eval()
    train_set, holdout = training_splits(space, meta)
    val = get_dataset("builtin", "val", space.spec.input_hw[0])
    calib = make_loader(train_set, 128, shuffle=True, seed=12_345)
    scorer = SupernetScorer(supernet, make_loader(holdout, 500), calib, a.calib_batches)
    train_loader = make_loader(train_set, 128, shuffle=True, seed=a.seed, drop_last=True)
    val_loader = make_loader(val, 500)
    steps = 20 if a.quick else round(a.finetune_epochs * len(train_loader))
    rows = []
    for i, config in enumerate(stratified_sample(space, a.n, a.seed)):
        t0 = time.perf_counter()
        score = scorer(config)
        model = supernet.subnet(config).to(memory_format=torch.channels_last)
        train_steps(model, train_loader, steps, FINETUNE_LR, seed=a.seed)
        recalibrate_bn(model, calib, 20)
        acc = evaluate(model, val_loader)
        rows.append({"index": i, "macs": space.macs(config), "depth": space.depth(config),
                     "score": score, "score_se": binomial_se(score, len(holdout)),
                     "finetuned": acc, "finetuned_se": binomial_se(acc, len(val)),
                     "seconds": time.perf_counter() - t0, "config": config.to_dict()})
        print(f"{i:3d} MMACs {rows[-1]['macs'] / 1e6:6.2f} score {score:.3f} fine-tuned {acc:.3f}", flush=True)
    return rows, {"holdout_images": len(holdout), "val_images": len(val), "finetune_steps": steps,
                  "supernet_train_config": meta.get("train_config")}


def summarize(rows: list[dict]) -> dict:
    scores, tuned = [r["score"] for r in rows], [r["finetuned"] for r in rows]
    by_macs = sorted(rows, key=lambda r: r["macs"])
    half = rows[0]["macs"] / 2
    near_half = sorted(rows, key=lambda r: abs(r["macs"] - half))[:4]
    return {
        "kendall_tau": float(kendalltau(scores, tuned)[0]),
        "spearman": float(spearmanr(scores, tuned)[0]),
        "median_score_se": sorted(r["score_se"] for r in rows)[len(rows) // 2],
        "score_range": max(scores) - min(scores),
        "gap_near_half_macs": sum(r["finetuned"] - r["score"] for r in near_half) / len(near_half),
        "max": rows[0], "median": by_macs[len(by_macs) // 2], "min": rows[-1],
    }


def table(result: dict) -> str:
    lines = ["| network | MMACs | super-network score (± se) | fine-tuned val top-1 (± se) |",
             "| --- | --- | --- | --- |"]
    for name in ("max", "median", "min"):
        r = result[name]
        lines.append(f"| {name} | {r['macs'] / 1e6:.2f} | {r['score']:.3f} ± {r['score_se']:.3f} | "
                     f"{r['finetuned']:.3f} ± {r['finetuned_se']:.3f} |")
    lines.append(f"\nKendall tau {result['kendall_tau']:.3f}, Spearman {result['spearman']:.3f} over "
                 f"{len(result['rows'])} networks; median score se {result['median_score_se']:.3f}; "
                 f"fine-tuned minus score near half the max MACs {result['gap_near_half_macs']:+.3f}")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    rows = result["rows"]
    fig, ax = plt.subplots(figsize=(5.2, 4.2))
    ax.errorbar([r["finetuned"] for r in rows], [r["score"] for r in rows],
                xerr=[r["finetuned_se"] for r in rows], yerr=[r["score_se"] for r in rows], fmt="o", ms=3)
    ax.set_xlabel("fine-tuned val top-1")
    ax.set_ylabel("super-network score (holdout top-1)")
    ax.set_title(f"{result['settings']['tag']}: tau {result['kendall_tau']:.2f}, rho {result['spearman']:.2f}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    a = parse_args(argv)
    a.tag = a.tag or ("quick" if a.quick else "cpu")
    torch.set_num_threads(a.threads)
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    supernet_path = a.supernet or train_supernet(a, RESULTS / "bench_ranking_runs" / a.tag)
    train_s = time.perf_counter() - t_wall
    rows, data = rank(a, supernet_path)
    result = {**summarize(rows), "rows": rows, "settings": {**vars(a), "supernet": supernet_path, **data},
              "train_s": train_s, "wall_s": time.perf_counter() - t_wall, "cpu_s": time.process_time() - t_cpu,
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "machine": machine(), "versions": versions(), "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    print(table(result))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"bench_ranking_{a.tag}.json").write_text(json.dumps(result, indent=1))
    plot(result, RESULTS / f"bench_ranking_{a.tag}.png")
    return result


if __name__ == "__main__":
    main()
