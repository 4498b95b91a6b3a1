"""`lutbuild predict` against public architectures this project did not define (issue 11).

    .venv/bin/pip install --no-deps geffnet          # NOT a dependency of the package or its tests
    .venv/bin/python -m benchmarks.bench_predict --quick     # mobilenetv3_large_100 at 128 px, TFLite
    .venv/bin/python -m benchmarks.bench_predict             # the six geffnet models at 224 px, TFLite + ONNX
    .venv/bin/python -m benchmarks.bench_predict --same-batch   # + the model's LUT layer files in its batches
    .venv/bin/python -m benchmarks.bench_predict --runtimes tflite --contexts alone,cold --workdir /tmp/bp  # fresh LUT

For each model, runtime and layer context (`--contexts`: "alone" rows, and "cold" =
weights-cold rows, TFLite only): `predict_model` with `measure_missing` on this host
(`--device local`, `--passes` passes per key, each key keeping its lowest-p10 row:
`profiler/passes.py`) fills a benchmark LUT (`<workdir>/lut.sqlite`, one slice per context,
resumable), then the whole model is exported (the profiler's exporter, same I/O convention as
the LUT rows) and measured on this host `--rounds` times, once per model and runtime (each
round gated to the LUT's fast state like a build batch, `--remeasure`: `WholeModelRounds`), and
compared with each context's prediction three times:

- medians: the LUT's median rows summed (+ the slice's overhead) against the whole model's
  median over rounds of its per-round medians (raw: it includes the per-invoke overhead the
  prediction adds once);
- fast state: the LUT's p10 rows summed (`LatencyTable.load(statistic="p10")`; its overhead
  is the slice's one `overhead` calibration, the median of the per-batch overhead medians,
  whatever the statistic: a p10 row is the layer's p10 minus its batch's overhead median)
  against the whole model's p10, median over rounds of the per-round p10: the rule of
  `lutbuild verify`'s "LUT p10 vs network p10" line (`profiler/verify.py`, `_fast_state`).
  This host's core has a ~1.4x slow state lasting seconds to minutes (docs/predict.md, "Why
  the LUT sum misses"): a median takes whichever state held most runs, a p10 the fast one;
- fastest round: both predictions against the model's round with the lowest p10, kept whole
  (its median and p10), as a LUT row keeps its lowest-p10 pass;
- composition (with `--same-batch`): after the rounds, each model's ratio whole / layers now
  (its own context's layer files, the same SameBatch rule) is stored in its slice's composition
  calibration (`profiler.composition.store_ratios`, what `lutbuild calibrate` stores from the
  same protocol: one gated process per model and round, the model beside its layer files), and
  every prediction is `lutbuild predict`'s answer: the LUT sum times the median ratio of the
  OTHER models (`predict` holds the predicted model out itself). The plain LUT sum is kept
  beside it (`lut_sum_ms`, the table's `LUT sum` column).

`--interleave` spreads both sides over the same minutes: sweep k = pass k of every model's keys,
then round k of every model (`bench_interleaved`); without it each model is filled, then
measured, before the next.

With `--same-batch` the model's own LUT layer files (alone context) are timed in the same
runner batches, and their sum is a second, same-state reference, for the medians and for
the p10s (the paired rule of `verify --same-batch`: median over rounds of layers-now /
whole, `profiler/same_batch.py`, `verify_report.same_batch_stats`). Reported: predicted and
measured ms, both errors, the share of the predicted latency from generic keys, and the wall
time of a predict with the LUT warm (from the exported .onnx file, in process; the CLI adds
~3-8 s of Python imports). Writes `benchmarks/results/bench_predict-<date>.json` (machine,
versions, settings and the runner settings of the rounds, the load average before and after
each model's measurement and at each round, the p10 breakdown). Timings on a shared host are
noisy: the figures say so with their load average.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/bench_predict.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.bench_lut import machine, versions  # noqa: E402
from device_agents.contract import BenchmarkSettings  # noqa: E402
from device_agents.device_state import others_busy  # noqa: E402
from profiler import calibrate  # noqa: E402
from profiler.agents import open_agent  # noqa: E402
from profiler.build_types import BuildOptions  # noqa: E402
from profiler.measure import measure_batch  # noqa: E402
from lut_db.schema import open_lut_for_reading, open_lut_for_writing  # noqa: E402
from profiler.composition import ModelRatio, model_fingerprint, store_ratios  # noqa: E402
from profiler.export import ModelCache, export_module, randomize_batchnorm  # noqa: E402
from profiler.graph_keys import map_graph  # noqa: E402
from profiler.layer_files import cold_layer_files, layer_files  # noqa: E402
from profiler.model_graph import load_model  # noqa: E402
from profiler.predict_model import AUTO, PredictOptions, choose_context, predict_model  # noqa: E402
from profiler.runtimes import ALONE, COLD, benchmark_settings, slice_runtime  # noqa: E402
from profiler.same_batch import Group, SameBatch, layers_now_ms, plan_batch  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ("mobilenetv3_large_100", "efficientnet_lite0", "mixnet_s", "mnasnet_a1", "fbnetc_100", "spnasnet_100")


def native_activations() -> None:
    """geffnet's defaults are memory-efficient autograd functions (no ONNX export) or
    hand-written `x * relu6(x + 3) / 6`; build the models with PyTorch's own hard-swish and
    hard-sigmoid (the same architecture, the ops torchvision and timm use today)."""
    # why: optional, benchmark only (pip install --no-deps geffnet)
    from geffnet import config
    from geffnet.activations import add_override_act_fn, add_override_act_layer

    config.set_exportable(True)
    add_override_act_layer("hard_swish", torch.nn.Hardswish)
    add_override_act_layer("hard_sigmoid", torch.nn.Hardsigmoid)
    add_override_act_fn("hard_swish", torch.nn.functional.hardswish)
    add_override_act_fn("hard_sigmoid", torch.nn.functional.hardsigmoid)


def lut_reference(db_path: Path, device_id: str, runtime: str) -> calibrate.Reference | None:
    """The hot slice's drift reference (its layer and its fast-state anchor, ms), None before a build."""
    db = open_lut_for_reading(db_path)
    try:
        reference = calibrate.load_reference(db, device_id, runtime, slice_runtime(runtime).options, None)
    finally:
        db.close()
    return reference if reference.value_ms is not None else None


