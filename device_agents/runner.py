#!/usr/bin/env python3
"""Time model files on the machine this script runs on; one JSON line per model.

STANDALONE: stdlib + numpy + one runtime (LiteRT/TFLite or ONNX Runtime). It imports
nothing else from netadaptv2, so the ADB agent can push this single file to a board or a
Termux phone and run it there, and the local agent runs it in a fresh process per batch.

Usage::

    python runner.py --runtime tflite|onnx [--threads 1] [--delegate xnnpack|none]
        [--ort-opt all|extended|basic]
        [--warmup 10] [--min-runs 50] [--max-runs 1000] [--min-seconds 0.05]
        [--repeats 1] [--fast-passes 10] [--cpus 3] [--seed 0] --out results.jsonl
        [--list-file models.txt] [--op-profile] [MODEL ...]

Output (JSON Lines, flushed after every line, so a partial file is usable):

* line 1, the header: ``{"header": true, "runtime": "tflite", "runtime_version": ...,
  "python": ..., "numpy": ..., "threads": 1, "delegate": "xnnpack", "cpus": [3] or null,
  ONNX only: "ort_opt": "all" | "extended" | "basic" (the session's graph optimization level),
  "protocol": {...the timing options...}}``
* one line per model, in the order the models were given:
  ``{"index": 0, "name": "<basename>", "n": 50, "median_ms": ..., "mean_ms": ...,
  "p10_ms": ..., "p90_ms": ..., "std_ms": ..., "min_ms": ..., "max_ms": ...}``
  or, when that model could not be loaded or run, ``{"index": 0, "name": ...,
  "error": "<one line>"}`` (the batch goes on).
* with ``--op-profile``, a model's line also holds ``"op_profile": {"source": "onnxruntime",
  "runs": N, "statistic": "median", "ops": [{"name": ..., "op_type": ..., "ms": ...,
  "count": ...}, ...]}`` (ms per inference, calls per inference, over the N timed runs), or ``"op_profile_unavailable":
  "<why>"`` where the runtime has no per-operator profiler (LiteRT's Python interpreter), or
  ``"op_profile_error": "<one line>"``; the header says ``"op_profile": true``.

Timing protocol (all times in ms in the output, measured in ns):

1. Every model of the batch is loaded once (one interpreter / session each) and given
   random float32 inputs of its input shapes (dynamic dims -> 1; integer inputs get
   zeros). Inputs are set once; only ``invoke()`` / ``run()`` is timed.
2. A pass over one model: ``warmup`` untimed runs (first runs pay allocation, weight
   packing and cache misses), then runs timed one by one with ``time.perf_counter_ns``
   until ``n >= min_runs`` and ``elapsed >= min_seconds``, capped at ``max_runs``
   (the same loop condition as TFLite's benchmark_model, so tiny layers get many runs).
   The garbage collector is off while timing.
3. ``--repeats R``: the whole batch is passed over R times, interleaved (A, B, C, A, B,
   C, ...), and the per-run timings of each model are pooled over its R passes. Slow drift
   of the machine (frequency, thermal, background load) then spreads over all models of the
   batch instead of biasing whichever model happened to run during it. Each pass does its
   own warm-up, because the other models evicted the caches in between.
4. With more than one pass, the model's line also holds ``"pass_medians_ms"`` (each pass's
   median, in order): a switch of the machine's state within the batch shows there.
   ``--fast-passes PCT`` pools only the passes whose median is within PCT % of the model's
   fastest pass (``fast_passes``; the line then says ``"passes_kept"``); without it (the
   profiler's default, docs/lut.md "Noise protocol" says why) every pass is pooled.
5. Statistics of the pooled runs: median (the LUT figure), mean, p10/p90 (numpy's linear
   interpolation), population std, min, max.

Operator profile (``--op-profile``, ONNX Runtime): the session is created with
``SessionOptions.enable_profiling``, the model is timed exactly as above, then the profile
JSON is read: the ``model_run`` events of the timed runs (not the warm-up runs, nor the runs
of passes ``--fast-passes`` left out; identified by their order) give time windows, the
``Node`` events ``<node>_kernel_time`` inside them are summed per node and run
(``args.op_name`` is its type), and a node's figure is the median of its per-run times
(``"statistic": "median"``, like the model's: a mean would carry the rare slow runs of a busy
machine into every operator). The profiler's bookkeeping adds a little time to every operator,
so the model's times with ``--op-profile`` are slightly higher than without.

Single-threaded timing is what a LUT is comparable across; ``--cpus`` pins this process
(and the runtime's threads, which inherit it) to the given cores before the runtime loads.
"""
from __future__ import annotations

