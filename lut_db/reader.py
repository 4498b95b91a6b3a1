"""Fast latency prediction from one LUT slice held in memory.

The search (MCD) predicts the latency of hundreds of thousands of candidate networks, so a
slice is read from SQLite once into a dict {layer key: median ms} and every prediction is
dict look-ups on `LayerConfig`'s precomputed key. All values are milliseconds.
"""
from __future__ import annotations

import json
from pathlib import Path
from collections.abc import Iterable, Mapping

from .coverage import GPU_COMPLETE_SQL, GPU_DELEGATION_JSON, SliceInfo, slices as _slices
from .errors import MissingLatencyError, UnknownSlice
from .interpolate import Family, Point, family_key, family_macs, group_by_family, interpolate_family
from .layer_key import LayerConfig, RuntimeSpec
from .connect import lut_errors
from .schema import open_lut_for_reading

#: The options string of a default `RuntimeSpec` (single thread, XNNPACK).
DEFAULT_RUNTIME_OPTIONS = RuntimeSpec(name="").options
#: The row statistics a table can hold (`LatencyTable.load(statistic=...)`) -> their column.
#: "p10": the core's fast state, what whole networks' p10s add up to (docs/lut.md "INT8 slices").
STATISTICS = {"median": "median_ms", "p10": "p10_ms"}
#: Calibration name of the per-invoke overhead in ms: the profiler subtracts it from every
#: layer (a layer alone pays it once, a network pays it once in total), `predict` adds it back.
OVERHEAD = "overhead"
#: Calibration name of an in-context ONNX slice's network boundary in ms (`--context nchwc`:
#: what a network's first layer pays for reading the graph's input rather than a neighbour's
#: output); `predict` adds it once per network, with the overhead. Absent from other slices.
BOUNDARY = "boundary"


