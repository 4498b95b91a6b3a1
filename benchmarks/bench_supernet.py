"""Super-network speed: OD training step vs plain max-network step; sliced vs masked evaluation.

    .venv/bin/python -m benchmarks.bench_supernet [--space mbv3-tiny] [--checkpoint run/supernet.pt]
        [--device cpu|cuda] [--batch-size 128] [--steps 10] [--candidates 6] [--threads N]

1. Training step time (forward + backward + SGD step, batch B):
   - plain: the max network (`supernet(x)`: no masks, 7x7 kernels),
   - od: per-image OD masks + per-image kernels (`supernet(x, supernet.sample_od(B, g))`),
   - od-batch-kernel: per-image widths, one kernel per block per batch,
   - od-grouped: grouped OD (4 groups, one sub-network each, BN statistics per group: the
     classification default), BN through the fused kernel once per group,
   - od-grouped-plain-ops: the same with the per-group BN written as plain tensor ops (how it
     was first written; kept here as the reference the fused version is measured against).
   Measurements are interleaved (plain, od, od-bk, ..., plain, ...) so a noisy host hurts
   each variant alike; the median is reported. Goal: od <= 1.3x plain.
2. Candidate evaluation (what MCD does per candidate: BN recalibration on `--bn-batches`
   training batches, then accuracy on the holdout split), for random candidates:
   - masked: the super-network with `masks_for(config)` (on a copy: recalibration mutates it),
   - sliced: `supernet.subnet(config)` (slicing time included).
   The two accuracies must be equal (checked, printed). Goal: sliced >= 2x faster.

Prints a table and writes benchmarks/results/bench_supernet_<device>.json.
"""
from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.bench_lut import machine
from search.checkpoint import load_supernet
from search.data import get_dataset, make_loader
from search.evaluate import evaluate, recalibrate_bn
from search.spaces import get_space
from search.supernet import ODPolicy, SuperNet
from search.supernet.layers import GroupedBatchNorm2d


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class PlainOpsGroupedBatchNorm2d(GroupedBatchNorm2d):
    """Per-group BN statistics as plain tensor ops (no running statistics: speed reference only)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.groups
        if not self.training or g <= 1:
            return super().forward(x)
        n, c = x.shape[0], x.shape[1]
        nhwc = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        xg = x.permute(0, 2, 3, 1).reshape(g, -1, c) if nhwc else x.reshape(g, n // g, c, -1).transpose(2, 3)
        var, mean = torch.var_mean(xg, dim=1 if nhwc else (1, 2), unbiased=False, keepdim=True)
        y = (xg - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias
        if nhwc:
            return y.reshape(n, x.shape[2], x.shape[3], c).permute(0, 3, 1, 2)
        return y.transpose(2, 3).reshape(x.shape)


def bench_training(space, device, batch_size: int, steps: int, warmup: int = 3) -> dict:
    torch.manual_seed(0)
    base = SuperNet(space).to(device, memory_format=torch.channels_last)  # as search/train.py trains
    grouped = ODPolicy(groups=4)
    variants = {"plain": None, "od": ODPolicy(), "od-batch-kernel": ODPolicy(per_image_kernels=False),
                "od-grouped": grouped, "od-grouped-plain-ops": grouped}
    nets = {name: copy.deepcopy(base) for name in variants}
    for bn in nets["od-grouped-plain-ops"]._bns:
        bn.__class__ = PlainOpsGroupedBatchNorm2d
    opts = {name: torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True) for name, net in nets.items()}
    h, w = space.spec.input_hw
    x = torch.randn(batch_size, 3, h, w, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, space.spec.num_classes, (batch_size,), device=device)
    g = torch.Generator().manual_seed(0)
    times = {name: [] for name in variants}
    for i in range(warmup + steps):
        for name, policy in variants.items():
            net, opt = nets[name], opts[name]
            _sync(device)
            t = time.perf_counter()
            od = net.sample_od(batch_size, g, policy) if policy is not None else None
            loss = F.cross_entropy(net(x, od), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            _sync(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - t)
    med = {name: statistics.median(ts) * 1e3 for name, ts in times.items()}
    return {"batch_size": batch_size, "steps": steps, "median_ms": med,
            "ratio_vs_plain": {name: med[name] / med["plain"] for name in med},
            "images_per_s": {name: batch_size / med[name] * 1e3 for name in med}}


def bench_eval(supernet, space, device, candidates: int, bn_batches: int, batch_size: int, holdout: int,
               data: str, seed: int = 0) -> dict:
    image_size = space.spec.input_hw[0]
    bn_loader = make_loader(get_dataset(data, "train", image_size), batch_size, shuffle=True, seed=1)
    hold_loader = make_loader(get_dataset(data, "holdout", image_size, holdout=holdout), 256)
    rng = random.Random(seed)
    configs = [space.max_config()] + [space.random_config(rng) for _ in range(candidates - 1)]
    rows = []
    for cfg in configs:
        masked_net = copy.deepcopy(supernet)
        _sync(device)
        t = time.perf_counter()
        recalibrate_bn(masked_net, bn_loader, bn_batches, config=cfg)
        acc_masked = evaluate(masked_net, hold_loader, config=cfg)
        _sync(device)
        t_masked = time.perf_counter() - t
        t = time.perf_counter()
        sub = supernet.subnet(cfg)
        recalibrate_bn(sub, bn_loader, bn_batches)
        acc_sliced = evaluate(sub, hold_loader)
        _sync(device)
        t_sliced = time.perf_counter() - t
        rows.append({"depth": round(space.depth(cfg), 3), "macs_m": space.macs(cfg) / 1e6, "acc_masked": acc_masked,
                     "acc_sliced": acc_sliced, "masked_s": t_masked, "sliced_s": t_sliced,
                     "speedup": t_masked / t_sliced})
    return {"candidates": rows, "bn_batches": bn_batches, "holdout_images": len(hold_loader.dataset),
            "total_masked_s": sum(r["masked_s"] for r in rows), "total_sliced_s": sum(r["sliced_s"] for r in rows),
            "speedup": sum(r["masked_s"] for r in rows) / sum(r["sliced_s"] for r in rows),
            "equal_accuracy": all(abs(r["acc_masked"] - r["acc_sliced"]) < 1e-9 for r in rows)}


def accuracy_table(supernet, space, device, bn_batches: int, data: str) -> list[dict]:
    """Val accuracy of sub-networks that differ in width only, depth only, kernel only (BN recalibrated)."""
    image_size = space.spec.input_hw[0]
    bn_loader = make_loader(get_dataset(data, "train", image_size), 128, shuffle=True, seed=1)
    val_loader = make_loader(get_dataset(data, "val", image_size), 256)
    full = space.max_config()
    shallow = full.replace({b.out_var: 0 for b in space.blocks if b.residual})
    rows = [("max", full), ("width x0.5", space.uniform_config(0.5, kernel=max(space.kernel_choices))),
            ("width x0.25", space.uniform_config(0.25, kernel=max(space.kernel_choices))),
            ("shallow (CBC blocks removed)", shallow), ("kernel 3", space.uniform_config(1.0, kernel=3)),
            ("min", space.min_config())]
    out = []
    for name, cfg in rows:
        sub = supernet.subnet(cfg)
        recalibrate_bn(sub, bn_loader, bn_batches)
        out.append({"subnet": name, "depth": round(space.depth(cfg), 3), "macs_m": space.macs(cfg) / 1e6,
                    "val_acc": evaluate(sub, val_loader)})
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="mbv3-tiny")
    p.add_argument("--checkpoint", default=None, help="trained supernet.pt (default: random init)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--candidates", type=int, default=6)
    p.add_argument("--bn-batches", type=int, default=20)
    p.add_argument("--holdout", type=int, default=1000)
    p.add_argument("--data", default="builtin")
    p.add_argument("--skip-eval", action="store_true")
    p.add_argument("--accuracy", action="store_true", help="val accuracy vs width/depth/kernel (needs --checkpoint)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's; 1 is what the "
                   "demo trains with, and stays readable on a busy host)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.checkpoint:
        space, supernet, _ = load_supernet(args.checkpoint)
    else:
        space = get_space(args.space)
        torch.manual_seed(0)
        supernet = SuperNet(space)
    supernet = supernet.to(device)
    host = machine()  # CPU model, cores, load: machines of one kind differ (docs/benchmarks.md)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else host["cpu"]
    result = {"space": space.name, "device": str(device), "device_name": name, "torch": torch.__version__,
              "threads": torch.get_num_threads(), "checkpoint": args.checkpoint, "machine": host}
    result["training"] = bench_training(space, device, args.batch_size, args.steps)
    tr = result["training"]
    print(f"{space.name} on {device} ({name}), batch {args.batch_size}, {args.steps} interleaved steps")
    print(f"{'training step':<28}{'median ms':>12}{'img/s':>10}{'x plain':>9}")
    for k, v in tr["median_ms"].items():
        print(f"{k:<28}{v:>12.1f}{tr['images_per_s'][k]:>10.0f}{tr['ratio_vs_plain'][k]:>9.2f}")
    if not args.skip_eval and space.task == "classification":
        ev = bench_eval(supernet, space, device, args.candidates, args.bn_batches, args.batch_size, args.holdout,
                        args.data)
        result["evaluation"] = ev
        print(f"\ncandidate evaluation (BN recal {args.bn_batches} batches + {ev['holdout_images']} holdout images)")
        print(f"{'depth':>7}{'MMACs':>8}{'acc masked':>12}{'acc sliced':>12}{'masked s':>10}{'sliced s':>10}"
              f"{'speedup':>9}")
        for r in ev["candidates"]:
            print(f"{r['depth']:>7.2f}{r['macs_m']:>8.2f}{r['acc_masked']:>12.4f}{r['acc_sliced']:>12.4f}"
                  f"{r['masked_s']:>10.2f}{r['sliced_s']:>10.2f}{r['speedup']:>9.2f}")
        print(f"total: masked {ev['total_masked_s']:.2f} s, sliced {ev['total_sliced_s']:.2f} s, "
              f"speedup {ev['speedup']:.2f}x, equal accuracy: {ev['equal_accuracy']}")
    if args.accuracy:
        result["accuracy"] = accuracy_table(supernet, space, device, args.bn_batches, args.data)
        print(f"\n{'sub-network':<30}{'depth':>7}{'MMACs':>8}{'val acc':>9}")
        for r in result["accuracy"]:
            print(f"{r['subnet']:<30}{r['depth']:>7.2f}{r['macs_m']:>8.2f}{r['val_acc']:>9.4f}")
    out = Path(args.out) if args.out else Path(__file__).parent / "results" / f"bench_supernet_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
