"""`lutbuild predict` against public architectures this project did not define (issue 11).

    .venv/bin/pip install --no-deps geffnet          # NOT a dependency of the package or its tests
    .venv/bin/python -m benchmarks.bench_predict --quick     # mobilenetv3_large_100 at 128 px, TFLite
    .venv/bin/python -m benchmarks.bench_predict             # the six geffnet models at 224 px, TFLite + ONNX
    .venv/bin/python -m benchmarks.bench_predict --same-batch   # + the model's LUT layer files in its batches

For each model and runtime: `predict_model` with `measure_missing` on this host
(`--device local`) fills a benchmark LUT (`<workdir>/lut.sqlite`, resumable), then the
whole model is exported (the profiler's exporter, same I/O convention as the LUT rows) and
measured on this host `--rounds` times (median of the per-round medians, raw: it includes
the per-invoke overhead the prediction adds once; with `--same-batch`, the model's own LUT
layer files are timed in the same runner batches and their sum is a second, same-state
reference: docs/predict.md, "Why the LUT sum misses"). Reported: predicted and measured ms, the
error, the share of the predicted latency from generic keys, and the wall time of a predict
with the LUT warm (from the exported .onnx file, in process; the CLI adds ~3-8 s of Python
imports). Writes `benchmarks/results/bench_predict-<date>.json` (machine, versions, settings).
Timings on a shared host are noisy: the figures say so with their load average.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/bench_predict.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.bench_lut import machine, versions  # noqa: E402
from profiler.agents import open_agent  # noqa: E402
from lut_db.layer_key import GenericKey  # noqa: E402
from profiler.export import ModelCache, export_module  # noqa: E402
from profiler.generic_ops import export_generic  # noqa: E402
from profiler.graph_keys import map_graph  # noqa: E402
from profiler.model_graph import load_model  # noqa: E402
from profiler.predict_model import PredictOptions, predict_model  # noqa: E402
from profiler.runtimes import benchmark_settings  # noqa: E402
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


def measure_whole(model_path: Path, runtime: str, cache: ModelCache, rounds: int, layer_files=()) -> dict:
    """Raw median ms of the whole model on this host (median over `rounds` benchmark processes).

    With `layer_files` (the model's own LUT layer models, one per layer of the breakdown,
    repeats allowed), each process times them in the SAME batch as the whole model
    (interleaved passes), and `layers_now_ms` is their sum (each minus the batch's overhead,
    as a LUT row; `profiler.same_batch`, which `lutbuild verify --same-batch` uses too): a
    prediction measured under the host's state of that moment. This VM's
    cores switch for seconds to minutes into a state ~1.4x slower (docs/predict.md, "Why the
    LUT sum misses"), so a whole model measured minutes after its LUT rows can be in the
    other state; the same-batch ratio is not."""
    agent = open_agent("local", runtime)
    try:
        settings = benchmark_settings(runtime, threads=1, repeats=3)
        layout = plan_batch([cache.overhead()], [Group(model_path, tuple(layer_files))])
        medians, covs, sums = [], [], []
        for _ in range(rounds):
            result = agent.benchmark(layout.files, settings)
            batch = [t.median_ms for t in result.timings]
            medians.append(batch[layout.model_at[0]])
            covs.append(result.timings[layout.model_at[0]].cov)
            if layer_files:
                sums.append(layers_now_ms(batch, layout.layers_at[0], batch[0]))
    finally:
        agent.close()
    out = {"median_ms": statistics.median(medians), "round_medians_ms": medians,
           "cov_between_rounds": statistics.pstdev(medians) / statistics.mean(medians), "cov_within": covs}
    if sums:
        out |= {"layers_now_ms": statistics.median(sums), "round_layers_now_ms": sums,
                "round_ratio_whole_to_layers": [m / s for m, s in zip(medians, sums)]}
    return out


def same_batch_files(model_path: Path, runtime: str, cache: ModelCache) -> list[Path]:
    """The LUT layer file of every line of `model_path`'s breakdown, in order (repeats kept):
    ours from the model cache (exported when missing), generic keys' one-operator models
    where `predict --measure-missing` put them (exported when missing)."""
    keys = [m.key for m in map_graph(load_model(str(model_path))).layers]
    ours = iter(cache.layers([k for k in keys if not isinstance(k, GenericKey)]))
    files = []
    for key in keys:
        if isinstance(key, GenericKey):
            path = cache.layer_path(key)
            if not path.exists():
                export_generic(key, runtime, path)
            files.append(path)
        else:
            files.append(next(ours))
    return files


def bench_model(name: str, runtime: str, px: int, args) -> dict:
    work = Path(args.workdir)
    factory = f"geffnet:{name}"
    shape = (1, 3, px, px)
    options = PredictOptions(device="local", runtime=runtime, input_shape=shape, measure_missing=True,
                             cache_dir=work / "cache", progress=not args.quiet)
    t0 = time.monotonic()
    filled = predict_model(factory, work / "lut.sqlite", options)
    fill_s = time.monotonic() - t0
    import geffnet  # why: optional, benchmark only (pip install --no-deps geffnet); never a dependency

    torch.manual_seed(0)
    model = getattr(geffnet, name)().eval()
    files = work / "models"
    onnx_path = export_module(model, (torch.randn(*shape),), "onnx", files / f"{name}-{px}.onnx", image_out=False)
    path = onnx_path if runtime == "onnx" else export_module(model, (torch.randn(*shape),), "tflite",
                                                             files / f"{name}-{px}.tflite", image_out=False)
    warm_opts = PredictOptions(device="local", runtime=runtime, cache_dir=work / "cache", progress=False)
    t0 = time.monotonic()
    warm = predict_model(str(onnx_path), work / "lut.sqlite", warm_opts)
    warm_s = time.monotonic() - t0
    with ModelCache(work / "cache", runtime, jobs=1) as cache:
        layer_files = same_batch_files(onnx_path, runtime, cache) if args.same_batch else []
        measured = measure_whole(path, runtime, cache, args.rounds, layer_files)
    error = 100 * (warm.total_ms / measured["median_ms"] - 1)
    if "layers_now_ms" in measured:
        measured["error_vs_layers_now_pct"] = SameBatch(measured["round_medians_ms"],
                                                        measured["round_layers_now_ms"]).error_pct
    return {"model": name, "runtime": runtime, "px": px, "predicted_ms": warm.total_ms,
            "measured_ms": measured["median_ms"], "error_pct": error, "generic_share": warm.generic_share,
            "layers": len(warm.layers) - 1, "counts": warm.counts(), "keys_measured_now": filled.measured_now,
            "fill_s": fill_s, "warm_predict_s": warm_s, "measured": measured}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="mobilenetv3_large_100 at 128 px, TFLite only")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--runtimes", default="tflite,onnx")
    parser.add_argument("--px", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", default=str(Path("~/.cache/netadaptv2/bench_predict").expanduser()),
                        help="benchmark LUT and exported models (resumable)")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--same-batch", action="store_true",
                        help="also time the model's LUT layer files in the whole model's batches: the "
                             "error against layers measured under the same host state")
    args = parser.parse_args(argv)
    models, runtimes, px = args.models.split(","), args.runtimes.split(","), args.px
    if args.quick:
        models, runtimes, px = ["mobilenetv3_large_100"], ["tflite"], 128
    try:
        import geffnet  # noqa: F401  # why: optional, checked before any work
    except ImportError:
        sys.exit("bench_predict: needs geffnet: .venv/bin/pip install --no-deps geffnet (never torchvision)")
    native_activations()
    rows = [bench_model(m, r, px, args) for m in models for r in runtimes]
    print(f"\n{'model':24} {'runtime':7} {'px':>4} {'predicted ms':>12} {'measured ms':>11} {'error':>7} "
          f"{'generic':>8} {'warm predict s':>14} {'same-batch error':>16}")
    for r in rows:
        same = r["measured"].get("error_vs_layers_now_pct")
        same = "-" if same is None else f"{same:+.1f}%"
        print(f"{r['model']:24} {r['runtime']:7} {r['px']:>4} {r['predicted_ms']:>12.3f} {r['measured_ms']:>11.3f} "
              f"{r['error_pct']:>+6.1f}% {100 * r['generic_share']:>7.1f}% {r['warm_predict_s']:>14.2f} {same:>16}")
    stamp = datetime.now(timezone.utc)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"bench_predict-{'quick-' if args.quick else ''}{stamp:%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps({"date": stamp.isoformat(timespec="seconds"), "machine": machine(),
                               "versions": versions(), "settings": vars(args), "rows": rows,
                               "note": "CPU shared with other jobs: timings are noisy upper bounds"}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