def round_settings(runtime: str) -> BenchmarkSettings:
    """The runner settings of every whole-model round: the LUT's defaults, 1 thread, 3 passes."""
    return benchmark_settings(runtime, threads=1, repeats=3)


class WholeModelRounds:
    """The whole model on this host, one benchmark process per `time_round` (raw ms).

    With `layer_files` (the model's own LUT layer models, one per layer of the breakdown,
    repeats allowed), each process times them in the SAME batch as the whole model
    (interleaved passes), and `layers_now_ms` is their sum (each minus the batch's overhead,
    as a LUT row; `profiler.same_batch`, which `lutbuild verify --same-batch` uses too): a
    prediction measured under the host's state of that moment; `layers_now_p10_ms` the same
    from their p10s (less the batch's overhead median, as a p10 row is stored, as verify
    does). This VM's cores switch for seconds to minutes into a state ~1.4x slower
    (docs/predict.md, "Why the LUT sum misses"), so a whole model measured minutes after its
    LUT rows can be in the other state; the same-batch ratio is not.

    `cold` (the weights-cold files of the same lines and their copies, `--contexts cold`): timed
    in the same batches too, their per-copy sum is `cold_layers_now_ms` / `..._p10_ms`. Every
    round also records how busy the other cores were (`others_busy`, 0..1; docs/predict.md,
    "Co-runners"), the load average and the time it started.

    `lut`: its hot slice's reference layer (`lut_reference`, with its fast-state anchor) is timed in every
    round, second after the overhead model, as in a build batch; a round whose reference runs
    more than `BuildOptions.drift_pct` slower than the anchor is measured again, at most
    `remeasure` times, keeping the attempt whose reference ran fastest, and each attempt waits
    (at most `state_wait_s`) for the reference alone to run in that state: the build's own rule
    (`profiler.measure.measure_batch`), so that the model is measured in the state the LUT
    describes. Each round records its attempts, its reference's drift and the median of each
    of the model's passes (a switch of the host's state within the process shows there).

    The files and the batch layout are made once; rounds can then be spread in time
    (`--interleave`: one round per sweep over the models)."""

    def __init__(self, model_path: Path, runtime: str, cache: ModelCache, layer_files=(),
                 cold: tuple[list[Path], list[int]] | None = None, lut: Path | None = None,
                 remeasure: int = 0, state_wait_s: float = BuildOptions.state_wait_s):
        self.runtime = runtime
        cold_files, self.copies = cold or ([], [])
        n = len(layer_files)
        self.gate = BuildOptions(max_remeasure=remeasure, settle_s=0, state_wait_s=state_wait_s)
        self.settings = round_settings(runtime)
        agent = open_agent("local", runtime)
        try:
            info = agent.info()
        finally:
            agent.close()
        self.core = info.cpu_core  # 1 thread: the core the benchmark is pinned to
        self.lut, self.device_id = lut, info.device_id
        self.reference = lut_reference(lut, info.device_id, runtime) if lut else None
        extra = [cache.overhead(), *(cache.layers([self.reference.layer]) if self.reference else [])]
        self.layout = plan_batch(extra, [Group(model_path, (*layer_files, *cold_files))])
        self.hot_at, self.cold_at = self.layout.layers_at[0][:n], self.layout.layers_at[0][n:]
        self.rounds: dict[str, list] = {k: [] for k in (
            "medians", "p10s", "covs", "sums", "sums_p10", "terms_p10", "busy", "cold_sums", "cold_sums_p10",
            "attempts", "drifts", "anchors", "pass_medians", "started", "load")}

    def time_round(self) -> None:
        """One benchmark process (gated when the LUT has a reference), its figures appended."""
        r, at = self.rounds, self.layout.model_at[0]
        r["started"].append(datetime.now(timezone.utc).isoformat(timespec="seconds"))
        r["load"].append(os.getloadavg())
        agent = open_agent("local", self.runtime)
        try:
            if self.reference is not None:  # the anchor as of now: passes between rounds (--interleave) move it
                now = lut_reference(self.lut, self.device_id, self.runtime)
                if now is not None and now.layer == self.reference.layer:  # the batch holds that layer's file
                    self.reference = now
                r["anchors"].append(self.reference.value_ms)
            if self.reference is None:
                result = agent.benchmark(self.layout.files, self.settings)
            else:
                kept = measure_batch(agent, self.layout.files, self.settings, self.reference, self.gate,
                                     lambda line: None)
                result = kept.result
                r["attempts"].append(kept.attempts)
                r["drifts"].append(kept.drift_pct)
        finally:
            agent.close()
        self.load_end = os.getloadavg()
        r["busy"].append(others_busy(result.state_before, result.state_after, self.core))
        batch = [t.median_ms for t in result.timings]
        batch_p10 = [t.p10_ms for t in result.timings]
        r["medians"].append(batch[at])
        r["p10s"].append(batch_p10[at])
        r["covs"].append(result.timings[at].cov)
        r["pass_medians"].append(list(result.timings[at].pass_medians_ms))
        if self.hot_at:
            r["sums"].append(layers_now_ms(batch, self.hot_at, batch[0]))
            r["sums_p10"].append(layers_now_ms(batch_p10, self.hot_at, batch[0]))
            r["terms_p10"].append([batch_p10[p] - batch[0] for p in self.hot_at])
        if self.cold_at:
            r["cold_sums"].append(layers_now_ms(batch, self.cold_at, batch[0], self.copies))
            r["cold_sums_p10"].append(layers_now_ms(batch_p10, self.cold_at, batch[0], self.copies))

    def same_batch(self, cold: bool = False) -> SameBatch | None:
        """The model against its hot (or, `cold`, its weights-cold) layer files, per round; None
        when they were not timed."""
        r = self.rounds
        sums, sums_p10 = (r["cold_sums"], r["cold_sums_p10"]) if cold else (r["sums"], r["sums_p10"])
        return SameBatch(r["medians"], sums, r["p10s"], sums_p10) if sums else None

    def summary(self) -> dict:
        """The median of the per-round medians, and the fast-state figure, the median of the
        per-round p10s (the rule of `verify`'s fast-state line, `profiler/verify.py`
        `_fast_state`); and the round with the lowest p10 kept whole (`fastest_round`, its
        median and p10): the rule by which a LUT row keeps one of its passes
        (`profiler/passes.py`), so that with rows measured in `--passes` spread over the same
        sweeps (`--interleave`) both sides take the same statistic of the same time window."""
        r = self.rounds
        medians, p10s = r["medians"], r["p10s"]
        fastest = min(range(len(p10s)), key=p10s.__getitem__)
        out = {"median_ms": statistics.median(medians), "round_medians_ms": medians,
               "p10_ms": statistics.median(p10s), "round_p10_ms": p10s, "others_busy": r["busy"],
               "fastest_round": fastest, "fastest_round_median_ms": medians[fastest],
               "fastest_round_p10_ms": p10s[fastest],
               "cov_between_rounds": statistics.pstdev(medians) / statistics.mean(medians), "cov_within": r["covs"],
               "round_pass_medians_ms": r["pass_medians"], "round_started": r["started"], "round_load": r["load"],
               "started": r["started"][0], "load_start": r["load"][0], "load_end": self.load_end}
        if self.reference is not None:
            out |= {"reference_anchor_ms": self.reference.value_ms, "round_reference_anchor_ms": r["anchors"],
                    "round_attempts": r["attempts"],
                    "round_reference_drift_pct": r["drifts"]}
        sums, sums_p10 = r["sums"], r["sums_p10"]
        if same := self.same_batch():
            out |= {"layers_now_ms": same.layers_now_ms, "round_layers_now_ms": sums,
                    "round_ratio_whole_to_layers": [m / s for m, s in zip(medians, sums)],
                    "error_vs_layers_now_pct": same.error_pct,
                    "layers_now_p10_ms": statistics.median(sums_p10), "round_layers_now_p10_ms": sums_p10,
                    # per term of the breakdown: its p10 now less the batch's overhead (a p10 row), median over rounds
                    "terms_now_p10_ms": [statistics.median(t) for t in zip(*r["terms_p10"])],
                    # verify_report.same_batch_stats' paired p10 rule: median over rounds of layers / whole
                    "error_vs_layers_now_p10_pct": same.error_p10_pct}
        cold_sums, cold_sums_p10 = r["cold_sums"], r["cold_sums_p10"]
        if cold := self.same_batch(cold=True):
            out |= {"cold_layers_now_ms": cold.layers_now_ms, "round_cold_layers_now_ms": cold_sums,
                    "round_cold_layers_now_p10_ms": cold_sums_p10,
                    "error_vs_cold_layers_now_pct": cold.error_pct,
                    "error_vs_cold_layers_now_p10_pct": cold.error_p10_pct}
        return out