import os
import sys

# Run as a script, sys.path[0] is the runner's own folder: drop it before importing anything
# else, so no file beside it (in this repo or in a device work dir) can shadow a stdlib module.
if sys.path and os.path.abspath(sys.path[0] or os.curdir) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

import argparse
import bisect
import functools
import gc
import json
import platform
import tempfile
import time

import numpy as np

RUNTIMES = ("tflite", "onnx")
DELEGATES = ("xnnpack", "none")
#: ONNX Runtime graph optimization levels (`--ort-opt`) -> `ort.GraphOptimizationLevel` member.
#: "all" keeps consecutive convolutions in the blocked NCHWc layout (a layer timed alone pays the
#: reorders in and out); "extended" and "basic" leave the graph in NCHW (docs/lut.md).
ORT_OPT_LEVELS = {"all": "ORT_ENABLE_ALL", "extended": "ORT_ENABLE_EXTENDED", "basic": "ORT_ENABLE_BASIC"}
#: What `--op-profile` says for a runtime whose Python API has no per-operator profiler.
OP_PROFILE_UNAVAILABLE = {
    "tflite": "LiteRT's Python interpreter has no per-operator profiler (on a phone, benchmark_model "
              "--enable_op_profiling has one: give --benchmark-binary)",
}


# ----------------------------------------------------------------------------- runtimes
def _import_tflite():
    """Return (Interpreter class, OpResolverType enum or None, version string)."""
    try:
        from ai_edge_litert import interpreter as mod  # LiteRT, the successor package

        try:
            import ai_edge_litert

            version = "ai-edge-litert " + getattr(ai_edge_litert, "__version__", "?")
        except Exception:  # pragma: no cover - version is informative only
            version = "ai-edge-litert ?"
    except ImportError:
        import tflite_runtime
        from tflite_runtime import interpreter as mod  # type: ignore[no-redef]

        version = "tflite-runtime " + getattr(tflite_runtime, "__version__", "?")
    return mod.Interpreter, getattr(mod, "OpResolverType", None), version


def _import_onnx():
    import onnxruntime as ort

    return ort, "onnxruntime " + ort.__version__


def runtime_version(runtime: str) -> str:
    if runtime == "tflite":
        return _import_tflite()[2]
    if runtime == "onnx":
        return _import_onnx()[1]
    raise ValueError(f"unknown runtime {runtime!r}")


def _dim(d) -> int:
    """A concrete dimension: symbolic (ONNX "batch"/None) or dynamic (-1) dims become 1."""
    try:
        d = int(d)
    except (TypeError, ValueError):
        return 1
    return d if d > 0 else 1


def _random_input(shape, dtype, rng: np.random.Generator) -> np.ndarray:
    shape = [_dim(d) for d in shape]
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    # Integer (int8 model) and bool inputs get zeros: against random int8 inputs swapped in place in
    # one interpreter the latency is the same (docs/lut.md "INT8 slices",
    # benchmarks/bench_int8_inputs.py), and zeros keep runs deterministic.
    return np.zeros(shape, dtype=dtype)


class TfliteModel:
    op_profile = None  # no per-operator profiler in the Python API (OP_PROFILE_UNAVAILABLE)

    def __init__(self, path: str, threads: int, delegate: str, rng: np.random.Generator,
                 profile_prefix: str | None = None):
        Interpreter, OpResolverType, _ = _import_tflite()
        kwargs = {"model_path": path, "num_threads": threads}
        if delegate == "none":
            if OpResolverType is None or not hasattr(OpResolverType, "BUILTIN_WITHOUT_DEFAULT_DELEGATES"):
                raise RuntimeError("--delegate none is not supported by this TFLite runtime")
            kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        self.interpreter = Interpreter(**kwargs)
        self.interpreter.allocate_tensors()
        for detail in self.interpreter.get_input_details():
            shape = [int(d) for d in detail.get("shape_signature", detail["shape"])]
            if any(d <= 0 for d in shape):  # dynamic dims: resize to 1 and re-allocate
                self.interpreter.resize_tensor_input(detail["index"], [max(d, 1) for d in shape])
                self.interpreter.allocate_tensors()
        for detail in self.interpreter.get_input_details():
            self.interpreter.set_tensor(detail["index"], _random_input(detail["shape"], detail["dtype"], rng))
        self.run = self.interpreter.invoke


