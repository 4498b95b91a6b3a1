"""`lutbuild predict`: the latency of any model from a LUT slice, with a per-layer breakdown.

model file / factory -> graph (`model_graph.py`) -> fusion-aware LUT keys (`graph_keys.py`)
-> one LUT slice (`lut_db.reader.LatencyTable`, read-time interpolation on) -> the sum of
the layers plus the slice's per-invoke overhead once, the same figure `LatencyTable.predict`
gives a search-space network.

A key without a row: with `measure_missing`, every such key (ours and generic) is measured
on the device by the project's build engine (`build_engine.run_build`: same slice, same
provenance, batches committed in transactions, a re-run resumes), generic keys exported
first as one-operator models (`generic_ops.py`) into the engine's model cache; then the
model is predicted. With `passes` N > 1, a key whose measured row has seen fewer than N
passes is measured again too (a run killed between passes, or N raised on a LUT filled
before), as `lutbuild build --passes` resumes (`passes.py`). Without `measure_missing`, a
key of our kinds is estimated from its measured family when it can be (source
``interpolated``); anything else is missing, and the run stops with one line naming the
first missing operators. Times in ms.

The slice's layer context defaults to ``auto`` (`choose_context`): a TFLite model whose weights
exceed what a core's cache keeps between two runs of one layer is read from the weights-cold
slice (`cold_models.py`), any other from the hot one.

When the slice holds a ``composition`` calibration (`lutbuild calibrate`, `composition.py`),
the sum is multiplied by the median whole / layers ratio of the calibrated models other than
this one, shown as one more line, ``(composition)``; `composition=False` gives the plain sum.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from lut_db.connect import lut_errors
from lut_db.coverage import format_table
from lut_db.errors import MissingLatencyError, UnknownSlice
from lut_db.layer_key import GenericKey
from lut_db.reader import LatencyTable
from lut_db.schema import open_lut_for_reading, open_lut_for_writing
from lut_db.writer import LutWriter

from .agents import LOCAL, open_agent
from .composition import Composition, composition_for, model_fingerprint, read_ratios
from .build_engine import run_build
from .build_slices import connect_devices
from .build_types import BuildOptions
from .errors import ProfilerError
from .export import ModelCache
from .generic_ops import export_generic, generic_module
from .graph_keys import GraphMapping, map_graph
from .model_graph import load_model
from .passes import measured_passes
from .plan import Plan
from .runtimes import ALONE, COLD, DEFAULT_CACHE_DIR, NCHWC, slice_runtime

#: Missing operators named in the one-line error (the rest are counted).
SHOW_MISSING = 5
#: `--context auto`: the slice is chosen from the model's weights (`choose_context`).
AUTO = "auto"
#: `auto` reads the weights-cold slice for a TFLite model with at least this many bytes of
#: weights. Why 4 MiB: twice the L2 of this host's cores (2 MiB) and of a phone's big core
#: (1-2 MiB). On this host a layer's time grew with the weights read since its last run, 1.00x
#: at 0.6 MiB, 1.09x at 2.3, 1.17x at 4.6, 1.24x at 18.4 MiB (`benchmarks/predict_gap/weights.py`,
#: docs/predict.md): from about 3 MiB on, the cold rows (a 24 MiB copy target) are the nearer
#: of the two. A model's activations are not counted: they are read hot, layer after layer.
AUTO_COLD_BYTES = 4 * 2**20


@dataclass(frozen=True)
class PredictOptions:
    """How `predict_model` reads (and, with `measure_missing`, fills) the LUT."""

    device: str = LOCAL  # a device id of the LUT, or `local` / a phone (asked for its id)
    runtime: str = "tflite"
    threads: int = 1
    delegate: str = "xnnpack"
    input_shape: tuple[int, ...] | None = None
    measure_missing: bool = False
    jobs: int = 2
    repeats: int = 3
    passes: int = 1  # --measure-missing: measurement passes, each key keeps its lowest-p10 row (passes.py)
    statistic: str = "median"  # the row statistic summed ("p10": the host's fast state, docs/lut.md)
    context: str = AUTO  # the slice's layer context: alone, cold (weights-cold rows, cold_models.py) or auto
    composition: bool = True  # apply the slice's composition calibration when it has one (composition.py)
    cache_dir: Path = DEFAULT_CACHE_DIR
    progress: bool = True
    agent_kwargs: dict = field(default_factory=dict)  # phone options for `agents.open_agent`


@dataclass(frozen=True)
class LayerLatency:
    """One line of the breakdown (ms; share of the total, 0..1)."""

    layer: str
    ops: str  # operator types covered, "+"-joined
    key: str
    ms: float
    share: float
    source: str  # measured / interpolated / generic (a generic key, measured) / overhead / composition


@dataclass
class PredictReport:
    model: str
    device_id: str
    runtime: str
    runtime_options: str
    total_ms: float
    layers: list[LayerLatency]
    free_ops: int  # reshape-like operators with no kernel (no key, 0 ms)
    measured_now: int = 0  # distinct keys this run measured (--measure-missing; further passes included)
    wall_s: float = 0.0
    weights_mib: float = 0.0  # the model's stored constants (`ModelGraph.weight_bytes`), MiB
    context_note: str = ""  # which layer context was read and, for `auto`, why
    lut_sum_ms: float = 0.0  # the rows summed plus the overhead: total_ms before the composition factor
    composition_factor: float = 1.0  # total_ms / lut_sum_ms (1: no composition applied)
    composition_note: str = ""  # the factor and the models it came from, or why none was applied

    @property
    def generic_ms(self) -> float:
        return sum(row.ms for row in self.layers if row.source == "generic")

    @property
    def generic_share(self) -> float:
        return self.generic_ms / self.total_ms if self.total_ms else 0.0

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for row in self.layers:
            out[row.source] = out.get(row.source, 0) + 1
        return out

    def to_json_dict(self) -> dict:
        return {**{k: v for k, v in asdict(self).items() if k != "layers"}, "generic_ms": self.generic_ms,
                "generic_share": self.generic_share, "counts": self.counts(),
                "layers": [asdict(row) for row in self.layers]}

    def format(self) -> str:
        rows = [_Row(r.layer[-32:], r.ops, r.key, f"{r.ms:.4f}", f"{100 * r.share:.1f}%", r.source)
                for r in self.layers]
        counts = ", ".join(f"{n} {s}" for s, n in sorted(self.counts().items()))
        return "\n".join([
            format_table(rows),
            "",
            f"{self.model}: {self.total_ms:.3f} ms predicted on {self.device_id} ({self.runtime}, "
            f"{self.runtime_options}); {counts}; generic keys {100 * self.generic_share:.1f}% of the latency; "
            f"{self.free_ops} free operator(s); weights {self.weights_mib:.1f} MiB; {self.context_note}; "
            f"{self.composition_note}; "
            f"measured now {self.measured_now}; {self.wall_s:.2f} s",
        ])


@dataclass(frozen=True)
class _Row:
    layer: str
    ops: str
    key: str
    ms: str
    share: str
    source: str


def model_space_name(model: str) -> str:
    """The key set a model registers in the LUT (`lutbuild show` coverage): ``model:<name>``."""
    name = model.split(":")[-1] if ":" in model and not Path(model).exists() else Path(model).stem
    return f"model:{name}"


def choose_context(context: str, runtime: str, weight_bytes: int) -> tuple[str, str]:
    """The layer context a prediction reads and the report's note on it: `context` itself,
    or for `AUTO` cold (TFLite, at least `AUTO_COLD_BYTES` of weights) or alone."""
    if context != AUTO:
        return context, f"context {context}"
    mib, limit = weight_bytes / 2**20, AUTO_COLD_BYTES / 2**20
    if runtime != "tflite":
        return ALONE, f"context {ALONE} (auto: {runtime} has no weights-cold slice)"
    if weight_bytes >= AUTO_COLD_BYTES:
        return COLD, f"context {COLD} (auto: {mib:.1f} MiB of weights >= {limit:g} MiB)"
    return ALONE, f"context {ALONE} (auto: {mib:.1f} MiB of weights < {limit:g} MiB)"


def predict_model(model: str, db_path: str | Path, options: PredictOptions) -> PredictReport:
    """Predict `model` on one LUT slice (module docstring); user errors before any work."""
    start = time.monotonic()
    if options.context == NCHWC:  # its wrapped models and boundary calibration exist for our op kinds only
        raise ProfilerError("--context nchwc: not for predict (in-context rows are built for the search spaces' "
                            "layer kinds, not for generic operators); use --context auto, alone or cold")
    if options.context != AUTO:  # an explicit context is checked before the model is read
        slice_runtime(options.runtime, options.threads, delegate=options.delegate, context=options.context)
    db_path = Path(db_path)
    if not options.measure_missing and not db_path.exists():
        raise ProfilerError(f"--db {db_path}: no such LUT file (give --measure-missing to create and fill it)")
    graph = load_model(model, options.input_shape)
    mapping = map_graph(graph)
    if not mapping.layers:
        raise ProfilerError(f"{model}: no operator to predict (the graph is empty after folding)")
    context, context_note = choose_context(options.context, options.runtime, graph.weight_bytes)
    options = replace(options, context=context)
    rt = slice_runtime(options.runtime, options.threads, delegate=options.delegate, context=context)
    agent = None
    try:
        device_id = _lut_device(db_path, options.device)
        if device_id is None or options.measure_missing:
            agent = open_agent(options.device, options.runtime, **options.agent_kwargs)
            device_id = agent.info().device_id
        table = _load(db_path, device_id, rt.name, rt.options, options.statistic,
                      must_exist=not options.measure_missing, note=context_note)
        measured_now = 0
        todo = _without_row(table, mapping)
        if options.measure_missing:
            todo += _short_of_passes(db_path, device_id, rt.name, rt.options, mapping, options.passes)
        if todo and options.measure_missing:
            for key in todo:  # an operator we cannot build fails here, before any measurement
                if isinstance(key, GenericKey):
                    generic_module(key)
            measured_now = _measure(model, db_path, mapping, todo, agent, options)
            table = _load(db_path, device_id, rt.name, rt.options, options.statistic, must_exist=True,
                          note=context_note)
    finally:
        if agent is not None:
            agent.close()
    composition, composition_note = _composition(db_path, table, mapping, options)
    report = breakdown(model, table, mapping, context_note, composition)
    report.composition_note = composition_note
    report.measured_now = measured_now
    report.weights_mib = graph.weight_bytes / 2**20
    report.wall_s = time.monotonic() - start
    return report


def breakdown(model: str, table: LatencyTable, mapping: GraphMapping, note: str = "",
              composition: Composition | None = None) -> PredictReport:
    """Per-layer latencies of `mapping` from `table`, the overhead as its own line, `note` (the
    context read) as the report's, and with `composition` the sum times its factor, the
    difference as one more line; raises a `ProfilerError` naming the first missing operators
    (and `note`) when some key has no value."""
    values, missing = [], []
    for layer in mapping.layers:
        try:
            if layer.generic and not table.has(layer.key):
                raise MissingLatencyError(layer.key.key, table.device_id, table.runtime, table.runtime_options)
            values.append(table.latency(layer.key))
        except MissingLatencyError:
            missing.append(layer)
    if missing:
        names = "; ".join(f"{m.name} ({'+'.join(m.ops)}: {m.key.key})" for m in missing[:SHOW_MISSING])
        more = f" and {len(missing) - SHOW_MISSING} more" if len(missing) > SHOW_MISSING else ""
        raise ProfilerError(f"{len(missing)} of {len(mapping.layers)} operators of {model} have no latency in "
                            f"{table.origin} for {table.device_id} {table.runtime} {table.runtime_options}"
                            f"{f' ({note})' if note else ''}: {names}{more}; give --measure-missing to measure them")
    lut_sum = table.predict([layer.key for layer in mapping.layers])
    factor = composition.factor if composition is not None else 1.0
    total = lut_sum * factor
    rows = [LayerLatency(layer.name, "+".join(layer.ops), layer.key.key, ms, ms / total if total else 0.0,
                         "generic" if layer.generic else table.source(layer.key))
            for layer, ms in zip(mapping.layers, values)]
    rows.append(LayerLatency("(per-invoke overhead)", "", "overhead", table.overhead_ms,
                             table.overhead_ms / total if total else 0.0, "overhead"))
    if composition is not None:
        rows.append(LayerLatency("(composition)", "", "composition", total - lut_sum,
                                 (total - lut_sum) / total if total else 0.0, "composition"))
    return PredictReport(model, table.device_id, table.runtime, table.runtime_options, total, rows, mapping.free_ops,
                         context_note=note, lut_sum_ms=lut_sum, composition_factor=factor)


def _composition(db_path: Path, table: LatencyTable, mapping: GraphMapping,
                 options: PredictOptions) -> tuple[Composition | None, str]:
    """The slice's composition for this model (`composition.composition_for`) and the report's note on it."""
    if not options.composition:
        return None, "composition off (the LUT sum)"
    if not db_path.exists():
        return None, "no composition calibration (lutbuild calibrate)"
    db = open_lut_for_reading(db_path)
    try:
        with lut_errors(db_path):
            ratios = read_ratios(db, table.device_id, table.runtime, table.runtime_options)
    finally:
        db.close()
    fingerprint = model_fingerprint([layer.key for layer in mapping.layers])
    composition = composition_for(ratios, fingerprint, options.statistic)
    if composition is not None:
        return composition, composition.note()
    if ratios:
        return None, "no composition: only this model is calibrated in the slice, and it is held out"
    return None, "no composition calibration (lutbuild calibrate)"


def _lut_device(db_path: Path, device: str) -> str | None:
    """`device` when it is a device id of the LUT's slices, else None (ask the device)."""
    if not db_path.exists():
        return None
    return device if any(s.device_id == device for s in LatencyTable.slices(db_path)) else None