def measure_whole(model_path: Path, runtime: str, cache: ModelCache, rounds: int, layer_files=(),
                  cold: tuple[list[Path], list[int]] | None = None, lut: Path | None = None,
                  remeasure: int = 0, state_wait_s: float = BuildOptions.state_wait_s) -> dict:
    """`rounds` benchmark processes of the whole model back to back (`WholeModelRounds`), summarized."""
    whole = WholeModelRounds(model_path, runtime, cache, layer_files, cold, lut, remeasure, state_wait_s)
    for _ in range(rounds):
        whole.time_round()
    return whole.summary()


def model_keys(model_path: Path) -> list:
    """The LUT keys of `model_path`'s breakdown, in order."""
    return [m.key for m in map_graph(load_model(str(model_path))).layers]


def same_batch_files(model_path: Path, runtime: str, cache: ModelCache) -> list[Path]:
    """The LUT layer file of every line of `model_path`'s breakdown, in order (`layer_files.layer_files`)."""
    return layer_files(model_keys(model_path), runtime, cache)


def contexts_for(runtime: str, contexts: list[str]) -> list[str]:
    """The contexts of `--contexts` that `runtime` has ("cold": TFLite only, a note otherwise)."""
    if runtime != "tflite" and COLD in contexts:
        print(f"bench_predict: context {COLD!r} is TFLite only: skipped for {runtime}")
    return [c for c in contexts if runtime == "tflite" or c != COLD]


