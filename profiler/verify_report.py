"""What `lutbuild verify` reports: typed parts, their `--json` form and the printed table.

`VerifyReport.to_json_dict()` is the file `--json` writes (key order and values as they
have always been); `format_report` the table the command prints. Times in ms, errors and
CoV in % (`*_pct`), shares within ±5 / ±10 % as fractions in [0, 1].
"""
from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.stats import spearmanr

from device_agents.contract import DeviceInfo

from .op_join import OpJoinReport, format_op_join
from .same_batch import SameBatch


@dataclass(frozen=True)
class ErrorStats:
    """How predictions match measurements over `n` networks."""

    n: int
    mape_pct: float  # mean absolute % error
    within_5pct: float  # share of networks within ±5 %
    within_10pct: float
    spearman: float  # rank correlation (nan for fewer than 3 networks or constant values)
    bias_pct: float  # mean signed % error (negative: under-predicts)
    max_abs_err_pct: float

    def to_json_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json_dict(cls, data: Mapping) -> ErrorStats:
        """The stats of a `to_json_dict()` (extra keys, such as a MAC proxy's `fit`, ignored)."""
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})


def error_stats(predicted: Sequence[float], measured: Sequence[float]) -> ErrorStats:
    """MAPE %, share within ±5% / ±10%, mean signed error % and Spearman rank correlation."""
    p, m = np.asarray(predicted, float), np.asarray(measured, float)
    err = (p - m) / m
    rho = float(spearmanr(p, m).statistic) if len(p) > 2 and np.ptp(p) > 0 and np.ptp(m) > 0 else float("nan")
    abs_err = np.abs(err)
    return ErrorStats(n=int(len(p)), mape_pct=float(100 * np.mean(abs_err)),
                      within_5pct=float(np.mean(abs_err <= 0.05)), within_10pct=float(np.mean(abs_err <= 0.10)),
                      spearman=rho, bias_pct=float(100 * np.mean(err)), max_abs_err_pct=float(100 * np.max(abs_err)))


def format_error_stats(stats: ErrorStats) -> str:
    """MAPE, share within ±5 / ±10 %, Spearman and bias of `error_stats`, as table cells."""
    return (f"{stats.mape_pct:7.2f} {100 * stats.within_5pct:5.1f}% {100 * stats.within_10pct:5.1f}% "
            f"{stats.spearman:8.4f} {stats.bias_pct:+7.2f}")


@dataclass(frozen=True)
class MacProxyFit:
    """`ms = ms_per_mmac * MMACs + intercept_ms`, least squares on the verified networks."""

    ms_per_mmac: float
    intercept_ms: float


def mac_proxy(macs: Sequence[int], measured: Sequence[float]) -> tuple[np.ndarray, MacProxyFit]:
    """Least-squares `ms = a * MACs + b` on the same networks: (predictions ms, fit)."""
    x, y = np.asarray(macs, float), np.asarray(measured, float)
    if len(x) >= 2 and np.ptp(x) > 0:
        a, b = np.polyfit(x, y, 1)
    else:
        a, b = 0.0, float(np.mean(y))
    return a * x + b, MacProxyFit(ms_per_mmac=float(a * 1e6), intercept_ms=float(b))


@dataclass(frozen=True)
class MacProxyResult:
    """The MAC proxy's errors on the verified networks and its (in-sample) fit."""

    stats: ErrorStats
    fit: MacProxyFit

    def to_json_dict(self) -> dict:
        return {**self.stats.to_json_dict(), "fit": dataclasses.asdict(self.fit)}


@dataclass(frozen=True)
class ReferenceCalibration:
    """The slice's drift reference as the build left it: its layer key and anchor median (ms)."""

    key: str | None
    ms: float


@dataclass(frozen=True)
class SliceCoverage:
    """How the LUT slice covers the space: keys measured / interpolated / missing, the plans behind them."""

    plans: list[str]
    keys: int
    measured: int
    interpolated: int
    missing: int
    reference: ReferenceCalibration | None
    cpu_fallback: int = 0  # GPU-delegate slices: keys of the space whose rows partly ran on the CPU


@dataclass(frozen=True)
class Overheads:
    """Per-invoke overhead (ms): the LUT's calibration, and the median measured now (None: no round ran)."""

    lut: float
    now: float | None


@dataclass(frozen=True)
class Noise:
    """Measurement noise of the verification (CoV in %) and the reference's drift from the build's
    fast state (%, `calibrate.py`), after re-measuring processes slower than it (`VerifyOptions.remeasure`)."""

    cov_between_rounds_pct_median: float
    cov_between_rounds_pct_max: float
    cov_runs_pct_median: float
    reference_drift_pct: float | None
    # the busiest other core's share of each benchmark process (%; `device_state.others_busy`): a busy
    # neighbour can slow the measured core (docs/predict.md, "Co-runners"); None: the device gave no ticks
    others_busy_pct_median: float | None = None
    others_busy_pct_max: float | None = None
    remeasured_processes: int = 0  # benchmark processes run again: reference slower than the LUT's fast state


