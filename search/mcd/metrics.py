"""Resource metrics MCD constrains, behind one small interface (plug-ins).

A metric maps a `SubnetConfig` to a number where smaller is cheaper: LUT-predicted latency
(ms, the default), MAC count, or latency measured on a device for every candidate (slow; it
shows MCD needs no differentiable or even predictable metric). A `Constraint` pairs a metric
with its limit; a candidate must meet every constraint's iteration target.

Values are cached per canonical config: candidate generation asks for the same networks
many times while it shrinks layers one step at a time.
"""
from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from device_agents.contract import BenchmarkSettings
from lut_db import LatencyTable
from profiler.export import EXTENSIONS, export_network
from profiler.predictor import LatencyPredictor
from search.spaces.space import SearchSpace, SubnetConfig


@runtime_checkable
class Metric(Protocol):
    """A resource of a sub-network; smaller is cheaper. `name` keys histories and reports."""

    name: str  # e.g. "latency_ms", "macs", "measured_ms"
    unit: str  # "ms", "MACs"

    def value(self, config: SubnetConfig) -> float: ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class Constraint:
    """`metric(config) <= limit` (in the metric's unit)."""

    metric: Metric
    limit: float

    @property
    def name(self) -> str:
        return self.metric.name


class _Cached:
    """Memoises `value` by config (SubnetConfig hashes its sorted items)."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self._cache: dict[SubnetConfig, float] = {}
        self.evaluations = 0  # uncached evaluations (the expensive ones for a measured metric)

    def value(self, config: SubnetConfig) -> float:
        config = self.space.canonical(config)
        hit = self._cache.get(config)
        if hit is None:
            hit = self._cache[config] = float(self._compute(config))
            self.evaluations += 1
        return hit

    def _compute(self, config: SubnetConfig) -> float:
        raise NotImplementedError


class LutLatencyMetric(_Cached):
    """Latency in ms predicted from one LUT slice: sum of the subnet's layers + the slice overhead."""

    name, unit = "latency_ms", "ms"

    def __init__(self, space: SearchSpace, table: LatencyTable) -> None:
        super().__init__(space)
        self.table = table
        # the profiler's predictor caches latencies per block choice: the numbers of
        # `table.predict(space.layer_configs(cfg))`, hundreds of thousands of networks per second
        self._predictor = LatencyPredictor(space, table)

    def _compute(self, config: SubnetConfig) -> float:
        return self._predictor.predict(config)

    def describe(self) -> str:
        t = self.table
        return f"LUT latency ({t.device_id}, {t.runtime}, {t.runtime_options})"


class MacsMetric(_Cached):
    """Multiply-accumulates of the subnet (the same per-layer formula as the MAC proxy)."""

    name, unit = "macs", "MACs"

    def _compute(self, config: SubnetConfig) -> float:
        return self.space.macs(config)

    def describe(self) -> str:
        return "MACs"


class MeasuredLatencyMetric(_Cached):
    """Latency in ms of the whole candidate network measured on a device (median of its runs).

    Each new config is built (random weights: latency does not depend on them), exported with
    the runtime's exporter and benchmarked through a `device_agents` agent. Seconds per
    config, so it suits small searches and checks; the values are cached per config.
    """

    name = "measured_ms"
    unit = "ms"

    def __init__(self, space: SearchSpace, agent, runtime: str = "onnx", settings=None,
                 workdir: str | Path | None = None) -> None:
        super().__init__(space)
        self.agent = agent
        self.runtime = runtime
        # fewer runs than a LUT row: a candidate is timed once and a whole network is long
        self.settings = settings or BenchmarkSettings(runtime=runtime, warmup_runs=5, min_runs=20,
                                                      min_seconds=0.05)
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="netadaptv2-measured-")
        self.workdir = Path(workdir or self._tmp.name)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cov: dict[SubnetConfig, float] = {}  # noise of each measurement (std / mean)

    def _compute(self, config: SubnetConfig) -> float:
        digest = hashlib.sha1(config.to_json().encode()).hexdigest()[:16]
        path = self.workdir / f"cand_{digest}{EXTENSIONS[self.runtime]}"
        if not path.exists():  # random weights: latency does not depend on their values
            export_network(self.space.spec, config.to_dict(), self.runtime, path)
        timing = self.agent.benchmark([path], self.settings).timings[0]
        self.cov[config] = timing.cov
        return timing.median_ms

    def describe(self) -> str:
        return f"measured latency ({self.runtime} on {self.agent.info().device_id})"
