"""A build's rows: each measured batch committed in one transaction, then the interpolated rest.

Only the writer (main) thread calls these: one writer to SQLite however many devices measure.
A committed batch refreshes its slice's reference and overhead calibration (`calibrate.py`),
so a kill loses at most the batches in flight and never leaves a half batch. A batch of a
further `--passes` pass replaces, per key, the stored row by the new one only when its p10 is
lower, and records every pass's p10 either way, in the same one transaction (`passes.py`).
"""
from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass

from sqlite_utils import Database

from device_agents.contract import BenchmarkSettings, DeviceInfo, ModelTiming
from device_agents.device_state import others_busy
from device_agents.gpu_delegate import GpuDelegation
from lut_db.coverage import GPU_DELEGATION
from lut_db.interpolate import interpolate_layers
from lut_db.layer_key import LayerConfig, RuntimeSpec
from lut_db.writer import LutWriter, MeasurementRow

from . import calibrate
from .build_slices import DeviceSlice
from .build_types import BuildOptions
from .measure import BatchMeasurement
from .passes import first_pass_row, keep_lowest, stored_rows
from .plan import Plan


@dataclass(frozen=True)
class FinishedBatch:
    """A batch a worker measured and hands to the writer."""

    layers: list[LayerConfig]
    measurement: BatchMeasurement
    reference: calibrate.Reference  # the anchor the batch's drift was measured against
    pass_no: int = 1  # --passes: 1 = first measurement of its keys, k > 1 = the k-th pass (passes.py)


def commit_batch(db: Database, writer: LutWriter, s: DeviceSlice, batch: FinishedBatch, plan_name: str,
                 settings: BenchmarkSettings, options: BuildOptions) -> None:
    """Write one finished batch of slice `s` in one transaction; refresh the slice's calibration."""
    m = batch.measurement
    provenance = {"batch": uuid.uuid4().hex[:12], "overhead_ms": m.overhead_ms,
                  "reference_key": batch.reference.layer.key, "reference_ms": m.reference_ms,
                  "reference_drift_pct": round(m.drift_pct, 3), "repeats": settings.repeats, "attempts": m.attempts}
    # the device's core is the one a 1-thread batch is pinned to; several threads use more than it
    core = s.device.info.cpu_core if settings.threads == 1 else ""
    busy = others_busy(m.result.state_before, m.result.state_after, core)
    if busy is not None:  # the busiest other core's share of the batch (a busy neighbour slows the measured core)
        provenance["others_busy"] = round(busy, 3)
    # GPU slices: what the delegate took of each layer (after the overhead model and the reference)
    delegations = m.result.gpu_delegations[2:] or [None] * len(batch.layers)
    rows = [measured_row(cfg, timing, m, s.device.info, s.device.rt, plan_name, settings,
                         {**provenance, **m.context_detail(i)}, delegation)  # in-context: raw wrapped + pairs
            for i, (cfg, timing, delegation) in enumerate(zip(batch.layers, m.layer_timings, delegations))]
    if batch.pass_no > 1:  # a further pass: per key, the whole row of the lower p10 (+ every pass's p10)
        stored = stored_rows(db, s.device.rt, s.device.info.device_id, batch.layers)
        kept = [keep_lowest(stored.get(row.layer.key), row) for row in rows]
        rows = [row for row, _ in kept]
        s.report.remeasured[batch.pass_no] = s.report.remeasured.get(batch.pass_no, 0) + len(rows)
        s.report.lowered[batch.pass_no] = s.report.lowered.get(batch.pass_no, 0) + sum(low for _, low in kept)
    elif options.passes > 1:
        rows = [first_pass_row(row) for row in rows]
    writer.write(rows)  # one transaction: the whole batch or nothing
    s.reference = calibrate.update_reference(db, writer, *s.key, s.reference.layer)
    calibrate.update_overhead(db, writer, *s.key)
    s.report.measured += len(rows) if batch.pass_no == 1 else 0
    s.report.remeasured_batches += m.attempts > 1
    s.report.drifted_batches += m.drift_pct > options.drift_pct