class LatencyTable:
    """Latencies (median ms, or another row `statistic`) of one slice: one device, one runtime,
    one options string.

    With `interpolate=True` a missing key is estimated from measured layers of its family
    (`lut_db.interpolate`), cached, and listed in `interpolated_keys`, which also holds the
    keys whose stored row is itself interpolated, so a caller can say which figures are not
    measured. Without it, a missing key raises `MissingLatencyError`, never a silent zero.
    """

    def __init__(self, latencies_ms: Mapping[str, float], *, device_id: str = "", runtime: str = "",
                 runtime_options: str = DEFAULT_RUNTIME_OPTIONS, interpolated: Iterable[str] = (),
                 calibration_ms: Mapping[str, float] | None = None,
                 runtime_versions: Iterable[str] = (), interpolate: bool = False, origin: str = "",
                 cpu_fallback: Mapping[str, Iterable[str]] | None = None, statistic: str = "median") -> None:
        self._ms: dict[str, float] = dict(latencies_ms)
        self.statistic = statistic  # which row statistic the latencies are (a key of STATISTICS)
        self.device_id, self.runtime, self.runtime_options = device_id, runtime, runtime_options
        self.interpolated_keys: set[str] = set(interpolated)
        self.calibration_ms: dict[str, float] = dict(calibration_ms or {})
        self.boundary_ms: float = self.calibration_ms.get(BOUNDARY, 0.0)
        #: What a network pays once beyond its rows (ms): the per-invoke overhead, plus the
        #: `boundary` of an in-context slice (0 elsewhere, so other slices predict as before).
        self.overhead_ms: float = self.calibration_ms.get(OVERHEAD, 0.0) + self.boundary_ms
        self.runtime_versions: frozenset[str] = frozenset(runtime_versions)
        self.interpolate = interpolate
        self.origin = origin  # file it came from, for messages
        # GPU-delegate slices: key -> op kinds left on the CPU, for the rows whose ops partly ran
        # on the CPU (their latency mixes GPU and CPU time: `fallback_note`)
        self.cpu_fallback: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in (cpu_fallback or {}).items()}
        self._families: dict[Family, dict[Point, float]] | None = None

    @classmethod
    def load(cls, path: str | Path, device_id: str, runtime: str,
             runtime_options: str = DEFAULT_RUNTIME_OPTIONS, interpolate: bool = False,
             statistic: str = "median") -> LatencyTable:
        """Read one slice of the LUT at `path` (raises `UnknownSlice` if it has no rows).

        `statistic`: which column of each row ("median", the default every prediction uses, or
        "p10"); a row without that statistic (NULL: an interpolated row of an older build) is
        left out, i.e. missing (or interpolated with `interpolate`, from the same statistic)."""
        if statistic not in STATISTICS:
            raise ValueError(f"LatencyTable.load: statistic: expected one of {', '.join(STATISTICS)}, "
                             f"got {statistic!r}")
        db = open_lut_for_reading(path)
        try:
            with lut_errors(path):
                where = "WHERE device_id = ? AND runtime = ? AND runtime_options = ?"
                args = [device_id, runtime, runtime_options]
                rows = db.execute(f"SELECT layer_key, {STATISTICS[statistic]}, source, runtime_version "
                                  f"FROM measurements {where}", args).fetchall()
                if not rows:
                    present = [f"{s.device_id} {s.runtime} {s.runtime_options} ({s.rows} rows)" for s in _slices(db)]
                    raise UnknownSlice(str(path), device_id, runtime, runtime_options, present)
                calibration = dict(db.execute(f"SELECT name, value_ms FROM calibration {where}", args).fetchall())
                fallback = {}
                if "delegate=gpu" in runtime_options.split(";"):  # only GPU rows carry the record
                    fallback = {key: json.loads(ops or "[]") for key, ops in db.execute(
                        f"SELECT layer_key, json_extract(state_after, '{GPU_DELEGATION_JSON}.fallback') "
                        f"FROM measurements {where} AND {GPU_COMPLETE_SQL} = 0", args).fetchall()}
        finally:
            db.close()
        rows = [row for row in rows if row[1] is not None]
        return cls(
            {key: ms for key, ms, _, _ in rows}, device_id=device_id, runtime=runtime,
            runtime_options=runtime_options, calibration_ms=calibration, interpolate=interpolate,
            interpolated=(key for key, _, source, _ in rows if source == "interpolated"),
            runtime_versions={version for *_, version in rows}, origin=str(path), cpu_fallback=fallback,
            statistic=statistic,
        )

    @staticmethod
    def slices(path: str | Path) -> list[SliceInfo]:
        """The slices of the LUT at `path` (device, runtime, versions, options, row counts)."""
        db = open_lut_for_reading(path)
        try:
            with lut_errors(path):
                return _slices(db)
        finally:
            db.close()

    def __len__(self) -> int:
        return len(self._ms)

    def keys(self) -> list[str]:
        """The layer keys the table has a latency for (measured, interpolated, estimated so far)."""
        return list(self._ms)

    def latency(self, cfg: LayerConfig) -> float:
        """Latency of one layer in ms, the table's `statistic` (without the per-invoke overhead)."""
        try:
            return self._ms[cfg.key]
        except KeyError:
            return self._estimate(cfg)

    def predict(self, layers: Iterable[LayerConfig]) -> float:
        """Latency of a whole network in ms: its layers' sum plus the slice's `overhead`
        calibration once (0 when the slice has none), and its `boundary` once when it has one."""
        if not isinstance(layers, (list, tuple)):
            layers = list(layers)
        ms = self._ms
        try:
            # `_key` is the key LayerConfig caches at construction (this package's own class):
            # reading it directly instead of through the `key` property halves the time.
            return sum([ms[cfg._key] for cfg in layers], self.overhead_ms)
        except KeyError:
            return sum([self.latency(cfg) for cfg in layers], self.overhead_ms)

    def fallback_note(self, layers: Iterable[LayerConfig], what: str = "this prediction") -> str:
        """One line when `layers` use rows whose ops partly ran on the CPU under the GPU delegate
        (their latency is GPU + CPU + the copies between them); "" when none do."""
        used = {cfg.key for cfg in layers if cfg.key in self.cpu_fallback}
        if not used:
            return ""
        ops = sorted({op for key in used for op in self.cpu_fallback[key]})
        return (f"warning: {what} uses {len(used)} LUT row(s) of slice {self.device_id} {self.runtime} "
                f"{self.runtime_options} whose ops partly ran on the CPU ({', '.join(ops) or 'kinds not printed'}): "
                "GPU and CPU time mixed")

    def has(self, cfg: LayerConfig) -> bool:
        """Whether the table holds `cfg` (loaded, or already interpolated by this table)."""
        return cfg.key in self._ms

    def missing(self, layers: Iterable[LayerConfig]) -> list[LayerConfig]:
        """Layers without a value, each once, in order (does not interpolate)."""
        seen: dict[str, LayerConfig] = {}
        for cfg in layers:
            if cfg.key not in self._ms:
                seen.setdefault(cfg.key, cfg)
        return list(seen.values())

    def source(self, cfg: LayerConfig) -> str:
        """'measured' or 'interpolated' for a key the table holds."""
        if cfg.key not in self._ms:
            raise self._missing_error(cfg.key)
        return "interpolated" if cfg.key in self.interpolated_keys else "measured"

    def _estimate(self, cfg: LayerConfig) -> float:
        key = cfg.key
        if not self.interpolate:
            raise self._missing_error(key)
        points = self._measured_families().get(family_key(cfg), {})
        ms = interpolate_family(points, [(cfg.cin, cfg.cout)], family_macs(cfg)).get((cfg.cin, cfg.cout))
        if ms is None:
            raise self._missing_error(key, f"{len(points)} measured layer(s) of its family, too few to interpolate")
        self._ms[key] = ms
        self.interpolated_keys.add(key)
        return ms

    def _measured_families(self) -> dict[Family, dict[Point, float]]:
        """Measured points by family, built on the first interpolation (parses every key)."""
        if self._families is None:
            measured = {}
            for key, ms in self._ms.items():
                if key in self.interpolated_keys:
                    continue
                try:
                    measured[LayerConfig.from_key(key)] = ms
                except ValueError:  # a key of an op this version does not know
                    continue
            self._families = group_by_family(measured)
        return self._families

    def _missing_error(self, key: str, reason: str = "") -> MissingLatencyError:
        return MissingLatencyError(key, self.device_id, self.runtime, self.runtime_options,
                                   path=self.origin, reason=reason)
