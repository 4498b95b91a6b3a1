"""Does the LUT predict whole networks? Measure sampled sub-networks and compare.

`verify_lut` draws `samples` sub-networks of a space (seeded; the largest and the smallest
network always included), exports each *whole* network with the same exporter and I/O
convention as the layers, times them on the device, and compares the measured medians with
(a) the LUT prediction (sum of layer latencies + the slice's per-invoke overhead) and (b) a
MAC proxy `ms = a * MACs + b` fitted by least squares on the same networks (in-sample, so
it is the best any MAC-linear model can do on them). The result is a `VerifyReport`
(`verify_report.py`).

Measurement protocol: `rounds` benchmark processes, each timing every network with
`repeats` interleaved passes; a network's figure is the median of its per-round medians.
Each round also times the slice's reference layer, so the report says how far the machine
drifted since the LUT was built. Noise is reported as the coefficient of variation (CoV)
of the per-round medians (between processes) and of the runs (within a process).

With `same_batch`, each round's batch also times every network's own LUT layer files right
after the network (`same_batch.py`), and the report adds the error against that sum ("layers
now"): the LUT's additivity with the host's drift since the build taken out (this host's core
has a ~1.4x slow state that lasts seconds to minutes, docs/predict.md). Every run also scores the
fast state: each network's p10 (median over rounds) against the LUT's p10 rows summed
(`FastState`), which that slow state moves far less than the medians.

With `op_profile`, one more pass after the rounds profiles every network per operator and
joins each layer's in-network time to its LUT row (`verify_ops.py`, `op_join.py`); the
rounds, and so every figure above, stay unprofiled.
"""
from __future__ import annotations

import platform
import random
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from tqdm import tqdm

from device_agents.contract import BenchmarkSettings, DeviceInfo
from lut_db.layer_key import LayerConfig, RuntimeSpec, parse_key
from lut_db.reader import LatencyTable
from lut_db.connect import lut_errors
from lut_db.schema import open_lut

from . import calibrate
from .agents import device_label
from .errors import ProfilerError
from .export import ModelCache
from .op_join import op_profile_refusal
from .plan import batches
from .predictor import LatencyPredictor
from .runtimes import ALONE, DEFAULT_CACHE_DIR, benchmark_settings, check_agent_delegate, slice_runtime
from .same_batch import Group, RoundTimings, time_rounds
from .spaces import resolve_space
from .verify_ops import profile_networks
from .verify_report import (FastState, HostInfo, MacProxyResult, MeasureProtocol, NetworkSample, Noise, Overheads,
                            ReferenceCalibration, SameBatchSample, SliceCoverage, VerifyReport, error_stats,
                            mac_proxy, same_batch_stats)


@dataclass(frozen=True)
class VerifyOptions:
    samples: int = 50  # sub-networks measured (including the largest and the smallest)
    seed: int = 0  # sampling seed (the networks' weights use seed 0)
    threads: int = 1
    delegate: str = "xnnpack"  # TFLite only: the slice's delegate (see runtimes.slice_runtime)
    dtype: str = "float32"  # "int8": whole networks exported full-integer, compared with the int8 slice
    gpu_precision_loss: bool = False  # delegate "gpu" (phones): fp16 arithmetic allowed, part of the slice
    ort_opt: str = "all"  # ONNX Runtime graph optimization level ("extended", "basic": `;ort_opt=...` slice)
    rounds: int = 3  # benchmark processes per network (median of their medians)
    repeats: int = 3  # interleaved passes per round
    batch_size: int = 25  # networks per benchmark process
    jobs: int = 2  # export workers
    cache_dir: Path = DEFAULT_CACHE_DIR
    interpolate: bool = False  # estimate keys missing from the LUT (and say how many)
    op_profile: bool = False  # one more, profiled pass: each layer's time inside the network next to its row
    same_batch: bool = False  # also time each network's own layer files in its batches (`same_batch.py`)
    context: str = ALONE  # ONNX: "nchwc" compares with the in-context slice (`;context=nchwc`, context_models.py)
    settings: dict = field(default_factory=dict)  # BenchmarkSettings overrides
    # a benchmark process whose reference layer runs more than the build's drift_pct slower than the
    # LUT's fast state is run again, at most this many times, the fastest attempt kept: the build's
    # own gate (measure.measure_batch), so that networks are measured in the state the LUT describes
    remeasure: int = 1