def _load(db_path: Path, device_id: str, runtime: str, options: str, statistic: str, must_exist: bool,
          note: str) -> LatencyTable:
    """The slice's table (empty when it may not exist yet); a missing slice's error says which
    context was read and why (`note`: an `auto` choice surprises a user who built the other)."""
    if not must_exist and not db_path.exists():
        return LatencyTable({}, device_id=device_id, runtime=runtime, runtime_options=options, origin=str(db_path))
    try:
        return LatencyTable.load(db_path, device_id, runtime, options, interpolate=True, statistic=statistic)
    except UnknownSlice as error:
        if must_exist:
            raise ProfilerError(f"{error}; {note}") from None
        return LatencyTable({}, device_id=device_id, runtime=runtime, runtime_options=options, origin=str(db_path))


def _without_row(table: LatencyTable, mapping: GraphMapping) -> list:
    """Distinct keys of the model with no stored row in the slice, in model order."""
    return table.missing(layer.key for layer in mapping.layers)


def _short_of_passes(db_path: Path, device_id: str, runtime: str, options: str, mapping: GraphMapping,
                     passes: int) -> list:
    """Distinct keys of the model whose measured row has seen fewer than `passes` passes, in
    model order: the build engine gives them their further passes (`passes.pass_todo`)."""
    if passes <= 1 or not db_path.exists():
        return []
    db = open_lut_for_reading(db_path)
    try:
        seen = measured_passes(db, device_id, runtime, options)
    finally:
        db.close()
    return [k for k in dict.fromkeys(layer.key for layer in mapping.layers) if seen.get(k.key, passes) < passes]