@dataclass(frozen=True)
class MeasureProtocol:
    """How the networks were timed (see `VerifyOptions` and `BenchmarkSettings`)."""

    rounds: int
    repeats: int
    warmup_runs: int
    min_runs: int
    min_seconds: float
    interpolate_missing: bool
    fast_passes_pct: float | None = None  # a model's passes pooled: within this % of its fastest (None: all)


@dataclass(frozen=True)
class HostInfo:
    python: str
    machine: str


@dataclass(frozen=True)
class SameBatchSample:
    """`verify --same-batch`: one network's own layer files timed in its runner batches (ms, %).

    The LUT's error splits into `lut_vs_layers_now_pct` (the rows against the same layers
    now: the host's drift since the build) and `error_pct` (the layers now against the
    network, paired per round: the LUT's additivity)."""

    layers_now_ms: float  # median over rounds of the layers' sum (+ one overhead), as a LUT prediction
    round_layers_now_ms: list[float]
    error_pct: float  # median over rounds of layers-now / network, minus 1 (negative: under-predicts)
    lut_vs_layers_now_pct: float  # the LUT prediction against layers-now
    round_p10_ms: list[float]  # the network's 10th percentile per round (the core's fast state)
    round_layers_now_p10_ms: list[float]  # its layers' p10 (less the batch's overhead) summed, + the overhead

    @classmethod
    def of(cls, same: SameBatch, predicted_ms: float) -> SameBatchSample:
        return cls(same.layers_now_ms, same.round_layers_now_ms, same.error_pct,
                   100 * (predicted_ms / same.layers_now_ms - 1), same.round_whole_p10_ms,
                   same.round_layers_now_p10_ms)


@dataclass(frozen=True)
class SameBatchStats:
    """`verify --same-batch` over all networks: additivity (layers now vs networks) and drift
    (LUT rows vs layers now)."""

    additivity: ErrorStats  # layers-now (paired per round) as the prediction of each network
    lut_vs_layers_now: ErrorStats  # the LUT prediction scored against layers-now
    additivity_p10: ErrorStats  # the same in the fast state: the layers' p10 sum against the network's p10

    def to_json_dict(self) -> dict:
        return {"additivity": self.additivity.to_json_dict(),
                "lut_vs_layers_now": self.lut_vs_layers_now.to_json_dict(),
                "additivity_p10": self.additivity_p10.to_json_dict()}


@dataclass(frozen=True)
class FastState:
    """Both sides in the core's fast state: each network's 10th percentile (median over rounds)
    against the LUT's p10 rows summed plus the slice's overhead (ms). This host's core has a
    slow state (1.65-2.6x for XNNPACK's int8 7x7 depthwise) lasting seconds to minutes; a
    median takes whichever state held most of the runs, a p10 the fast one."""

    stats: ErrorStats
    measured_p10_ms: list[float]  # per network, in sample order
    predicted_p10_ms: list[float]
    cov_between_rounds_pct_median: float  # of the networks' p10 between rounds

    def to_json_dict(self) -> dict:
        return {**self.stats.to_json_dict(), "measured_p10_ms": self.measured_p10_ms,
                "predicted_p10_ms": self.predicted_p10_ms,
                "cov_between_rounds_pct_median": self.cov_between_rounds_pct_median}


@dataclass(frozen=True)
class NetworkSample:
    """One verified network: measured (ms, median of per-round medians) against both predictors."""

    index: int
    kind: str  # "max", "min" or "random"
    subnet: dict  # `SubnetConfig.to_dict()`
    macs: int
    layers: int  # LUT keys of the network
    measured_ms: float
    round_medians_ms: list[float]
    predicted_ms: float
    error_pct: float
    mac_proxy_ms: float
    mac_proxy_error_pct: float
    cov_between_rounds_pct: float
    cov_runs_pct: float
    same_batch: SameBatchSample | None = None  # `--same-batch` only (left out of the JSON otherwise)

    def to_json_dict(self) -> dict:
        data = dataclasses.asdict(self)
        if self.same_batch is None:
            del data["same_batch"]
        return data


def same_batch_stats(samples: Sequence[NetworkSample]) -> SameBatchStats:
    """Both `SameBatchStats` scores of networks measured with `--same-batch`."""
    same = [s.same_batch for s in samples]
    paired = [s.measured_ms * (1 + b.error_pct / 100) for s, b in zip(samples, same)]
    p10 = [statistics.median(b.round_p10_ms) for b in same]
    paired_p10 = [m * statistics.median(x / w for x, w in zip(b.round_layers_now_p10_ms, b.round_p10_ms))
                  for m, b in zip(p10, same)]
    return SameBatchStats(error_stats(paired, [s.measured_ms for s in samples]),
                          error_stats([s.predicted_ms for s in samples], [b.layers_now_ms for b in same]),
                          error_stats(paired_p10, p10))


