"""Do input values change an int8 network's latency? Zeros vs random int8 inputs (issue 12).

    taskset -c 1 python -m benchmarks.bench_int8_inputs MODEL.tflite [MODEL.tflite ...]
        [--instances 5] [--blocks 6] [--runs 25]

The runner feeds zeros to int8 inputs (`device_agents/runner.py`); this checks that random ones
would time the same. Per model, `--instances` fresh LiteRT interpreters (1 thread); in each,
`--blocks` interleaved blocks of `--runs` timed invokes per input kind, the input swapped in
place: zeros, "image" (N(0,1) through the input's scale and zero point) and uniform int8. The
ratio of a kind is its block median over the zeros block beside it, in the same interpreter,
so the instance's own speed (which varies by several times on a loaded host: docs/lut.md
"Per-instance bimodality") cancels. Printed per model: the zeros median of every instance and,
per kind, the median (min, max) over instances of the per-instance median ratio. Pin it to
one core with taskset. Figures: docs/lut.md, "INT8 slices", "Input values".
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from ai_edge_litert.interpreter import Interpreter

KINDS = ("zeros", "image", "uniform")


def make_input(kind: str, detail: dict, rng: np.random.Generator) -> np.ndarray:
    """One input of `kind` for the interpreter input `detail` (an int8 tensor)."""
    shape, dtype = detail["shape"], np.dtype(detail["dtype"])
    info = np.iinfo(dtype)
    if kind == "zeros":
        return np.zeros(shape, dtype)
    if kind == "uniform":
        return rng.integers(info.min, info.max + 1, shape).astype(dtype)
    scale, zero_point = detail["quantization"]
    return np.clip(np.round(rng.standard_normal(shape) / scale + zero_point), info.min, info.max).astype(dtype)


def block_ms(interpreter: Interpreter, runs: int) -> float:
    """Median of `runs` timed invokes (ms) after 3 untimed ones."""
    for _ in range(3):
        interpreter.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def measure(path: str, instances: int, blocks: int, runs: int, rng: np.random.Generator) -> dict:
    """Per instance: zeros median (ms) and each kind's median ratio to zeros."""
    zeros_ms, ratios = [], {k: [] for k in KINDS[1:]}
    for _ in range(instances):
        interpreter = Interpreter(model_path=path, num_threads=1)
        interpreter.allocate_tensors()
        detail = interpreter.get_input_details()[0]
        if np.dtype(detail["dtype"]).kind != "i":
            raise SystemExit(f"{path}: input is {np.dtype(detail['dtype'])}, expected an int8 model")
        data = {k: make_input(k, detail, rng) for k in KINDS}
        times = {k: [] for k in KINDS}
        for b in range(blocks):
            for kind in (KINDS if b % 2 == 0 else KINDS[::-1]):
                interpreter.set_tensor(detail["index"], data[kind])
                times[kind].append(block_ms(interpreter, runs))
        zeros_ms.append(statistics.median(times["zeros"]))
        for kind in KINDS[1:]:
            ratios[kind].append(statistics.median(a / z for a, z in zip(times[kind], times["zeros"])))
    return {"zeros_ms": zeros_ms, **ratios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", help="full-integer .tflite files")
    parser.add_argument("--instances", type=int, default=5)
    parser.add_argument("--blocks", type=int, default=6)
    parser.add_argument("--runs", type=int, default=25)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    for path in args.models:
        result = measure(path, args.instances, args.blocks, args.runs, rng)
        kinds = "  ".join(f"{k}/zeros {statistics.median(v):.3f} ({min(v):.3f}..{max(v):.3f})"
                          for k, v in result.items() if k != "zeros_ms")
        print(f"{path.rsplit('/', 1)[-1]}: zeros ms per instance {[round(x, 3) for x in result['zeros_ms']]}  "
              f"{kinds}", flush=True)


if __name__ == "__main__":
    main()
