"""Export mobilenetv3_large_100 (geffnet) cut into stages, and its prefix chains, for
`benchmarks/predict_gap/chains.py` (why the LUT sum misses the whole model: docs/predict.md).

    .venv/bin/python -m benchmarks.predict_gap.export --out /tmp/gap [--px 224]

Needs a `bench_predict` run of mobilenetv3_large_100 (TFLite) in `--workdir` (its LUT rows,
model cache and whole-model file). Writes <out>/stage-<i>.tflite (stem, blocks[0..5],
blocks[6] + head; image in, NHWC; image out except the last), <out>/prefix-<k>.tflite (stem +
the first k stages; prefix-8 = the whole model) and <out>/layers.json: the whole-model file,
and for every stage its LUT layer files (the benchmark LUT's model cache, found through
`predict_model`'s mapping of the stage file) with their LUT ms.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from benchmarks.bench_predict import native_activations  # noqa: E402
from profiler.export import export_module  # noqa: E402
from profiler.graph_keys import map_graph  # noqa: E402
from profiler.model_graph import load_model  # noqa: E402
from profiler.predict_model import PredictOptions, predict_model  # noqa: E402
from profiler.runtimes import ALONE  # noqa: E402


def stages(model) -> list[nn.Module]:
    """stem, block stages 0..5, then the last block stage with the head (pool, 1x1 conv, act,
    flatten, classifier): a head cut alone starts with a pool on an NHWC input, which the
    converter exports with a TRANSPOSE the whole model does not have."""
    head = nn.Sequential(model.blocks[6], model.global_pool, model.conv_head, model.act2, nn.Flatten(1),
                         model.classifier)
    return [nn.Sequential(model.conv_stem, model.bn1, model.act1), *model.blocks[:6], head]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="/tmp/gap")
    p.add_argument("--px", type=int, default=224)
    p.add_argument("--workdir", default=str(Path("~/.cache/netadaptv2/bench_predict").expanduser()),
                   help="bench_predict's --workdir (its LUT, model cache and whole-model files)")
    args = p.parse_args(argv)
    out, work = Path(args.out), Path(args.workdir)
    whole = work / "models" / f"mobilenetv3_large_100-{args.px}.tflite"
    if not (work / "lut.sqlite").is_file() or not whole.is_file():
        sys.exit(f"predict_gap.export: {work} holds no bench_predict run of mobilenetv3_large_100 at {args.px} px "
                 f"(run: .venv/bin/python -m benchmarks.bench_predict --models mobilenetv3_large_100 "
                 f"--runtimes tflite --workdir {work})")
    out.mkdir(parents=True, exist_ok=True)
    # why: optional, benchmark only (pip install --no-deps geffnet)
    import geffnet

    native_activations()
    torch.manual_seed(0)
    model = geffnet.mobilenetv3_large_100().eval()
    parts = stages(model)
    x = torch.randn(1, 3, args.px, args.px)
    layout = {"whole": str(whole), "stages": [], "prefixes": []}
    cache = work / "cache"
    layer_dir = next(cache.glob("tflite-*")) / "layers"
    for i, part in enumerate(parts):
        with torch.no_grad():
            y = part(x)
        image_out = y.dim() == 4
        path = export_module(part, (x,), "tflite", out / f"stage-{i}.tflite", image_out=image_out)
        mapping = map_graph(load_model(str(path)))
        rep = predict_model(str(path), work / "lut.sqlite", PredictOptions(device="local", cache_dir=cache,
                                                                               progress=False, context=ALONE))
        files = [str(layer_dir / f"{m.key.digest}.tflite") for m in mapping.layers]
        layout["stages"].append({"stage": i, "file": str(path), "lut_ms": rep.total_ms - rep.layers[-1].ms,
                                 "layers": [{"key": r.key, "ms": r.ms, "file": f}
                                            for r, f in zip(rep.layers[:-1], files)]})
        print(f"stage {i}: {tuple(x.shape)} -> {tuple(y.shape)}  LUT {layout['stages'][-1]['lut_ms']:.3f} ms, "
              f"{len(files)} layers")
        x = y
    for k in range(1, len(parts) + 1):
        chain = nn.Sequential(*parts[:k])
        xin = torch.randn(1, 3, args.px, args.px)
        with torch.no_grad():
            image_out = chain(xin).dim() == 4
        path = export_module(chain, (xin,), "tflite", out / f"prefix-{k}.tflite", image_out=image_out)
        layout["prefixes"].append({"k": k, "file": str(path)})
    (out / "layers.json").write_text(json.dumps(layout, indent=1) + "\n")
    print(f"wrote {out / 'layers.json'}")


if __name__ == "__main__":
    main()
