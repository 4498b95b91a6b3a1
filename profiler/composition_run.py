"""`lutbuild calibrate`: measure the composition factor of a slice on models the user gives.

Each model is timed whole beside its own LUT layer files, in the same runner batches
(`same_batch.time_rounds`: one benchmark process per model and round, the overhead model and
the slice's drift reference first, a process whose reference runs slow measured again as in
a build), `rounds` rounds, the models interleaved round by round. Its ratio whole / layers now
(`composition.ModelRatio`) goes into the slice's ``composition`` calibration, which
`lutbuild predict` applies to the *other* models (`composition.py`).

The whole model is the file the runtime runs: a `.tflite` file for TFLite, an `.onnx` file
for ONNX Runtime, or a PyTorch factory exported to that runtime with the profiler's exporter
(the LUT rows' I/O convention; BatchNorm statistics randomized, as for every LUT layer, so
that none folds away as an identity). Every key of every model must already have a row in the
slice the model's prediction reads (`predict --measure-missing` fills them): a calibration
compares the rows that exist, it never measures rows of its own. Everything a user can get
wrong is one line before the first benchmark.
"""
from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from lut_db.connect import lut_errors
from lut_db.coverage import format_table
from lut_db.errors import UnknownSlice
from lut_db.layer_key import RuntimeSpec
from lut_db.reader import LatencyTable
from lut_db.schema import open_lut_for_reading, open_lut_for_writing

from . import calibrate
from .agents import LOCAL, device_label, open_agent
from .composition import ModelRatio, model_fingerprint, read_ratios, store_ratios
from .errors import ProfilerError
from .export import ModelCache, export_module, randomize_batchnorm
from .graph_keys import map_graph
from .layer_files import cold_layer_files, layer_files
from .model_files import check_model_file
from .model_graph import call_factory, is_factory, load_model
from .predict_model import AUTO, choose_context
from .runtimes import (ALONE, COLD, DEFAULT_CACHE_DIR, EXTENSIONS, benchmark_settings, check_agent_delegate,
                       slice_runtime)
from .same_batch import Group, time_rounds


@dataclass(frozen=True)
class CalibrateOptions:
    device: str = LOCAL  # `local` or a phone (ADB serial or host:port)
    runtime: str = "tflite"
    threads: int = 1
    delegate: str = "xnnpack"
    input_shape: tuple[int, ...] | None = None
    context: str = AUTO  # the slice each model's prediction reads (`predict_model.choose_context`)
    rounds: int = 3  # benchmark processes per model
    repeats: int = 3  # interleaved passes per process
    remeasure: int = 1  # a process whose reference runs slow is run again, at most this many times
    jobs: int = 2
    cache_dir: Path = DEFAULT_CACHE_DIR
    progress: bool = True
    agent_kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class _Model:
    """One model of the request, checked: its keys, the slice it reads, the file timed whole."""

    name: str
    keys: list  # LUT keys of its breakdown, in order
    context: str
    whole: Path


@dataclass(frozen=True)
class _Measured:
    """One model's rounds, summed up: its ratio and the medians it came from (ms)."""

    model: _Model
    ratio: ModelRatio
    whole_ms: float
    layers_now_ms: float


@dataclass(frozen=True)
class CalibratedModel:
    model: str
    runtime_options: str  # the slice it calibrates
    whole_ms: float  # median over rounds of the whole model's median (raw: one overhead included)
    layers_now_ms: float  # median over rounds of its layer files summed (each less the overhead, + one)
    ratio: float
    ratio_p10: float