def fill(name: str, runtime: str, shape: tuple, context: str, args, passes: int | None = None) -> tuple[int, float]:
    """`predict --measure-missing --passes N` of the geffnet factory into `context`'s slice (N:
    `passes`, default `--passes`; a key whose row has seen fewer gets its further passes):
    (keys measured now, seconds)."""
    work = Path(args.workdir)
    options = PredictOptions(device="local", runtime=runtime, input_shape=shape, measure_missing=True,
                             passes=args.passes if passes is None else passes, context=context,
                             cache_dir=work / "cache", progress=not args.quiet)
    t0 = time.monotonic()
    filled = predict_model(f"geffnet:{name}", work / "lut.sqlite", options)
    return filled.measured_now, time.monotonic() - t0


def warm_predict(onnx_path: Path, runtime: str, context: str, statistic: str, args):
    """A predict with the LUT warm, from the model's .onnx file: (report, seconds)."""
    work = Path(args.workdir)
    options = PredictOptions(device="local", runtime=runtime, cache_dir=work / "cache", progress=False,
                             statistic=statistic, context=context)
    t0 = time.monotonic()
    report = predict_model(str(onnx_path), work / "lut.sqlite", options)
    return report, time.monotonic() - t0


def top_lines(report, n: int = 8) -> list[dict]:
    """The `n` costliest keys of a breakdown (ms summed over the lines that share a key)."""
    per_key: dict[str, float] = {}
    for row in report.layers:
        per_key[row.key] = per_key.get(row.key, 0.0) + row.ms
    return [{"key": k, "ms": ms} for k, ms in sorted(per_key.items(), key=lambda kv: -kv[1])[:n]]