class OnnxModel:
    def __init__(self, path: str, threads: int, delegate: str, rng: np.random.Generator,
                 profile_prefix: str | None = None, ort_opt: str = "all"):
        ort, _ = _import_onnx()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, ORT_OPT_LEVELS[ort_opt])
        options.log_severity_level = 3  # errors only: warnings would land on the agent's stderr
        if profile_prefix:
            options.enable_profiling = True
            options.profile_file_prefix = profile_prefix
        session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
        feeds = {}
        for arg in session.get_inputs():
            dtype = _ONNX_TYPES.get(arg.type)
            if dtype is None:
                raise RuntimeError(f"input {arg.name!r} has unsupported type {arg.type}")
            feeds[arg.name] = _random_input(arg.shape, dtype, rng)
        names = [o.name for o in session.get_outputs()]
        self.session = session
        self.run = lambda: session.run(names, feeds)

    def op_profile(self, passes: list[tuple[int, int]]) -> dict:
        """End profiling; the per-operator times of the timed runs (`aggregate_ort_profile`)."""
        path = self.session.end_profiling()
        try:
            with open(path, encoding="utf-8") as f:
                events = json.load(f)
        finally:
            os.remove(path)
        return aggregate_ort_profile(events, passes)


def aggregate_ort_profile(events: list, passes: list[tuple[int, int]]) -> dict:
    """ONNX Runtime profile events -> ``{"source", "runs", "ops"}`` (module docstring).

    `passes`: (warm-up runs, timed runs) of each pass over the model, in the order they ran;
    each run is one ``model_run`` event, so the timed ones are known by position.
    """
    runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e["ts"])
    expected = sum(w + n for w, n in passes)
    if len(runs) != expected:
        raise RuntimeError(f"the ONNX Runtime profile holds {len(runs)} runs, expected {expected}")
    windows: list[tuple[int, int]] = []
    first = 0
    for warmup, timed in passes:
        windows += [(r["ts"], r["ts"] + r["dur"]) for r in runs[first + warmup:first + warmup + timed]]
        first += warmup + timed
    starts = [w[0] for w in windows]
    n = len(windows)
    per_run_us: dict[str, np.ndarray] = {}  # node -> its time in each timed run
    calls: dict[str, int] = {}
    op_type: dict[str, str] = {}
    suffix = "_kernel_time"
    for e in events:
        name = e.get("name", "")
        if e.get("cat") != "Node" or not name.endswith(suffix):
            continue
        i = bisect.bisect_right(starts, e["ts"]) - 1
        if i < 0 or e["ts"] > windows[i][1]:
            continue  # a warm-up run's node
        node = name[:-len(suffix)]
        if node not in per_run_us:
            per_run_us[node] = np.zeros(n)
            op_type[node] = str((e.get("args") or {}).get("op_name", "?"))
        per_run_us[node][i] += float(e.get("dur", 0))
        calls[node] = calls.get(node, 0) + 1
    ops = [{"name": node, "op_type": op_type[node], "ms": round(float(np.median(us)) / 1000.0, 6),
            "count": max(1, round(calls[node] / n))} for node, us in per_run_us.items()]
    return {"source": "onnxruntime", "runs": n, "statistic": "median", "ops": ops}


_ONNX_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}
_LOADERS = {"tflite": TfliteModel, "onnx": OnnxModel}


# ----------------------------------------------------------------------------- timing
def time_pass(run, warmup: int, min_runs: int, max_runs: int, min_seconds: float) -> list[int]:
    """One pass over one model: warm up, then per-run ns timings (see module docstring)."""
    for _ in range(warmup):
        run()
    clock = time.perf_counter_ns
    min_ns = int(min_seconds * 1e9)
    times: list[int] = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = clock()
        while len(times) < max_runs:
            t0 = clock()
            run()
            t1 = clock()
            times.append(t1 - t0)
            if len(times) >= min_runs and t1 - start >= min_ns:
                break
    finally:
        if gc_was_enabled:
            gc.enable()
    return times