@dataclass(frozen=True)
class _Target:
    """The space, device and LUT slice a verification compares."""

    space: object  # a `SearchSpace`
    info: DeviceInfo
    rt: RuntimeSpec  # with the device's runtime version
    table: LatencyTable
    predictor: LatencyPredictor


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


def plan_summary(db_path, space, device_id: str, runtime: str, options: str) -> SliceCoverage:
    """How the slice covers `space`: measured / interpolated keys and the plans behind them."""
    db = open_lut(db_path, create=False)
    with lut_errors(db_path):  # damage past the opening check is one line too
        return _count_slice(db, space, device_id, runtime, options)


def _count_slice(db, space, device_id: str, runtime: str, options: str) -> SliceCoverage:
    """`plan_summary`'s counts, read from the open `db` (closed on return)."""
    try:
        keys = [c.key for c in space.all_layer_configs()]
        counts = {"measured": 0, "interpolated": 0}
        plans: set[str] = set()
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            sql = (f"SELECT source, plan, COUNT(*) FROM measurements WHERE device_id = ? AND runtime = ? "
                   f"AND runtime_options = ? AND layer_key IN ({', '.join('?' * len(chunk))}) GROUP BY source, plan")
            for source, plan, n in db.execute(sql, [device_id, runtime, options, *chunk]).fetchall():
                counts[source] += n
                plans.add(plan)
        reference = calibrate.calibration(db, device_id, runtime, options, calibrate.REFERENCE)
    finally:
        db.close()
    return SliceCoverage(plans=sorted(plans), keys=len(keys), measured=counts["measured"],
                         interpolated=counts["interpolated"],
                         missing=len(keys) - counts["measured"] - counts["interpolated"],
                         reference=None if reference is None else ReferenceCalibration(reference[1].get("key"),
                                                                                        reference[0]))


def _fast_state(db_path, target: _Target, configs: list, p10_per_round: list[list[float]]) -> FastState | None:
    """The networks' 10th percentiles against the LUT's p10 rows summed (+ the slice's overhead,
    `LatencyTable.load(statistic="p10")`): both sides in the core's fast state (docs/lut.md,
    "INT8 slices"). None when a row has no p10 (an interpolated key of an older build, or a
    merged row without one) or a key has no row."""
    layers = [target.space.layer_configs(c) for c in configs]
    table = LatencyTable.load(db_path, target.info.device_id, target.rt.name, target.rt.options, statistic="p10")
    if table.missing(cfg for net in layers for cfg in net):
        return None
    predicted = [table.predict(net) for net in layers]
    measured = [statistics.median(v) for v in p10_per_round]
    between = [statistics.pstdev(v) / statistics.mean(v) if len(v) > 1 else 0.0 for v in p10_per_round]
    return FastState(error_stats(predicted, measured), measured, predicted, 100 * statistics.median(between))


def slice_p10_rows(db_path, device_id: str, runtime: str, options: str, keys: list[str]) -> dict[str, float]:
    """The slice's p10 (ms, overhead subtracted as stored) of each of `keys` that has one
    (`LatencyTable.load(statistic="p10")`; a key without a p10 row is absent)."""
    table = LatencyTable.load(db_path, device_id, runtime, options, statistic="p10")
    return {key: table.latency(cfg) for key in keys if table.has(cfg := parse_key(key))}