def row_drift(report, terms_now_p10_ms: list[float], n: int = 6) -> list[dict]:
    """Per key, the LUT's p10 row against the same layer file's p10 timed now beside the whole
    model (ms summed over the key's lines): the `n` keys that move the fast-state error most.
    The fast-state error = (LUT rows vs layers now, this) + (layers now vs the whole model)."""
    per_key: dict[str, list[float]] = {}
    lines = [line for line in report.layers if line.source not in ("overhead", "composition")]  # the rows
    for line, now in zip(lines, terms_now_p10_ms):
        row = per_key.setdefault(line.key, [0.0, 0.0, 0])
        row[0], row[1], row[2] = row[0] + line.ms, row[1] + now, row[2] + 1
    ranked = sorted(per_key.items(), key=lambda kv: -abs(kv[1][0] - kv[1][1]))[:n]
    return [{"key": k, "lines": c, "lut_p10_ms": lut, "now_p10_ms": now, "lut_minus_now_ms": lut - now}
            for k, (lut, now, c) in ranked]


@dataclass
class ModelRun:
    """One model and runtime of the benchmark: its fills per context, its files, its rounds."""

    name: str
    runtime: str
    px: int
    contexts: list[str]
    filled: dict[str, list] = field(default_factory=dict)  # context -> [keys measured, seconds]
    onnx_path: Path | None = None
    path: Path | None = None  # the file measured: the .onnx, or the .tflite converted from the same module
    keys: list = field(default_factory=list)  # the LUT keys of its breakdown (`model_keys`), read once on export
    whole: WholeModelRounds | None = None

    def fill(self, args, passes: int | None = None) -> None:
        """`fill` of every context (`passes`: up to that pass; default `--passes`), times added up."""
        for c in self.contexts:
            n, s = fill(self.name, self.runtime, (1, 3, self.px, self.px), c, args, passes)
            keys, seconds = self.filled.get(c, [0, 0.0])
            self.filled[c] = [max(keys, n), seconds + s]

    def time_round(self, args) -> None:
        """One benchmark process of the whole model (its files and batch made on the first call)."""
        if self.whole is None:
            self.export(args)
            work = Path(args.workdir)
            with ModelCache(work / "cache", self.runtime, jobs=1) as cache:
                hot = layer_files(self.keys, self.runtime, cache) if args.same_batch else []
                cold = cold_layer_files(self.keys, self.runtime, work / "cache", hot) \
                    if args.same_batch and COLD in self.contexts else None
                self.whole = WholeModelRounds(self.path, self.runtime, cache, hot, cold, work / "lut.sqlite",
                                              args.remeasure)
        self.whole.time_round()

    def export(self, args) -> None:
        """The geffnet model exported (the profiler's exporter, the LUT rows' I/O convention)."""
        import geffnet  # why: optional, benchmark only (pip install --no-deps geffnet); never a dependency

        torch.manual_seed(0)
        model = getattr(geffnet, self.name)().eval()
        randomize_batchnorm(model)  # as every LUT layer is exported: a BatchNorm of a trained network never folds away
        files, shape = Path(args.workdir) / "models", (1, 3, self.px, self.px)
        stem = f"{self.name}-{self.px}"
        self.onnx_path = export_module(model, (torch.randn(*shape),), "onnx", files / f"{stem}.onnx", image_out=False)
        self.path = self.onnx_path if self.runtime == "onnx" else export_module(
            model, (torch.randn(*shape),), "tflite", files / f"{stem}.tflite", image_out=False)
        self.keys = model_keys(self.onnx_path)

    def ratios(self) -> dict[str, ModelRatio]:
        """Context -> the model's composition ratio from its rounds (`--same-batch`; none without)."""
        if self.whole is None:
            return {}
        fingerprint = model_fingerprint(self.keys)
        out = {}
        for c in self.contexts:
            if (same := self.whole.same_batch(cold=c == COLD)) is not None:
                out[c] = ModelRatio.of(f"geffnet:{self.name}", fingerprint, same)
        return out

    def rows(self, args) -> list[dict]:
        """One row per context: its predictions (median and p10) against ONE measurement of the model."""
        warm = {c: warm_predict(self.onnx_path, self.runtime, c, "median", args) for c in self.contexts}
        fast = {c: warm_predict(self.onnx_path, self.runtime, c, "p10", args)[0] for c in self.contexts}
        measured = self.whole.summary()
        rows = []
        for c in self.contexts:
            report, warm_s = warm[c]
            rows.append({
                "model": self.name, "runtime": self.runtime, "context": c, "px": self.px,
                "predicted_ms": report.total_ms, "measured_ms": measured["median_ms"],
                "error_pct": 100 * (report.total_ms / measured["median_ms"] - 1),
                "predicted_p10_ms": fast[c].total_ms, "measured_p10_ms": measured["p10_ms"],
                "fast_state_error_pct": 100 * (fast[c].total_ms / measured["p10_ms"] - 1),
                # predict's answer = the LUT sum x the composition factor learned on the other models
                "composition_factor": report.composition_factor, "composition_note": report.composition_note,
                "composition_factor_p10": fast[c].composition_factor,
                "lut_sum_ms": report.lut_sum_ms,
                "lut_sum_error_pct": 100 * (report.lut_sum_ms / measured["median_ms"] - 1),
                "lut_sum_p10_ms": fast[c].lut_sum_ms,
                "lut_sum_fast_state_error_pct": 100 * (fast[c].lut_sum_ms / measured["p10_ms"] - 1),
                # the round with the lowest p10 kept whole, as a LUT row keeps its lowest-p10 pass
                "fastest_round_error_pct": 100 * (report.total_ms / measured["fastest_round_median_ms"] - 1),
                "fastest_round_fast_state_error_pct": 100 * (fast[c].total_ms / measured["fastest_round_p10_ms"] - 1),
                "generic_share": report.generic_share, "layers": len(report.layers) - 1, "counts": report.counts(),
                "keys_measured_now": self.filled[c][0], "fill_s": self.filled[c][1], "warm_predict_s": warm_s,
                "weights_mib": report.weights_mib, "top_keys_p10": top_lines(fast[c]),
                "default_context": choose_context(AUTO, self.runtime, round(report.weights_mib * 2**20))[0] == c,
                **({"row_drift_p10": row_drift(fast[c], measured["terms_now_p10_ms"])}
                   if c == ALONE and "terms_now_p10_ms" in measured else {}),
                "measured": measured})
        return rows


