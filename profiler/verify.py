"""Does the LUT predict whole networks? Measure sampled sub-networks and compare.

`verify_lut` draws `samples` sub-networks of a space (seeded; the largest and the smallest
network always included), exports each *whole* network with the same exporter and I/O
convention as the layers, times them on the device, and compares the measured medians with
(a) the LUT prediction (sum of layer latencies + the slice's per-invoke overhead) and (b) a
MAC proxy `ms = a * MACs + b` fitted by least squares on the same networks (in-sample, so
it is the best any MAC-linear model can do on them).

Measurement protocol: `rounds` benchmark processes, each timing every network with
`repeats` interleaved passes; a network's figure is the median of its per-round medians.
Each round also times the slice's reference layer, so the report says how far the machine
drifted since the LUT was built. Noise is reported as the coefficient of variation (CoV)
of the per-round medians (between processes) and of the runs (within a process).
"""
from __future__ import annotations

import dataclasses
import platform
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from lut_db.reader import LatencyTable
from lut_db.schema import open_lut

from . import calibrate
from .build import DEFAULT_CACHE_DIR, benchmark_settings, slice_runtime
from .errors import ProfilerError
from .export import ModelCache
from .plan import batches
from .predictor import LatencyPredictor
from .spaces import resolve_space


@dataclass(frozen=True)
class VerifyOptions:
    samples: int = 50  # sub-networks measured (including the largest and the smallest)
    seed: int = 0  # sampling seed (the networks' weights use seed 0)
    threads: int = 1
    delegate: str = "xnnpack"  # TFLite only: the slice's delegate (see build.slice_runtime)
    rounds: int = 3  # benchmark processes per network (median of their medians)
    repeats: int = 3  # interleaved passes per round
    batch_size: int = 25  # networks per benchmark process
    jobs: int = 2  # export workers
    cache_dir: Path = DEFAULT_CACHE_DIR
    interpolate: bool = False  # estimate keys missing from the LUT (and say how many)
    settings: dict = field(default_factory=dict)  # BenchmarkSettings overrides


def draw_subnets(space, samples: int, seed: int = 0) -> list:
    """`samples` distinct sub-networks: the largest, the smallest, then random ones (seeded)."""
    rng = random.Random(seed)
    configs = [space.canonical(space.max_config()), space.canonical(space.min_config())][:max(0, samples)]
    seen = set(configs)
    tries = 0
    while len(configs) < samples and tries < 100 * samples:
        cfg = space.random_config(rng)
        tries += 1
        if cfg not in seen:
            seen.add(cfg)
            configs.append(cfg)
    return configs


def error_stats(predicted, measured) -> dict:
    """MAPE %, share within ±5% / ±10%, mean signed error % and Spearman rank correlation."""
    from scipy.stats import spearmanr

    p, m = np.asarray(predicted, float), np.asarray(measured, float)
    err = (p - m) / m
    rho = float(spearmanr(p, m).statistic) if len(p) > 2 and np.ptp(p) > 0 and np.ptp(m) > 0 else float("nan")
    return {"n": int(len(p)), "mape_pct": float(100 * np.mean(np.abs(err))),
            "within_5pct": float(np.mean(np.abs(err) <= 0.05)), "within_10pct": float(np.mean(np.abs(err) <= 0.10)),
            "spearman": rho, "bias_pct": float(100 * np.mean(err)), "max_abs_err_pct": float(100 * np.max(np.abs(err)))}


def mac_proxy(macs, measured) -> tuple[np.ndarray, dict]:
    """Least-squares `ms = a * MACs + b` on the same networks: (predictions, fit)."""
    x, y = np.asarray(macs, float), np.asarray(measured, float)
    if len(x) >= 2 and np.ptp(x) > 0:
        a, b = np.polyfit(x, y, 1)
    else:
        a, b = 0.0, float(np.mean(y))
    return a * x + b, {"ms_per_mmac": float(a * 1e6), "intercept_ms": float(b)}