def fast_passes(pass_medians: list[float], within_pct: float | None) -> list[bool]:
    """Per pass of one model (given by its median), whether it is within `within_pct` % of the
    fastest pass (every pass when `within_pct` is None): the passes of the machine's fast state.

    A core that switches for seconds to minutes into a slower state (a VM's host, a phone's
    thermal or frequency governor) slows whole passes, since one pass is a contiguous block of
    runs; pooled, a batch's slow passes pull the median up by a share nobody chose. Every
    model is its own probe here, so no reference layer has to stand for the others. Off in the
    profiler: where the state switches within a second, a layer's short passes find the fast
    instants and a network's long ones cannot (docs/lut.md, "Noise protocol")."""
    if within_pct is None or len(pass_medians) < 2:
        return [True] * len(pass_medians)
    bound = min(pass_medians) * (1 + within_pct / 100)
    return [m <= bound for m in pass_medians]


def summarize(times_ns) -> dict:
    """Statistics of per-run timings (ns in) in ms, rounded to the ns."""
    ms = np.asarray(times_ns, dtype=np.float64) / 1e6
    p10, median, p90 = np.percentile(ms, [10, 50, 90])
    stats = {
        "n": int(ms.size),
        "median_ms": median,
        "mean_ms": ms.mean(),
        "p10_ms": p10,
        "p90_ms": p90,
        "std_ms": ms.std(),
        "min_ms": ms.min(),
        "max_ms": ms.max(),
    }
    return {k: (v if k == "n" else round(float(v), 6)) for k, v in stats.items()}


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:500]


def _pin(cpus: list[int] | None) -> list[int] | None:
    if cpus:
        os.sched_setaffinity(0, set(cpus))
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return None


def run_batch(models: list[str], args, out) -> None:
    def emit(record: dict) -> None:
        out.write(json.dumps(record) + "\n")
        out.flush()

    rng = np.random.default_rng(args.seed)
    loader = _LOADERS[args.runtime]
    if args.ort_opt != "all":  # ONNX only (_parse_args); the default keeps the loader's own default
        loader = functools.partial(loader, ort_opt=args.ort_opt)
    loaded: dict[int, object] = {}
    for index, path in enumerate(models):
        try:
            if args.op_profile:
                loaded[index] = loader(path, args.threads, args.delegate, rng, _profile_prefix(args, index))
            else:
                loaded[index] = loader(path, args.threads, args.delegate, rng)
        except Exception as exc:  # a broken model file must not abort the batch
            emit({"index": index, "name": os.path.basename(path), "error": _one_line(exc)})

    timed: dict[int, list[list[int]]] = {i: [] for i in loaded}  # per pass, its per-run ns
    passes: dict[int, list[tuple[int, int]]] = {i: [] for i in loaded}  # (warm-up, timed) runs per pass
    for repeat in range(args.repeats):
        last = repeat == args.repeats - 1
        for index in list(loaded):
            name = os.path.basename(models[index])
            try:
                times = time_pass(loaded[index].run, args.warmup, args.min_runs, args.max_runs, args.min_seconds)
                timed[index].append(times)
                passes[index].append((args.warmup, len(times)))
            except Exception as exc:
                emit({"index": index, "name": name, "error": _one_line(exc)})
                del loaded[index]
                continue
            if last:
                medians_ns = [float(np.median(p)) for p in timed[index]]
                kept = fast_passes(medians_ns, args.fast_passes)
                runs = [t for p, keep in zip(timed[index], kept) if keep for t in p]
                record = {"index": index, "name": name, **summarize(runs)}
                if len(timed[index]) > 1:  # a state switch within the batch shows here
                    record["pass_medians_ms"] = [round(m / 1e6, 6) for m in medians_ns]
                if args.fast_passes is not None:
                    record["passes_kept"] = sum(kept)
                if args.op_profile:  # the same runs: a left-out pass's timed runs are skipped like warm-up ones
                    profiled = [(w, n) if keep else (w + n, 0) for (w, n), keep in zip(passes[index], kept)]
                    record.update(_op_profile_record(loaded[index], profiled, args.runtime))
                emit(record)
                del loaded[index]  # free it: the rest of the batch no longer needs it