@dataclass
class CalibrateReport:
    device_id: str
    runtime: str
    models: list[CalibratedModel]
    factors: dict[str, float]  # slice options -> the slice's factor after this run (all its models)
    slice_models: dict[str, int]  # slice options -> how many models it holds now
    rounds: int
    wall_s: float = 0.0

    def to_json_dict(self) -> dict:
        return {"device_id": self.device_id, "runtime": self.runtime, "rounds": self.rounds,
                "models": [vars(m) for m in self.models], "factors": self.factors,
                "slice_models": self.slice_models, "wall_s": self.wall_s}

    def format(self) -> str:
        rows = [_Row(_short(m.model), m.runtime_options, f"{m.whole_ms:.3f}", f"{m.layers_now_ms:.3f}",
                     f"{m.ratio:.3f}", f"{m.ratio_p10:.3f}") for m in self.models]
        slices = "; ".join(f"{options}: x{factor:.3f} from {self.slice_models[options]} model(s)"
                           for options, factor in self.factors.items())
        return "\n".join([format_table(rows), "",
                          f"composition stored for {self.device_id} {self.runtime} ({slices}); {self.rounds} "
                          f"round(s); {self.wall_s:.1f} s. lutbuild predict applies to each model the median "
                          f"ratio of the OTHER calibrated models"])


def _short(model: str) -> str:
    """A model as the table names it: a file by its name, a factory whole."""
    return model if is_factory(model) else Path(model).name


@dataclass(frozen=True)
class _Row:
    model: str
    slice: str
    whole_ms: str
    layers_now_ms: str
    ratio: str
    ratio_p10: str


def calibrate_composition(models: list[str], db_path: str | Path, options: CalibrateOptions) -> CalibrateReport:
    """Time each model beside its LUT layer files and store the slices' composition (module docstring)."""
    start = time.monotonic()
    db_path = Path(db_path)
    if not db_path.exists():
        raise ProfilerError(f"--db {db_path}: no such LUT file (fill it with lutbuild predict MODEL "
                            "--measure-missing first)")
    checked = _check_models(models, options)
    agent = open_agent(options.device, options.runtime, **options.agent_kwargs)
    try:
        info = agent.info()
        specs = {m.context: slice_runtime(options.runtime, options.threads, delegate=options.delegate,
                                          context=m.context) for m in checked}
        for rt in specs.values():
            check_agent_delegate(rt, agent, device_label(agent))
        tables = {c: _table(db_path, info.device_id, rt) for c, rt in specs.items()}
        for m in checked:  # a key without a row: one line before any benchmark
            if missing := tables[m.context].missing(m.keys):
                raise ProfilerError(
                    f"{m.name}: {len(missing)} of its keys have no row in {db_path} for {info.device_id} "
                    f"{options.runtime} {specs[m.context].options} (first: {missing[0].key}); run lutbuild predict "
                    f"{m.name} --measure-missing --context {m.context} first")
        measured = _measure(agent, db_path, info.device_id, checked, specs, options)
    finally:
        agent.close()
    db = open_lut_for_writing(db_path)
    factors, counts = {}, {}
    try:
        with lut_errors(db_path):
            for context, rt in specs.items():
                factors[rt.options] = store_ratios(db, info.device_id, options.runtime, rt.options,
                                                   [m.ratio for m in measured if m.model.context == context])
                counts[rt.options] = len(read_ratios(db, info.device_id, options.runtime, rt.options))
    finally:
        db.close()
    rows = [CalibratedModel(m.model.name, specs[m.model.context].options, m.whole_ms, m.layers_now_ms, m.ratio.ratio,
                            m.ratio.ratio_p10) for m in measured]
    return CalibrateReport(info.device_id, options.runtime, rows, factors, counts, options.rounds,
                           time.monotonic() - start)


def _check_models(models: list[str], options: CalibrateOptions) -> list[_Model]:
    """Read every model, choose its slice, find or export the file timed whole; one line on any error."""
    if options.context not in (AUTO, ALONE, COLD):
        raise ProfilerError(f"--context {options.context}: calibrate reads the slices predict reads "
                            f"({AUTO}, {ALONE} or {COLD})")
    if options.rounds < 1:
        raise ProfilerError(f"--rounds: expected at least 1, got {options.rounds}")
    checked, seen = [], {}
    for model in models:
        graph = load_model(model, options.input_shape)
        keys = [layer.key for layer in map_graph(graph).layers]
        if not keys:
            raise ProfilerError(f"{model}: no operator to time (the graph is empty after folding)")
        fingerprint = model_fingerprint(keys)
        if fingerprint in seen:
            raise ProfilerError(f"{model}: the same network as {seen[fingerprint]} (same LUT keys): give it once")
        seen[fingerprint] = model
        context, _ = choose_context(options.context, options.runtime, graph.weight_bytes)
        slice_runtime(options.runtime, options.threads, delegate=options.delegate, context=context)  # its errors first
        checked.append(_Model(model, keys, context, _whole_file(model, options)))
    return checked