def plan_summary(db_path, space, device_id: str, runtime: str, options: str) -> dict:
    """How the slice covers `space`: measured / interpolated keys and the plans behind them."""
    db = open_lut(db_path, create=False)
    try:
        keys = [c.key for c in space.all_layer_configs()]
        counts = {"measured": 0, "interpolated": 0}
        plans: set[str] = set()
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            sql = (f"SELECT source, plan, COUNT(*) FROM measurements WHERE device_id = ? AND runtime = ? "
                   f"AND runtime_options = ? AND layer_key IN ({', '.join('?' * len(chunk))}) GROUP BY source, plan")
            for source, plan, n in db.execute(sql, [device_id, runtime, options, *chunk]).fetchall():
                counts[source] = counts.get(source, 0) + n
                plans.add(plan)
        reference = calibrate.calibration(db, device_id, runtime, options, calibrate.REFERENCE)
    finally:
        db.close()
    return {"plans": sorted(plans), "keys": len(keys), **counts,
            "missing": len(keys) - counts["measured"] - counts["interpolated"],
            "reference": None if reference is None else {"key": reference[1].get("key"), "ms": reference[0]}}


def verify_lut(space, agent, db_path: str | Path, runtime: str, options: VerifyOptions = VerifyOptions(),
               progress: bool = True) -> dict:
    """Measure sampled whole networks and compare with the LUT (see module docstring).

    Returns the report dict that `--json` writes (keys: n, mape_pct, within_5pct,
    within_10pct, spearman, mac_proxy{...}, samples[...], plan, device, runtime, noise, ...).
    """
    from tqdm import tqdm

    start = time.monotonic()
    space = resolve_space(space)
    slice_runtime(runtime, options.threads, delegate=options.delegate)  # option errors first
    if options.samples < 2:
        raise ProfilerError(f"--samples: expected at least 2 networks, got {options.samples}")
    info = agent.info()
    version = agent.runtime_version(runtime)
    rt = slice_runtime(runtime, options.threads, version, options.delegate)
    table = LatencyTable.load(db_path, info.device_id, runtime, rt.options, interpolate=options.interpolate)
    predictor = LatencyPredictor(space, table)  # raises naming a missing key before any export
    configs = draw_subnets(space, options.samples, options.seed)
    subnets = [c.to_dict() for c in configs]
    predicted = [predictor.predict(c) for c in configs]
    macs = [space.macs(c) for c in configs]
    plan = plan_summary(db_path, space, info.device_id, runtime, rt.options)
    ref = plan["reference"]
    settings = benchmark_settings(runtime, options.threads, options.repeats, options.delegate, **options.settings)

    per_round: list[list[float]] = [[] for _ in configs]
    run_cov: list[list[float]] = [[] for _ in configs]
    ref_ms: list[float] = []
    overhead_ms: list[float] = []
    chunks = list(batches(list(range(len(configs))), options.batch_size))
    bar = tqdm(total=len(chunks) * options.rounds + 1, desc=f"verify {space.name} {runtime}", unit="batch",
               file=sys.stderr, disable=not progress, dynamic_ncols=True)
    try:
        with ModelCache(options.cache_dir, runtime, options.jobs) as cache:
            bar.set_postfix_str("exporting networks")
            paths = cache.networks(space.spec, subnets)
            extra = [cache.overhead()]
            if ref and ref["key"]:
                from lut_db.layer_key import LayerConfig

                extra += cache.layers([LayerConfig.from_key(ref["key"])])
            bar.update(1)
            bar.set_postfix_str("benchmarking")
            for _ in range(options.rounds):
                for chunk in chunks:
                    if hasattr(agent, "settle"):
                        agent.settle(60.0)
                    result = agent.benchmark([*extra, *(paths[i] for i in chunk)], settings)
                    overhead_ms.append(result.timings[0].median_ms)
                    if len(extra) > 1:
                        ref_ms.append(result.timings[1].median_ms)
                    for i, timing in zip(chunk, result.timings[len(extra):]):
                        per_round[i].append(timing.median_ms)
                        run_cov[i].append(timing.cov)
                    bar.update(1)
    finally:
        bar.close()

    measured = [statistics.median(v) for v in per_round]
    proxy, fit = mac_proxy(macs, measured)
    lut = error_stats(predicted, measured)
    between = [statistics.pstdev(v) / statistics.mean(v) if len(v) > 1 else 0.0 for v in per_round]
    samples = []
    for i, cfg in enumerate(subnets):
        samples.append({
            "index": i, "kind": "max" if i == 0 else "min" if i == 1 else "random", "subnet": cfg,
            "macs": int(macs[i]), "layers": len(space.layer_configs(configs[i])),
            "measured_ms": measured[i], "round_medians_ms": per_round[i],
            "predicted_ms": predicted[i], "error_pct": 100 * (predicted[i] / measured[i] - 1),
            "mac_proxy_ms": float(proxy[i]), "mac_proxy_error_pct": float(100 * (proxy[i] / measured[i] - 1)),
            "cov_between_rounds_pct": 100 * between[i], "cov_runs_pct": 100 * statistics.median(run_cov[i]),
        })
    first_ref = ref["ms"] if ref else None
    report = {
        "space": space.name, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": dataclasses.asdict(info), "runtime": runtime, "runtime_version": version,
        "runtime_options": rt.options, "lut": str(db_path), "seed": options.seed,
        **lut,
        "mac_proxy": {**error_stats(proxy, measured), "fit": fit},
        "plan": plan,
        "overhead_ms": {"lut": table.overhead_ms, "now": statistics.median(overhead_ms) if overhead_ms else None},
        "noise": {
            "cov_between_rounds_pct_median": 100 * statistics.median(between),
            "cov_between_rounds_pct_max": 100 * max(between),
            "cov_runs_pct_median": statistics.median(s["cov_runs_pct"] for s in samples),
            "reference_drift_pct": (calibrate.drift_pct(statistics.median(ref_ms), first_ref)
                                    if ref_ms and first_ref else None),
        },
        "protocol": {"rounds": options.rounds, "repeats": options.repeats, "warmup_runs": settings.warmup_runs,
                     "min_runs": settings.min_runs, "min_seconds": settings.min_seconds,
                     "interpolate_missing": options.interpolate},
        "host": {"python": platform.python_version(), "machine": platform.machine()},
        "wall_s": time.monotonic() - start,
        "samples": samples,
    }
    return report