def same_batch_prefix(context: str) -> str:
    """The measured fields of a row's same-batch errors: against its own context's layer files."""
    return "error_vs_cold_layers_now" if context == COLD else "error_vs_layers_now"


def store_composition(runs: list[ModelRun], args) -> None:
    """Each model's ratio whole / layers now into its slice's composition calibration (what
    `lutbuild calibrate` stores), before the predictions: `predict` then applies to each model
    the median ratio of the others."""
    db = open_lut_for_writing(Path(args.workdir) / "lut.sqlite")
    try:
        for run in runs:
            for context, ratio in run.ratios().items():
                options = slice_runtime(run.runtime, context=context).options
                store_ratios(db, run.whole.device_id, run.runtime, options, [ratio])
    finally:
        db.close()


def bench_model(run: ModelRun, args) -> None:
    """Fill the LUT (every pass), then the whole model's rounds back to back."""
    run.fill(args)
    for _ in range(args.rounds):
        run.time_round(args)


def bench_interleaved(runs: list[ModelRun], args) -> None:
    """`--interleave`: sweep k = pass k of every model's keys, then round k of every model, for k
    = 1 .. max(--passes, --rounds). A key's passes and a model's rounds are then spread over the
    same minutes (one sweep over six models: ~5-10 min), so that the lowest-p10 pass a row keeps
    and the lowest-p10 round of the model are taken from the same host states."""
    for k in range(1, max(args.passes, args.rounds) + 1):
        if k <= args.passes:
            for run in runs:
                run.fill(args, passes=k)
        if k <= args.rounds:
            for run in runs:
                run.time_round(args)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="mobilenetv3_large_100 at 128 px, TFLite only")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--runtimes", default="tflite,onnx")
    parser.add_argument("--px", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", default=str(Path("~/.cache/netadaptv2/bench_predict").expanduser()),
                        help="benchmark LUT and exported models (resumable)")
    parser.add_argument("--passes", type=int, default=2,
                        help="--measure-missing passes per key, each keeps its lowest-p10 row (a key whose "
                             "row has seen fewer passes gets its further ones; a fresh --workdir for new rows)")
    parser.add_argument("--contexts", default=ALONE,
                        help=f"layer contexts, comma-separated: {ALONE}[,{COLD}] ({COLD}: TFLite only)")
    parser.add_argument("--remeasure", type=int, default=2,
                        help="a round of the whole model whose reference layer runs more than the build's "
                             "drift_pct slower than the LUT's fast state is measured again, at most this many "
                             "times (0: the reference is timed and its drift recorded, nothing re-measured)")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--same-batch", action="store_true",
                        help="also time the model's LUT layer files in the whole model's batches: the "
                             "error against layers measured under the same host state")
    parser.add_argument("--interleave", action="store_true",
                        help="sweep k = pass k of every model's keys, then round k of every model: a key's "
                             "passes and a model's rounds spread over the same minutes (bench_interleaved)")
    args = parser.parse_args(argv)
    if args.passes < 1:
        parser.error(f"--passes: expected an integer >= 1, got {args.passes}")
    if args.rounds < 1:
        parser.error(f"--rounds: expected an integer >= 1, got {args.rounds}")
    if args.remeasure < 0:
        parser.error(f"--remeasure: expected an integer >= 0, got {args.remeasure}")
    contexts = args.contexts.split(",")
    if unknown := [c for c in contexts if c not in (ALONE, COLD)]:
        parser.error(f"--contexts: unknown context {unknown[0]!r}, expected {ALONE} or {COLD}")
    models, runtimes, px = args.models.split(","), args.runtimes.split(","), args.px
    if args.quick:
        models, runtimes, px = ["mobilenetv3_large_100"], ["tflite"], 128
    try:
        import geffnet  # noqa: F401  # why: optional, checked before any work
    except ImportError:
        sys.exit("bench_predict: needs geffnet: .venv/bin/pip install --no-deps geffnet (never torchvision)")
    native_activations()
    runs = [ModelRun(m, r, px, cs) for m in models for r in runtimes if (cs := contexts_for(r, contexts))]
    if args.interleave:
        bench_interleaved(runs, args)
    else:
        for run in runs:
            bench_model(run, args)
    store_composition(runs, args)  # before any prediction: each is predict's answer, composition included
    rows = [row for run in runs for row in run.rows(args)]
    print(f"\n{'model':24} {'runtime':7} {'context':7} {'px':>4} {'pred med':>8} {'meas med':>8} {'error':>7} "
          f"{'pred p10':>8} {'meas p10':>8} {'fast err':>8} {'fastest':>15} {'generic':>7} {'warm s':>6} "
          f"{'same-batch':>10} {'same p10':>8} {'comp':>5} {'LUT sum':>13} {'busy':>9}")
    for r in rows:
        m = r["measured"]
        prefix = same_batch_prefix(r["context"])
        same = "-" if f"{prefix}_pct" not in m else f"{m[f'{prefix}_pct']:+.1f}%"
        same_p10 = "-" if f"{prefix}_p10_pct" not in m else f"{m[f'{prefix}_p10_pct']:+.1f}%"
        busy = [b for b in m["others_busy"] if b is not None]
        load = f"{100 * max(busy):.0f}%" if busy else "-"
        context = r["context"] + ("*" if r["default_context"] else "")
        fastest = f"{r['fastest_round_error_pct']:+.1f}/{r['fastest_round_fast_state_error_pct']:+.1f}%"
        lut_sum = f"{r['lut_sum_error_pct']:+.1f}/{r['lut_sum_fast_state_error_pct']:+.1f}%"
        comp = f"{r['composition_factor']:.3f}" if r["composition_factor"] != 1.0 else "-"
        print(f"{r['model']:24} {r['runtime']:7} {context:7} {r['px']:>4} {r['predicted_ms']:>8.3f} "
              f"{r['measured_ms']:>8.3f} {r['error_pct']:>+6.1f}% {r['predicted_p10_ms']:>8.3f} "
              f"{r['measured_p10_ms']:>8.3f} {r['fast_state_error_pct']:>+7.1f}% {fastest:>15} "
              f"{100 * r['generic_share']:>6.1f}% "
              f"{r['warm_predict_s']:>6.2f} {same:>10} {same_p10:>8} {comp:>5} {lut_sum:>13} {load:>9}")
    print("* the context `lutbuild predict` reads by default (--context auto); fastest: the errors (median / p10) "
          "against the model's round with the lowest p10; pred: predict's answer, the LUT sum times comp (the "
          "composition factor learned on the OTHER models' same-batch ratios, --same-batch); LUT sum: the errors "
          "(median / p10) of the sum alone")
    stamp = datetime.now(timezone.utc)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"bench_predict-{'quick-' if args.quick else ''}{stamp:%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps({"date": stamp.isoformat(timespec="seconds"), "machine": machine(),
                               "versions": versions(), "settings": vars(args),
                               "runner_settings": {r: asdict(round_settings(r)) for r in runtimes},
                               "rows": rows,
                               "note": "shared CPU: each row's measured.load_start/load_end (load average)"},
                              indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