def verify_lut(space, agent, db_path: str | Path, runtime: str, options: VerifyOptions = VerifyOptions(),
               progress: bool = True) -> VerifyReport:
    """Measure sampled whole networks and compare with the LUT (see module docstring)."""
    start = time.monotonic()
    target = _open_target(space, agent, db_path, runtime, options)
    configs = draw_subnets(target.space, options.samples, options.seed)
    predicted = [target.predictor.predict(c) for c in configs]
    coverage = plan_summary(db_path, target.space, target.info.device_id, runtime, target.rt.options)
    coverage = replace(coverage, cpu_fallback=len({c.key for c in target.space.all_layer_configs()}
                                                  & target.table.cpu_fallback.keys()))
    settings = benchmark_settings(runtime, options.threads, options.repeats, options.delegate,
                                  **{"gpu_precision_loss": options.gpu_precision_loss, "ort_opt": options.ort_opt,
                                     **options.settings})
    timings = _measure_networks(agent, target.space, configs, coverage.reference, settings, options, progress)
    report = _report(target, db_path, options, settings, configs, predicted, coverage, timings, start)
    report = replace(report, fast_state=_fast_state(db_path, target, configs, timings.p10_per_round))
    if options.op_profile:  # after the timed rounds, which stay unprofiled (verify_ops.py)
        overhead = report.overhead_ms.now if report.overhead_ms.now is not None else report.overhead_ms.lut
        ops = profile_networks(agent, target.space, target.table, configs,
                               [s.measured_ms - overhead for s in report.samples], settings, options, progress)
        report = replace(report, op_profile=ops, wall_s=time.monotonic() - start)
    return report


def _open_target(space, agent, db_path, runtime: str, options: VerifyOptions) -> _Target:
    """Check the request and load the slice (user errors before any export)."""
    space = resolve_space(space)
    slice_runtime(runtime, options.threads, delegate=options.delegate, dtype=options.dtype,  # option errors first
                  gpu_precision_loss=options.gpu_precision_loss, ort_opt=options.ort_opt, context=options.context)
    if options.same_batch and options.context != ALONE:
        # An in-context row is a difference of two timed models (context_models.py), not one file's time.
        raise ProfilerError(f"--same-batch: not with --context {options.context} (its rows are not one file each)")
    if options.op_profile and op_profile_refusal(runtime, agent):
        raise ProfilerError(op_profile_refusal(runtime, agent))
    if options.samples < 2:
        raise ProfilerError(f"--samples: expected at least 2 networks, got {options.samples}")
    info = agent.info()
    rt = slice_runtime(runtime, options.threads, agent.runtime_version(runtime), options.delegate, options.dtype,
                       options.gpu_precision_loss, options.ort_opt, options.context)
    check_agent_delegate(rt, agent, device_label(agent))
    table = LatencyTable.load(db_path, info.device_id, runtime, rt.options, interpolate=options.interpolate)
    predictor = LatencyPredictor(space, table)  # raises naming a missing key before any export
    return _Target(space, info, rt, table, predictor)


def _measure_networks(agent, space, configs: list, reference: ReferenceCalibration | None,
                      settings: BenchmarkSettings, options: VerifyOptions, progress: bool) -> RoundTimings:
    """Export the networks (and the overhead model, the reference layer), then time them in rounds."""
    chunks = list(batches(list(range(len(configs))), options.batch_size))
    bar = tqdm(total=len(chunks) * options.rounds + 1, desc=f"verify {space.name} {settings.runtime}", unit="batch",
               file=sys.stderr, disable=not progress, dynamic_ncols=True)
    try:
        with ModelCache(options.cache_dir, settings.runtime, options.jobs, dtype=options.dtype,
                        context=options.context) as cache:
            bar.set_postfix_str("exporting networks")
            paths = cache.networks(space.spec, [c.to_dict() for c in configs])
            groups = [Group(p, tuple(cache.layers(space.layer_configs(c))) if options.same_batch else ())
                      for p, c in zip(paths, configs)]
            extra = [cache.overhead()]
            if reference and reference.key:
                extra += cache.layers([LayerConfig.from_key(reference.key)])
            bar.update(1)
            bar.set_postfix_str("benchmarking")
            gate = None if len(extra) == 1 or not reference.ms else calibrate.Reference(
                LayerConfig.from_key(reference.key), reference.ms)
            return time_rounds(agent, groups, extra, chunks, settings, options.rounds, bar, gate,
                               options.same_batch, options.remeasure)
    finally:
        bar.close()


