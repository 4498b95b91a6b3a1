"""How many BN recalibration batches does a ranking need, and how noisy is a score? (issue 16)

    python -m benchmarks.bench_recalibration [--ranking benchmarks/results/bench_ranking_cpu-grouped.json]
        [--calib-batches 0,1,2,5,10,20,40] [--seeds 3] [--supernet other/supernet.pt] [--tag NAME]

Re-uses a `bench_ranking` run: its super-network checkpoint and its 24 sub-networks with their
stand-alone fine-tuned accuracies (the reference ranking). Nothing is trained here.
`--supernet` scores the same networks with another super-network of the same space (e.g. another
training recipe) against that same reference ranking.

1. **Recalibration size.** Each sub-network is scored exactly as MCD scores a candidate
   (`SupernetScorer`: sliced, BN statistics re-estimated on the first B training batches of
   128 images, top-1 on the holdout split) for every B in `--calib-batches` (0 = the
   super-network's own running statistics) and `--seeds` orders of the calibration batches.
   Reported per B: Kendall tau / Spearman against the fine-tuned accuracies (mean and range
   over seeds), the spread of a score over calibration seeds (the noise recalibration itself
   adds), and the seconds per candidate.
2. **Scoring noise.** With the MCD default (B = 10), the per-image correctness of every
   sub-network on the holdout split gives, for each pair, the gap between their scores, the
   unpaired standard error of that gap (sqrt(se_a^2 + se_b^2), what two independent held-out
   samples would give) and the paired one (both networks scored on the same images, as MCD
   does: sqrt of the variance of the per-image difference / n). Reported: the median gap
   between candidates and the share of pairs whose gap exceeds 2 paired / 2 unpaired
   standard errors.

JSON + PNG under benchmarks/results/ (`bench_recalibration_<tag>.*`), a table on stdout.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import matplotlib
import torch
from scipy.stats import kendalltau, spearmanr

from benchmarks.bench_lut import machine, versions
from benchmarks.bench_ranking import training_splits
from search.checkpoint import load_supernet
from search.data import make_loader
from search.mcd.scoring import SupernetScorer
from search.spaces.config import SubnetConfig

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)

RESULTS = Path(__file__).resolve().parent / "results"
MCD_CALIB_BATCHES = 10  # `nas-search search --calib-batches` default
CALIB_BATCH_SIZE = 128  # as MCD's calibration loader


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranking", type=Path, default=RESULTS / "bench_ranking_cpu-grouped.json",
                    help="a bench_ranking JSON (its super-network and fine-tuned accuracies are reused)")
    ap.add_argument("--calib-batches", default="0,1,2,5,10,20,40")
    ap.add_argument("--seeds", type=int, default=3, help="orders of the calibration batches")
    ap.add_argument("--supernet", type=Path, default=None,
                    help="score with this super-network instead of the ranking run's (same space)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tag", default=None, help="names the output files (default: the ranking run's tag)")
    return ap.parse_args(argv)


@torch.no_grad()
def correct_per_image(model, loader) -> torch.Tensor:
    """Bool tensor: whether `model` (eval mode) gets each image of `loader` right, in order."""
    out = [model(x).argmax(1) == y for x, y in loader]
    return torch.cat(out)


def pair_noise(correct: list[torch.Tensor]) -> dict:
    """Gaps between every pair of networks scored on the same images, with unpaired and paired
    standard errors of each gap."""
    n = len(correct[0])
    rows = []
    for i in range(len(correct)):
        for j in range(i + 1, len(correct)):
            a, b = correct[i].float(), correct[j].float()
            gap = abs(float(a.mean() - b.mean()))
            unpaired = float((a.var(unbiased=False) + b.var(unbiased=False)) / n) ** 0.5
            paired = float((a - b).var(unbiased=False) / n) ** 0.5
            rows.append((gap, unpaired, paired))
    gaps = [r[0] for r in rows]
    return {
        "pairs": len(rows), "holdout_images": n,
        "median_gap": statistics.median(gaps),
        "median_unpaired_se": statistics.median(r[1] for r in rows),
        "median_paired_se": statistics.median(r[2] for r in rows),
        "share_resolved_unpaired": sum(r[0] > 2 * r[1] for r in rows) / len(rows),
        "share_resolved_paired": sum(r[0] > 2 * r[2] for r in rows) / len(rows),
        "small_gaps": _small_gaps(rows),
    }


def _small_gaps(rows: list[tuple[float, float, float]]) -> dict:
    """The pairs MCD finds hard: the closest quarter of gaps (near-ties among good candidates)."""
    closest = sorted(rows)[: max(1, len(rows) // 4)]
    return {"median_gap": statistics.median(r[0] for r in closest),
            "median_unpaired_se": statistics.median(r[1] for r in closest),
            "median_paired_se": statistics.median(r[2] for r in closest)}


def sweep(supernet, configs, tuned, train_set, holdout_loader, batches: list[int], seeds: int) -> list[dict]:
    """tau and score spread for every recalibration size."""
    rows = []
    for b in batches:
        per_seed, t0 = [], time.perf_counter()
        for seed in range(seeds if b > 0 else 1):
            calib = make_loader(train_set, CALIB_BATCH_SIZE, shuffle=True, seed=12_345 + seed)
            scorer = SupernetScorer(supernet, holdout_loader, calib, b)
            per_seed.append([scorer(c) for c in configs])
        seconds = (time.perf_counter() - t0) / (len(per_seed) * len(configs))
        taus = [float(kendalltau(s, tuned)[0]) for s in per_seed]
        spread = statistics.median(statistics.pstdev(v) for v in zip(*per_seed)) if len(per_seed) > 1 else 0.0
        rows.append({"calib_batches": b, "kendall_tau": statistics.mean(taus), "tau_min": min(taus),
                     "tau_max": max(taus),
                     "spearman": statistics.mean(float(spearmanr(s, tuned)[0]) for s in per_seed),
                     "score_spread_over_seeds": spread, "seconds_per_candidate": seconds,
                     "scores": per_seed})
        print(f"B={b:3d} tau {rows[-1]['kendall_tau']:.3f} [{min(taus):.3f}, {max(taus):.3f}] "
              f"spread {spread:.4f} {seconds:.2f} s/candidate", flush=True)
    return rows


def table(result: dict) -> str:
    lines = ["| BN recalibration batches | Kendall tau (mean [min, max] over seeds) | Spearman | "
             "score spread over calibration seeds | s / candidate |", "| --- | --- | --- | --- | --- |"]
    for r in result["sweep"]:
        name = f"{r['calib_batches']}" + (" (running stats)" if r["calib_batches"] == 0 else "")
        lines.append(f"| {name} | {r['kendall_tau']:.3f} [{r['tau_min']:.3f}, {r['tau_max']:.3f}] | "
                     f"{r['spearman']:.3f} | {r['score_spread_over_seeds']:.4f} | {r['seconds_per_candidate']:.2f} |")
    p = result["pair_noise"]
    s = p["small_gaps"]
    lines.append(
        f"\nScoring noise at B = {MCD_CALIB_BATCHES}, {p['holdout_images']} holdout images, {p['pairs']} pairs: "
        f"median gap {p['median_gap']:.4f}; se of a gap unpaired {p['median_unpaired_se']:.4f}, paired (same images, "
        f"as MCD scores) {p['median_paired_se']:.4f}; gaps > 2 se: {p['share_resolved_unpaired']:.0%} unpaired, "
        f"{p['share_resolved_paired']:.0%} paired. Closest quarter of pairs: gap {s['median_gap']:.4f}, "
        f"se unpaired {s['median_unpaired_se']:.4f}, paired {s['median_paired_se']:.4f}.")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    rows = [r for r in result["sweep"]]
    xs = [max(r["calib_batches"], 0.5) for r in rows]  # 0 (running statistics) drawn at 0.5 on the log axis
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    ax.errorbar(xs, [r["kendall_tau"] for r in rows],
                yerr=[[r["kendall_tau"] - r["tau_min"] for r in rows], [r["tau_max"] - r["kendall_tau"] for r in rows]],
                fmt="o-", ms=4, capsize=3)
    ax.set_xscale("log")
    ax.set_xticks(xs, [("0 (running)" if r["calib_batches"] == 0 else str(r["calib_batches"])) for r in rows],
                  fontsize=8)
    ax.set_xlabel(f"BN recalibration batches ({CALIB_BATCH_SIZE} images each)")
    ax.set_ylabel("Kendall tau vs fine-tuned top-1")
    ax.set_title(f"{result['settings']['tag']}: ranking vs recalibration size", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    a = parse_args(argv)
    ranking = json.loads(a.ranking.read_text())
    a.tag = a.tag or ranking["settings"]["tag"]
    torch.set_num_threads(a.threads)
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    supernet_path = str(a.supernet or ranking["settings"]["supernet"])
    space, supernet, meta = load_supernet(supernet_path)
    supernet.eval()
    train_set, holdout = training_splits(space, meta)
    holdout_loader = make_loader(holdout, 500)
    configs = [SubnetConfig.from_dict(r["config"]) for r in ranking["rows"]]
    tuned = [r["finetuned"] for r in ranking["rows"]]
    batches = [int(b) for b in a.calib_batches.split(",")]
    rows = sweep(supernet, configs, tuned, train_set, holdout_loader, batches, a.seeds)
    calib = make_loader(train_set, CALIB_BATCH_SIZE, shuffle=True, seed=12_345)
    scorer = SupernetScorer(supernet, holdout_loader, calib, MCD_CALIB_BATCHES)
    noise = pair_noise([correct_per_image(scorer.model(c), holdout_loader) for c in configs])
    result = {"sweep": rows, "pair_noise": noise,
              "settings": {**{k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()},
                           "supernet": supernet_path, "networks": len(configs),
                           "calib_batch_size": CALIB_BATCH_SIZE},
              "wall_s": time.perf_counter() - t_wall, "cpu_s": time.process_time() - t_cpu,
              "machine": machine(), "versions": versions(), "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    print(table(result))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"bench_recalibration_{a.tag}.json").write_text(json.dumps(result, indent=1))
    plot(result, RESULTS / f"bench_recalibration_{a.tag}.png")
    return result


if __name__ == "__main__":
    main()