def _measure(model: str, db_path: Path, mapping: GraphMapping, todo: list, agent, options: PredictOptions) -> int:
    """Measure `todo` on `agent` with the build engine into the slice; returns how many were measured."""
    build = BuildOptions(jobs=options.jobs, threads=options.threads, delegate=options.delegate,
                         repeats=options.repeats, cache_dir=options.cache_dir, passes=options.passes,
                         context=options.context)
    with ModelCache(options.cache_dir, options.runtime, jobs=1, context=options.context) as cache:
        for key in todo:  # generic keys: exported here, found on disk by the engine's cache
            path = cache.layer_path(key)
            if isinstance(key, GenericKey) and not path.exists():
                export_generic(key, options.runtime, path)
    all_keys = list(dict.fromkeys(layer.key for layer in mapping.layers))
    convs = sorted((k for k in all_keys if k.op == "conv"), key=lambda c: (c.macs(), c.key))
    measure = list(todo)
    if convs and not any(k.op == "conv" for k in todo):  # a conv drift reference for a new slice
        measure.append(convs[len(convs) // 2])
    space = model_space_name(model)
    plan = Plan("full", space, tuple(sorted(dict.fromkeys(measure), key=lambda c: c.key)), ())
    devices = connect_devices([agent], options.runtime, build, name_errors=False)
    db = open_lut_for_writing(db_path)
    try:
        with lut_errors(db_path):
            report = run_build(db, space, plan, devices, build, several=False, start=time.monotonic(),
                               progress=options.progress)
            LutWriter(db).register_space(space, all_keys)
    finally:
        db.close()
    # distinct keys measured: pass k holds every key of pass k - 1 (passes.pass_todo), so the largest pass counts them
    return sum(max(r.measured, *r.remeasured.values(), 0) for r in report.reports)