def _profile_prefix(args, index: int) -> str:
    """Where ONNX Runtime writes model `index`'s profile: beside the results file (a phone's
    batch folder), else the temp folder; the file is deleted once read."""
    folder = os.path.dirname(os.path.abspath(args.out)) if args.out else tempfile.gettempdir()
    return os.path.join(folder, f"ort-profile-{os.getpid()}-{index}")


def _op_profile_record(model, passes: list[tuple[int, int]], runtime: str) -> dict:
    """The ``op_profile*`` keys of a model's result line (module docstring)."""
    if model.op_profile is None:
        return {"op_profile_unavailable": OP_PROFILE_UNAVAILABLE[runtime]}
    try:
        return {"op_profile": model.op_profile(passes)}
    except Exception as exc:  # the timing stands; only the breakdown is missing
        return {"op_profile_error": _one_line(exc)}


def _parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="*", help="model files (.tflite or .onnx)")
    p.add_argument("--runtime", choices=RUNTIMES, required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--delegate", choices=DELEGATES, default="xnnpack",
                   help="tflite: xnnpack (default CPU path) or none (builtin kernels only)")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs per model per pass")
    p.add_argument("--min-runs", type=int, default=50, help="timed runs per model per pass, at least")
    p.add_argument("--max-runs", type=int, default=1000, help="timed runs per model per pass, at most")
    p.add_argument("--min-seconds", type=float, default=0.05, help="time per model per pass, at least")
    p.add_argument("--repeats", type=int, default=1, help="interleaved passes over the batch")
    p.add_argument("--fast-passes", type=float, default=None, metavar="PCT",
                   help="pool only the passes of a model whose median is within PCT%% of its fastest "
                        "pass (the machine's fast state); default: pool every pass")
    p.add_argument("--cpus", default="", help="comma-separated cores to pin this process to")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    p.add_argument("--list-file", help="file with model paths, one per line")
    p.add_argument("--out", help="JSONL results file (default: stdout)")
    p.add_argument("--version", action="store_true", help="print the header line and exit")
    p.add_argument("--op-profile", action="store_true",
                   help="also report per-operator times of the timed runs (ONNX Runtime's profiler)")
    p.add_argument("--ort-opt", choices=tuple(ORT_OPT_LEVELS), default="all",
                   help="onnx: graph optimization level (all = ORT_ENABLE_ALL, extended, basic)")
    args = p.parse_args(argv)
    if args.min_runs < 1 or args.max_runs < args.min_runs or args.repeats < 1 or args.threads < 1:
        p.error("need 1 <= min-runs <= max-runs, repeats >= 1, threads >= 1")
    if args.fast_passes is not None and not args.fast_passes >= 0:
        p.error(f"--fast-passes: expected a percentage >= 0, got {args.fast_passes}")
    if args.ort_opt != "all" and args.runtime != "onnx":
        p.error("--ort-opt: only with --runtime onnx")
    return args


def main(argv=None) -> int:
    args = _parse_args(argv)
    try:
        cpus = [int(c) for c in args.cpus.split(",") if c.strip()] or None
        affinity = _pin(cpus)
    except (ValueError, OSError) as exc:
        print(f"runner: cannot pin to cpus {args.cpus!r}: {_one_line(exc)}", file=sys.stderr)
        return 2
    models = list(args.models)
    if args.list_file:
        with open(args.list_file, encoding="utf-8") as f:
            models += [line.strip() for line in f if line.strip()]
    try:
        version = runtime_version(args.runtime)
    except ImportError as exc:
        print(f"runner: runtime {args.runtime} is not importable: {_one_line(exc)}", file=sys.stderr)
        return 3
    header = {
        "header": True,
        "runtime": args.runtime,
        "runtime_version": version,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "threads": args.threads,
        "delegate": args.delegate if args.runtime == "tflite" else "cpu",
        **({"ort_opt": args.ort_opt} if args.runtime == "onnx" else {}),
        "cpus": affinity if cpus else None,
        "protocol": {
            "warmup": args.warmup,
            "min_runs": args.min_runs,
            "max_runs": args.max_runs,
            "min_seconds": args.min_seconds,
            "repeats": args.repeats,
            "fast_passes_pct": args.fast_passes,
        },
    }
    if args.op_profile:
        header["op_profile"] = True
    out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout
    try:
        out.write(json.dumps(header) + "\n")
        out.flush()
        if not args.version:
            run_batch(models, args, out)
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