def measured_row(cfg: LayerConfig, t: ModelTiming, m: BatchMeasurement, info: DeviceInfo, rt: RuntimeSpec,
                 plan: str, settings: BenchmarkSettings, provenance: dict,
                 delegation: GpuDelegation | None = None) -> MeasurementRow:
    """One measured row, its statistics minus the batch's overhead (ms, clamped at 0).

    `info` tags it: `device_id` selects the slice, and the identity it was measured with
    (model, SoC, ABI, OS version, core) goes into `state_after["profiler"]["device"]`, next to
    the governor and frequencies of the states, so a row stays self-describing after a
    phone's OS update changes its `devices` entry. A GPU-delegate row also records what the
    delegate took of the layer (`state_after["profiler"]["gpu_delegation"]`, `delegation_record`):
    `lutbuild show`/`verify` count the rows whose ops partly ran on the CPU."""
    def net(ms: float) -> float:
        return max(0.0, ms - m.row_overhead_ms)  # in-context rows: overhead already out (measure.py)

    identity = {k: getattr(info, k, "") for k in ("model", "soc", "abi", "os_version", "cpu_core")}
    profiler = {**provenance, "device": identity, "raw_median_ms": t.median_ms, "raw_mean_ms": t.mean_ms,
                "raw_p10_ms": t.p10_ms, "raw_p90_ms": t.p90_ms, "min_ms": t.min_ms, "max_ms": t.max_ms,
                "cov": round(t.cov, 5)}
    if t.pass_medians_ms:  # the runner's passes: a state switch within the batch shows here
        profiler["pass_medians_ms"] = list(t.pass_medians_ms)
    if t.passes_kept is not None:  # BenchmarkSettings.fast_passes_pct
        profiler["passes_kept"] = t.passes_kept
    if delegation is not None:
        profiler[GPU_DELEGATION] = delegation_record(delegation)
    state_before, state_after = m.result.state_before, m.result.state_after
    return MeasurementRow(
        layer=cfg, device_id=info.device_id, runtime=rt, n=t.n,
        median_ms=net(t.median_ms), mean_ms=net(t.mean_ms), p10_ms=net(t.p10_ms), p90_ms=net(t.p90_ms),
        std_ms=t.std_ms, source="measured", plan=plan, warmup_runs=settings.warmup_runs,
        state_before=dataclasses.asdict(state_before),
        state_after={**dataclasses.asdict(state_after), "profiler": profiler},
        throttled=bool(state_before.throttled or state_after.throttled),
    )


def delegation_record(d: GpuDelegation) -> dict:
    """The JSON a row stores of its GPU delegation (`lut_db.coverage.GPU_DELEGATION`): `complete`
    false = some ops ran on the CPU (`fallback`: their kinds), null = the tool's output did not say."""
    return {**dataclasses.asdict(d), "fallback": list(d.fallback), "summary": d.summary}


#: The row statistics `interpolate_slice` estimates, in its SELECT order.
_STATS = ("median_ms", "mean_ms", "p10_ms", "p90_ms", "std_ms")


def interpolate_slice(db: Database, writer: LutWriter, plan: Plan, device_id: str, rt: RuntimeSpec) -> tuple[int, int]:
    """Write interpolated rows for the plan's off-grid keys the slice has not measured.

    Returns (rows written, keys that could not be estimated).

    Each statistic (median, mean, p10, p90, std) is interpolated from the measured rows' same
    statistic, so a row's p10 is a p10 (what `verify`'s fast-state comparison sums; it used to be
    the median: +16% -> +9% bias on mbv3-large, docs/lut.md "Sparse plan on mbv3-large"), clamped
    to p10 <= median <= p90. A statistic some measured row lacks falls back to the median."""
    sql = ("SELECT layer_key, median_ms, mean_ms, p10_ms, p90_ms, std_ms FROM measurements WHERE device_id = ? "
           "AND runtime = ? AND runtime_options = ? AND source = 'measured'")
    measured: dict[LayerConfig, tuple] = {}
    for key, *stats in db.execute(sql, [device_id, rt.name, rt.options]).fetchall():
        try:
            measured[LayerConfig.from_key(key)] = tuple(stats)
        except ValueError:  # a key of an op this version does not know
            continue
    wanted = [c for c in plan.interpolate if c not in measured]
    estimates = [interpolate_layers({c: s[i] for c, s in measured.items()}, wanted)
                 if all(s[i] is not None for s in measured.values()) else None for i in range(len(_STATS))]
    rows = []
    for cfg, ms in sorted(estimates[0].items(), key=lambda item: item[0].key):
        mean, p10, p90 = (ms if est is None else est.get(cfg, ms) for est in estimates[1:4])
        std = 0.0 if estimates[4] is None else estimates[4].get(cfg, 0.0)
        rows.append(MeasurementRow(layer=cfg, device_id=device_id, runtime=rt, n=0, median_ms=ms, mean_ms=mean,
                                   p10_ms=min(p10, ms), p90_ms=max(p90, ms), std_ms=std,
                                   source="interpolated", plan=plan.name))
    write_interpolated(db, writer, rows, device_id, rt)
    return len(rows), len(wanted) - len(rows)


def write_interpolated(db: Database, writer: LutWriter, rows: list[MeasurementRow], device_id: str,
                       rt: RuntimeSpec) -> None:
    """Write the interpolated `rows` whose stored row differs: a build that measured nothing new
    leaves the slice as it was, `measured_at` included (it re-estimates every run)."""
    sql = ("SELECT layer_key, median_ms, mean_ms, p10_ms, p90_ms, std_ms, plan FROM measurements WHERE "
           "device_id = ? AND runtime = ? AND runtime_options = ? AND source = 'interpolated'")
    stored = {key: tuple(rest) for key, *rest in db.execute(sql, [device_id, rt.name, rt.options]).fetchall()}
    writer.write([row for row in rows if stored.get(row.layer.key) != (
        row.median_ms, row.mean_ms, row.p10_ms, row.p90_ms, row.std_ms, row.plan)])