def format_error_stats(stats: dict) -> str:
    """MAPE, share within ±5 / ±10 %, Spearman and bias of `error_stats`, as table cells."""
    return (f"{stats['mape_pct']:7.2f} {100 * stats['within_5pct']:5.1f}% {100 * stats['within_10pct']:5.1f}% "
            f"{stats['spearman']:8.4f} {stats['bias_pct']:+7.2f}")


def format_report(report: dict) -> str:
    """The table `lutbuild verify` prints: LUT vs MAC proxy, then noise and drift."""
    rows = [("LUT (sum of layers)", report), ("MAC proxy (a*MACs+b)", report["mac_proxy"])]
    lines = [f"verify {report['space']} on {report['device']['device_id']} "
             f"({report['runtime']} {report['runtime_version']}, {report['runtime_options']}), "
             f"{report['n']} networks; LUT plan {'+'.join(report['plan']['plans']) or '?'}: "
             f"{report['plan']['measured']} measured, {report['plan']['interpolated']} interpolated keys",
             f"{'predictor':<22} {'MAPE %':>7} {'±5 %':>6} {'±10 %':>6} {'Spearman':>8} {'bias %':>7} {'max %':>7}"]
    for name, r in rows:
        lines.append(f"{name:<22} {format_error_stats(r)} {r['max_abs_err_pct']:7.2f}")
    noise = report["noise"]
    drift = noise["reference_drift_pct"]
    lines.append(f"noise: CoV between rounds median {noise['cov_between_rounds_pct_median']:.2f}% "
                 f"(max {noise['cov_between_rounds_pct_max']:.2f}%), within a round {noise['cov_runs_pct_median']:.1f}%; "
                 f"reference drift since build {'n/a' if drift is None else f'{drift:+.1f}%'}; "
                 f"overhead {report['overhead_ms']['lut']:.4f} ms in LUT")
    return "\n".join(lines)
