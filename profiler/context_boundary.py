"""The `boundary` calibration of an in-context ONNX slice (`--context nchwc`).

In-context rows (`context_models.py`) charge every layout change *inside* a network; what a
whole network pays beyond its rows and its per-invoke overhead is its boundary: its first
layer reads the graph's NCHW image, not a neighbour's NCHWc output. After the rows of a slice
are in, one more batch times, for each key the space's input image can feed (the stem
widths), the layer fed by the graph's input (an output neighbour only), its in-context model
and its input's pair model, with the overhead model first: `context_models.input_boundary_ms`
per key, and their median is the slice's `boundary` calibration (ms), which
`LatencyTable.predict` adds once per network. Measured on layer models only, never fitted on
whole networks. Re-measured whenever the build measured rows (a resumed build with nothing to
do keeps it).
"""
from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence

from sqlite_utils import Database

from device_agents.contract import BenchmarkSettings
from lut_db.layer_key import LayerConfig
from lut_db.op_kinds import IMAGE, OP_KINDS
from lut_db.reader import BOUNDARY
from lut_db.writer import LutWriter

from . import calibrate
from .context_models import boundary_tensors, input_boundary_ms
from .export import ModelCache
from .spaces import resolve_space


def input_layers(space_name: str, keys: Iterable[LayerConfig]) -> list[LayerConfig]:
    """The keys a network's input image feeds: an image first input with the space's input
    channels at its input size (sorted by key). `space_name` as a plan registers it (a block
    plan's "<space>[block]" is the space's)."""
    space = resolve_space(space_name.split("[", 1)[0])
    h, w = space.spec.input_hw
    found = {k for k in keys if (k.h, k.w) == (h, w) and k.cin == space.spec.in_channels
             and OP_KINDS[k.op].inputs[:1] == (IMAGE,)}
    return sorted(found, key=lambda k: k.key)


def measure_boundary(db: Database, writer: LutWriter, agent, cache: ModelCache, layers: Sequence[LayerConfig],
                     settings: BenchmarkSettings, slice_key: tuple[str, str, str],
                     remeasure: bool) -> float | None:
    """Time the boundary batch of `layers` on `agent` and store the slice's `boundary`
    calibration (module docstring); returns it (ms), or the stored one when not `remeasure`;
    None when the space has no input layer among `layers`."""
    stored = calibrate.calibration(db, *slice_key, BOUNDARY)
    if not layers or (stored is not None and not remeasure):
        return stored[0] if stored is not None else None
    inputs = [cache.pair_path(boundary_tensors(k)[0]) for k in layers]
    paths = [cache.overhead(), *cache.input_layers(layers), *cache.layers(layers), *inputs]
    timings = [t.median_ms for t in agent.benchmark(paths, settings).timings]
    n = len(layers)
    overhead, fed, wrapped, pairs = timings[0], timings[1:1 + n], timings[1 + n:1 + 2 * n], timings[1 + 2 * n:]
    per_key = {k.key: input_boundary_ms(f, wr, p, overhead) for k, f, wr, p in zip(layers, fed, wrapped, pairs)}
    value = statistics.median(per_key.values())
    writer.set_calibration(*slice_key, BOUNDARY, value, {
        "what": "what a network's first layer pays beyond its in-context row for reading the graph's NCHW input "
                "(ms, median over the space's input layers); added once per network by LatencyTable.predict",
        "layers_ms": per_key, "overhead_ms": overhead})
    return value
