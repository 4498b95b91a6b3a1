"""Shared fixtures of the MCD / search tests (helpers; the tests live in test_mcd*.py).

The synthetic LUT is a *test fixture*: latencies come from an analytic model
(``a_op * MACs + b_op`` per layer), written with `lut_db`'s writer exactly as `lutbuild`
writes measured rows. The real LUT of the demo is measured by `lutbuild build`.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from lut_db import LutWriter, MeasurementRow, RuntimeSpec, open_lut
from search.checkpoint import save_supernet
from search.cli import main as nas_search_main
from search.spaces import SubnetConfig, get_space
from search.supernet import SuperNet

DEVICE = "test:analytic"
# ns per MAC and fixed ms per op: depthwise and SE are memory bound (costlier per MAC)
_A_NS = {"conv": 0.6, "dwconv": 3.0, "se": 2.0, "add": 1.0, "gap": 1.0, "linear": 1.0, "upsample": 1.0}
_B_MS = {"conv": 0.010, "dwconv": 0.012, "se": 0.020, "add": 0.004, "gap": 0.003, "linear": 0.003,
         "upsample": 0.003}


def analytic_ms(layer) -> float:
    return _A_NS[layer.op] * layer.macs() * 1e-6 + _B_MS[layer.op]


def synth_lut(path: Path, space_name: str = "mbv3-tiny", runtimes=("tflite",), drop: int = 0) -> Path:
    """A LUT for every layer key of `space_name` (minus the first `drop` keys) on DEVICE."""
    space = get_space(space_name)
    keys = sorted(space.all_layer_configs(), key=lambda c: c.key)[drop:]
    writer = LutWriter(open_lut(path))
    for runtime in runtimes:
        spec = RuntimeSpec(name=runtime, version="synthetic")
        writer.write(MeasurementRow(layer=k, device_id=DEVICE, runtime=spec, n=50, median_ms=analytic_ms(k),
                                    mean_ms=analytic_ms(k), p10_ms=analytic_ms(k), p90_ms=analytic_ms(k),
                                    std_ms=0.0) for k in keys)
        writer.set_calibration(DEVICE, runtime, spec.options, "overhead", 0.05)
    writer.register_space(space_name, space.all_layer_configs())
    writer.db.close()
    return path


def importance_scorer(space):
    """A deterministic stand-in for super-network accuracy: each dimension has a fixed
    importance; the score is 1 - sum(importance * relative shrink). Same config, same score,
    in any process."""
    weights = {}
    for name in sorted(space.width_vars):
        digest = hashlib.sha1(name.encode()).digest()
        weights[name] = 0.02 + digest[0] / 255 * 0.2
    kernel_max = max(space.kernel_choices)

    def score(config: SubnetConfig) -> float:
        config = space.canonical(config)
        total = 0.0
        for name, w in weights.items():
            total += w * (1 - config.widths[name] / space.width_vars[name].max)
        total += sum(0.01 * (kernel_max - k) for k in config.kernels.values())
        return round(1.0 - total, 9)

    return score


def run_nas_search(argv, capsys) -> tuple[int, str, str]:
    """Run `nas-search ARGV` in-process; (exit code, stdout, stderr)."""
    try:
        nas_search_main([str(a) for a in argv])
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def untrained_supernet_and_lut(root: Path) -> dict:
    """An untrained mbv3-tiny super-network checkpoint (seed 0, 200-image holdout of the built-in
    set) and a synthetic LUT of its space, under `root`: what a CLI search test needs."""
    torch.manual_seed(0)
    supernet = root / "supernet.pt"
    save_supernet(supernet, SuperNet(get_space("mbv3-tiny")), {"train_config": {"holdout": 200, "data": "builtin"}})
    return {"root": root, "supernet": supernet, "lut": synth_lut(root / "lut.sqlite")}