def _report(target: _Target, db_path, options: VerifyOptions, settings: BenchmarkSettings, configs: list,
            predicted: list[float], coverage: SliceCoverage, timings: RoundTimings, start: float) -> VerifyReport:
    """Score both predictors on the measured medians and assemble the report."""
    space = target.space
    measured = [statistics.median(v) for v in timings.per_round]
    macs = [space.macs(c) for c in configs]
    proxy, fit = mac_proxy(macs, measured)
    between = [statistics.pstdev(v) / statistics.mean(v) if len(v) > 1 else 0.0 for v in timings.per_round]
    layers = [space.layer_configs(c) for c in configs]
    fallback = [i for i, net in enumerate(layers) if any(cfg.key in target.table.cpu_fallback for cfg in net)]
    note = target.table.fallback_note((cfg for i in fallback for cfg in layers[i]),
                                      f"the LUT prediction of {len(fallback)} of the {len(configs)} networks")
    same = timings.same_batch()
    samples = [NetworkSample(
        index=i, kind="max" if i == 0 else "min" if i == 1 else "random", subnet=cfg.to_dict(),
        macs=int(macs[i]), layers=len(layers[i]), measured_ms=measured[i],
        round_medians_ms=timings.per_round[i], predicted_ms=predicted[i],
        error_pct=100 * (predicted[i] / measured[i] - 1), mac_proxy_ms=float(proxy[i]),
        mac_proxy_error_pct=float(100 * (proxy[i] / measured[i] - 1)), cov_between_rounds_pct=100 * between[i],
        cov_runs_pct=100 * statistics.median(timings.run_cov[i]),
        same_batch=None if same is None else SameBatchSample.of(same[i], predicted[i]))
        for i, cfg in enumerate(configs)]
    return VerifyReport(
        space=space.name, created=datetime.now(timezone.utc).isoformat(timespec="seconds"), device=target.info,
        runtime=target.rt.name, runtime_version=target.rt.version, runtime_options=target.rt.options,
        lut=str(db_path), seed=options.seed, stats=error_stats(predicted, measured),
        mac_proxy=MacProxyResult(error_stats(proxy, measured), fit), plan=coverage,
        overhead_ms=Overheads(target.table.overhead_ms,
                              statistics.median(timings.overhead_ms) if timings.overhead_ms else None),
        noise=_noise(between, samples, timings.reference_ms, coverage.reference, timings.others_busy,
                     timings.remeasured),
        protocol=MeasureProtocol(options.rounds, options.repeats, settings.warmup_runs, settings.min_runs,
                                 settings.min_seconds, options.interpolate, settings.fast_passes_pct),
        host=HostInfo(platform.python_version(), platform.machine()),
        wall_s=time.monotonic() - start, samples=samples, cpu_fallback_networks=len(fallback),
        cpu_fallback_note=note, same_batch=None if same is None else same_batch_stats(samples))


def _noise(between: list[float], samples: list[NetworkSample], reference_ms: list[float],
           reference: ReferenceCalibration | None, busy: list[float], remeasured: int = 0) -> Noise:
    """CoV between rounds and within a round (%), the reference's drift from the build's fast state (%)."""
    first = reference.ms if reference else None
    return Noise(
        cov_between_rounds_pct_median=100 * statistics.median(between),
        cov_between_rounds_pct_max=100 * max(between),
        cov_runs_pct_median=statistics.median(s.cov_runs_pct for s in samples),
        reference_drift_pct=calibrate.drift_pct(statistics.median(reference_ms), first)
        if reference_ms and first else None,
        others_busy_pct_median=100 * statistics.median(busy) if busy else None,
        others_busy_pct_max=100 * max(busy) if busy else None,
        remeasured_processes=remeasured)