@dataclass(frozen=True)
class VerifyReport:
    """What `verify_lut` measured and how well the LUT (and the MAC proxy) predicted it."""

    space: str
    created: str  # ISO-8601 UTC
    device: DeviceInfo
    runtime: str
    runtime_version: str
    runtime_options: str
    lut: str  # the LUT file
    seed: int
    stats: ErrorStats  # the LUT's errors (written at the top level of the JSON)
    mac_proxy: MacProxyResult
    plan: SliceCoverage
    overhead_ms: Overheads
    noise: Noise
    protocol: MeasureProtocol
    host: HostInfo
    wall_s: float
    samples: list[NetworkSample]
    cpu_fallback_networks: int = 0  # GPU-delegate slices: networks predicted with rows that partly ran on the CPU
    cpu_fallback_note: str = ""  # the one-line warning about them ("" when none)
    op_profile: OpJoinReport | None = None  # `verify --op-profile`: per-layer times inside the networks
    same_batch: SameBatchStats | None = None  # `verify --same-batch`: additivity with the host's drift taken out
    fast_state: FastState | None = None  # p10 against p10 (None: a row without p10)

    def to_json_dict(self) -> dict:
        """The `--json` document (keys in this order, the LUT's error stats at the top level)."""
        return {
            "space": self.space, "created": self.created, "device": dataclasses.asdict(self.device),
            "runtime": self.runtime, "runtime_version": self.runtime_version,
            "runtime_options": self.runtime_options, "lut": self.lut, "seed": self.seed,
            **self.stats.to_json_dict(),
            "mac_proxy": self.mac_proxy.to_json_dict(),
            "plan": dataclasses.asdict(self.plan),
            "overhead_ms": dataclasses.asdict(self.overhead_ms),
            "noise": dataclasses.asdict(self.noise),
            "protocol": dataclasses.asdict(self.protocol),
            "host": dataclasses.asdict(self.host),
            "wall_s": self.wall_s,
            "samples": [s.to_json_dict() for s in self.samples],
            "cpu_fallback_networks": self.cpu_fallback_networks,
            **({} if self.same_batch is None else {"same_batch": self.same_batch.to_json_dict()}),
            **({} if self.fast_state is None else {"fast_state": self.fast_state.to_json_dict()}),
            **({} if self.op_profile is None else {"op_profile": self.op_profile.to_json_dict()}),
        }


def format_report(report: VerifyReport) -> str:
    """The table `lutbuild verify` prints: LUT vs MAC proxy, then noise and drift."""
    plan = report.plan
    lines = [f"verify {report.space} on {report.device.device_id} "
             f"({report.runtime} {report.runtime_version}, {report.runtime_options}), "
             f"{report.stats.n} networks; LUT plan {'+'.join(plan.plans) or '?'}: "
             f"{plan.measured} measured, {plan.interpolated} interpolated keys",
             f"{'predictor':<22} {'MAPE %':>7} {'±5 %':>6} {'±10 %':>6} {'Spearman':>8} {'bias %':>7} {'max %':>7}"]
    rows = [("LUT (sum of layers)", report.stats), ("MAC proxy (a*MACs+b)", report.mac_proxy.stats)]
    if report.fast_state is not None:
        rows.append(("LUT p10 vs network p10", report.fast_state.stats))
    if report.same_batch is not None:
        rows += [("layers now, same batch", report.same_batch.additivity),
                 ("  the same, p10", report.same_batch.additivity_p10)]
    for name, stats in rows:
        lines.append(f"{name:<22} {format_error_stats(stats)} {stats.max_abs_err_pct:7.2f}")
    if report.same_batch is not None:
        drift = report.same_batch.lut_vs_layers_now
        lines.append(f"same batch: each network's own layer files timed beside it; the LUT rows vs those layers "
                     f"now: bias {drift.bias_pct:+.1f}%, MAPE {drift.mape_pct:.1f}% (the host's drift since the "
                     f"build); 'layers now' vs the networks is the LUT's additivity")
    noise = report.noise
    drift = noise.reference_drift_pct
    lines.append(f"noise: CoV between rounds median {noise.cov_between_rounds_pct_median:.2f}% "
                 f"(max {noise.cov_between_rounds_pct_max:.2f}%), within a round {noise.cov_runs_pct_median:.1f}%; "
                 f"reference vs the build's fast state {'n/a' if drift is None else f'{drift:+.1f}%'}"
                 + (f" ({noise.remeasured_processes} benchmark process(es) run again: slower than it)"
                    if noise.remeasured_processes else "")
                 + f"; overhead {report.overhead_ms.lut:.4f} ms in LUT")
    if noise.others_busy_pct_median is not None:
        lines.append(f"other cores busy during the benchmarks: median {noise.others_busy_pct_median:.0f}%, "
                     f"max {noise.others_busy_pct_max:.0f}% (a busy neighbour core slows the measured one; "
                     "verify on an otherwise idle device)")
    if report.fast_state is not None:
        lines.append(f"fast state: p10 of each network (CoV between rounds median "
                     f"{report.fast_state.cov_between_rounds_pct_median:.2f}%) against the LUT's p10 rows; "
                     f"this host's core has a slow state the median follows (docs/lut.md, INT8 slices)")
    if report.cpu_fallback_note:
        lines.append(report.cpu_fallback_note)
    if report.op_profile is not None:
        lines.append(format_op_join(report.op_profile, report.samples))
    return "\n".join(lines)