def _whole_file(model: str, options: CalibrateOptions) -> Path:
    """The file the runtime times whole: the user's file itself, or the factory exported."""
    if not is_factory(model):
        try:
            check_model_file(model, options.runtime)
        except ProfilerError as error:
            raise ProfilerError(f"{error} (calibrate times the model file itself; a package.module:factory "
                                "is exported to either runtime)") from None
        return Path(model)
    name = model.replace(":", "-").replace(".", "_")
    shape = "x".join(map(str, options.input_shape))
    path = Path(options.cache_dir) / options.runtime / "whole" / f"{name}-{shape}{EXTENSIONS[options.runtime]}"
    module = call_factory(model)
    torch.manual_seed(0)
    randomize_batchnorm(module)
    try:
        export_module(module, (torch.randn(*options.input_shape),), options.runtime, path, image_out=False)
    except Exception as exc:  # noqa: BLE001 - a model the converter cannot take at this shape
        raise ProfilerError(f"{model}: cannot export to {options.runtime} at input shape {options.input_shape}: "
                            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    return path


def _table(db_path: Path, device_id: str, rt: RuntimeSpec) -> LatencyTable:
    try:
        return LatencyTable.load(db_path, device_id, rt.name, rt.options)
    except UnknownSlice as error:
        raise ProfilerError(f"{error}; fill it with lutbuild predict MODEL --measure-missing") from None


def _measure(agent, db_path: Path, device_id: str, checked: list[_Model], specs: dict[str, RuntimeSpec],
             options: CalibrateOptions) -> list[_Measured]:
    """Per slice: export what is missing, then `rounds` rounds of one process per model."""
    settings = benchmark_settings(options.runtime, options.threads, options.repeats, options.delegate)
    bar = tqdm(total=len(checked) * options.rounds, desc=f"calibrate {options.runtime}", unit="process",
               file=sys.stderr, disable=not options.progress, dynamic_ncols=True)
    out = []
    try:
        for context, rt in specs.items():
            mine = [m for m in checked if m.context == context]
            bar.set_postfix_str(f"exporting layer files ({context})")
            with ModelCache(options.cache_dir, options.runtime, options.jobs) as cache:
                groups = [_group(m, cache, options) for m in mine]
                extra = [cache.overhead()]
            db = open_lut_for_reading(db_path)
            try:
                reference = calibrate.load_reference(db, device_id, options.runtime, rt.options, None)
            finally:
                db.close()
            gate = None
            if reference.layer is not None and reference.value_ms:
                with ModelCache(options.cache_dir, options.runtime, options.jobs, context=context) as cache:
                    extra += cache.layers([reference.layer])
                gate = reference
            bar.set_postfix_str(f"benchmarking ({context})")
            timings = time_rounds(agent, groups, extra, [[i] for i in range(len(groups))], settings, options.rounds,
                                  bar, gate, same_batch=True, remeasure=options.remeasure)
            for m, same in zip(mine, timings.same_batch()):
                out.append(_Measured(m, ModelRatio.of(m.name, model_fingerprint(m.keys), same),
                                     statistics.median(same.round_whole_ms), same.layers_now_ms))
    finally:
        bar.close()
    return out


def _group(m: _Model, cache: ModelCache, options: CalibrateOptions) -> Group:
    """The whole model and the file of every row its prediction sums (the cold files in the cold slice)."""
    hot = layer_files(m.keys, options.runtime, cache)
    if m.context != COLD:
        return Group(m.whole, tuple(hot))
    files, copies = cold_layer_files(m.keys, options.runtime, options.cache_dir, hot)
    return Group(m.whole, tuple(files), tuple(copies))
