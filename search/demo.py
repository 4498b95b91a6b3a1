"""The embedded demo: the whole NetAdaptV2 pipeline on this host, no phone, no download.

Steps (each resumes when the demo is re-run with the same `--out`):
1. `lutbuild build` the `mbv3-tiny` LUT on this host (TFLite, single thread, local agent);
2. `nas-search train` the OD super-network on the built-in data set;
3. `nas-search search`: MCD to `target_fraction` of the max network's LUT latency;
4. the uniform width-multiplier baseline at the same LUT latency (same scorer);
5. fine-tune the searched net and the baseline identically from super-network weights
   (`search.finetune.finetune_network`), export both to ONNX + TFLite, measure the TFLite
   files on this host;
6. write `report.md` + PNGs, print one table (`demo_table.md`, `demo.json`).

Defaults are sized for a 2-core CPU (about 15 minutes); `DemoConfig` says why each is what it is.
"""
from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn

from device_agents.local import LocalAgent
from lut_db import LatencyTable
from lut_db.errors import MissingLatencyError
from profiler.build import BuildOptions, build_lut
from profiler.export import export_module
from profiler.predictor import LatencyPredictor
from profiler.runtimes import benchmark_settings, slice_runtime
from search.checkpoint import load_supernet
from search.errors import SearchError
from search.finetune import FinetuneConfig, finetune_network
from search.mcd.report import write_report
from search.mcd.run_baselines import run_baselines
from search.mcd.search import MCDConfig
from search.mcd.session import SearchRequest, search
from search.spaces import SearchSpace, get_space
from search.spaces.space import SubnetConfig
from search.tasks import task_of
from search.train import CHECKPOINT_NAME, TrainConfig, train

MEASURE_ROUNDS = 3  # separate runner processes per exported network (drift between processes ~±3%)


@dataclass(frozen=True)
class DemoConfig:
    out: Path = Path("demo_out")
    space: str = "mbv3-tiny"  # the small space: its LUT builds in minutes on 2 cores
    runtime: str = "tflite"  # what phones run; the ONNX LUT does not add up under ORT's layout passes (docs/lut.md)
    plan: str = "full"  # every key measured: the demo's LUT is exact, not interpolated
    epochs: int = 10  # super-network epochs (2 max-only + 8 grouped OD): the max network past 0.70 val top-1
    # in about the time 5 took before grouped BN ran on the fused kernel (docs/search.md)
    per_image_kernels: bool = False  # per-batch kernels: 1.06x plain step time on CPU instead of 1.47x
    target_fraction: float = 0.5  # latency target = 50% of the max network's LUT latency
    candidates: int = 8  # J: fewer than the default 16 to keep the demo short on 2 cores
    layers: int = 3  # L: MCD's default
    holdout_size: int = 1000  # held-out images scoring each candidate
    calib_batches: int = 4  # BN recalibration batches per candidate (x128 images)
    finetune_epochs: int = 2  # identical short fine-tune for the searched net and the baseline
    threads: int = 1  # torch threads: on 2 busy cores depthwise backward was 4-13x slower with 2 threads
    seed: int = 0

    def __post_init__(self) -> None:
        """Every setting checked before step 1: a bad one fails in a second, not after the LUT build."""
        for name in ("epochs", "finetune_epochs", "candidates", "layers", "holdout_size", "calib_batches", "threads"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise SearchError(f"demo --{name.replace('_', '-')}: expected an integer >= 1, got {value!r}")
        if not (isinstance(self.target_fraction, (int, float)) and 0 < self.target_fraction <= 1):
            raise SearchError(f"demo --target-fraction: expected a number in (0, 1], got {self.target_fraction!r}")
        if self.plan not in ("full", "sparse"):
            raise SearchError(f"demo --plan: expected full or sparse, got {self.plan!r}")
        if Path(self.out).exists() and not Path(self.out).is_dir():
            raise SearchError(f"demo --out {self.out}: is a file, expected a folder (created if missing)")


def run_demo(cfg: DemoConfig, log: Callable[[str], None] = print) -> dict:
    """Run the six steps (module docstring) into `cfg.out`; returns the summary written to demo.json."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before LiteRT/absl load: no converter chatter
    os.environ.setdefault("GLOG_minloglevel", "3")
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    space = get_space(cfg.space)
    db = out / "lut.sqlite"
    agent = LocalAgent()

    with _step(f"1/6 LUT: {cfg.space} on this host ({cfg.runtime}, plan {cfg.plan}) -> {db}", "lut_build_s",
               timings, log):
        log(build_lut(space, agent, db, cfg.runtime, BuildOptions(plan=cfg.plan), log=log).summary())
    device_id = agent.info().device_id
    options = slice_runtime(cfg.runtime).options

    with _step(f"2/6 OD super-network: {cfg.epochs} epochs on the built-in data set", "train_s", timings, log):
        supernet_path = _train_supernet(cfg, out / "supernet")

    predictor = LatencyPredictor(space, LatencyTable.load(db, device_id, cfg.runtime, options))
    max_ms = predictor.predict(space.max_config())
    target = round(cfg.target_fraction * max_ms, 4)
    search_dir = out / "search"
    with _step(f"3/6 MCD: {max_ms:.3f} ms -> {target:.3f} ms ({cfg.target_fraction:.0%}), J={cfg.candidates} "
               f"L={cfg.layers}", "search_s", timings, log):
        searched = _search(cfg, supernet_path, search_dir, db, device_id, options, target, log)

    with _step("4/6 uniform width-multiplier baseline at the same LUT latency", "baseline_s", timings, log):
        baselines = run_baselines(search_dir, ["uniform"], log=log)
    networks = {"searched (MCD)": searched,
                "uniform baseline": SubnetConfig.from_dict(baselines["uniform"]["config"])}

    with _step(f"5/6 fine-tune both for {cfg.finetune_epochs} epoch(s) from super-network weights",
               "finetune_export_measure_s", timings, log):
        rows = [_finetune_and_export(name, config, supernet_path, space, predictor, cfg, out, log)
                for name, config in networks.items()]
        _measure(agent, rows, cfg.runtime)

    with _step("6/6 report", None, timings, log):
        write_report(search_dir, log=log)
    summary = {"config": {k: str(v) for k, v in asdict(cfg).items()}, "device": device_id, "max_lut_ms": max_ms,
               "target_ms": target, "rows": rows, "timings_s": {k: round(v, 1) for k, v in timings.items()}}
    int8 = _int8_prediction(db, space, device_id, cfg.runtime, searched)
    if int8:
        summary["int8"] = {"network": "searched (MCD)", **int8}
    _write_summary(out, summary, log)
    return summary


def _int8_prediction(db: Path, space: SearchSpace, device_id: str, runtime: str, config: SubnetConfig) -> dict | None:
    """The searched network's LUT latency (ms) on this device's int8 slice, when the LUT has one
    (`lutbuild build --quantize int8 --db <out>/lut.sqlite`: the demo never builds it, an int8
    LUT takes minutes). A look-up per layer, no export or measurement: milliseconds. None
    without the slice; a note instead of a figure when the slice lacks a key of the network."""
    options = replace(slice_runtime(runtime), dtype="int8").options
    if not any((s.device_id, s.runtime, s.runtime_options) == (device_id, runtime, options)
               for s in LatencyTable.slices(db)):
        return None
    try:
        ms = LatencyPredictor(space, LatencyTable.load(db, device_id, runtime, options), check=False).predict(config)
    except MissingLatencyError as exc:
        return {"runtime_options": options, "lut_ms": None, "note": str(exc)}
    return {"runtime_options": options, "lut_ms": ms}


@contextmanager
def _step(title: str, key: str | None, timings: dict[str, float], log: Callable[[str], None]) -> Iterator[None]:
    """Log the step's title; its wall time (s) goes to `timings[key]` (None: not timed)."""
    log(f"\n=== {title} ===")
    t = time.perf_counter()
    yield
    if key is not None:
        timings[key] = time.perf_counter() - t


def _train_supernet(cfg: DemoConfig, run_dir: Path) -> Path:
    """Step 2: `nas-search train` (resumed when a checkpoint exists); returns the checkpoint path."""
    path = run_dir / CHECKPOINT_NAME
    train_cfg = TrainConfig(space=cfg.space, data="builtin", epochs=cfg.epochs, seed=cfg.seed,
                            per_image_kernels=cfg.per_image_kernels)
    return train(train_cfg, run_dir, resume=path.is_file()).checkpoint


def _search(cfg: DemoConfig, supernet_path: Path, search_dir: Path, db: Path, device_id: str, options: dict,
            target_ms: float, log: Callable[[str], None]) -> SubnetConfig:
    """Step 3: `nas-search search` to `target_ms` (resumed when its state exists); returns the searched config."""
    request = SearchRequest(supernet=supernet_path, out=search_dir, db=db, device=device_id, runtime=cfg.runtime,
                            runtime_options=options, target_latency_ms=target_ms, holdout_size=cfg.holdout_size,
                            calib_batches=cfg.calib_batches,
                            mcd=MCDConfig(candidates=cfg.candidates, layers=cfg.layers, seed=cfg.seed),
                            resume=(search_dir / "state.json").is_file())
    return search(request, log=log).config


def _finetune_and_export(name: str, config: SubnetConfig, supernet_path: Path, space: SearchSpace,
                         predictor: LatencyPredictor, cfg: DemoConfig, out: Path,
                         log: Callable[[str], None]) -> dict:
    """Step 5 for one network: fine-tune, export ONNX + TFLite; its row of the table (not yet measured)."""
    accuracy, model = _finetune(supernet_path, config, cfg, log)
    files = _export(model, space, out / _slug(name))
    return {"network": name, "top1": accuracy, "lut_ms": predictor.predict(config),
            "macs_m": space.macs(config) / 1e6, "depth": space.depth(config),
            "files": {k: str(v) for k, v in files.items()}, "config": config.to_dict()}


def _measure(agent: LocalAgent, rows: list[dict], runtime: str) -> None:
    """Measure every row's `runtime` file on this host; adds measured_ms, measured_cov and error_pct.

    Both files in one batch (interleaved passes), in `MEASURE_ROUNDS` fresh processes: the
    median of the round medians, as `lutbuild verify` measures whole networks."""
    rounds = [agent.benchmark([Path(r["files"][runtime]) for r in rows], benchmark_settings(runtime)).timings
              for _ in range(MEASURE_ROUNDS)]
    for i, row in enumerate(rows):
        medians = [timings[i].median_ms for timings in rounds]
        measured = statistics.median(medians)
        row.update(measured_ms=measured, measured_cov=statistics.pstdev(medians) / statistics.mean(medians),
                   error_pct=100 * (row["lut_ms"] - measured) / measured)


def _write_summary(out: Path, summary: dict, log: Callable[[str], None]) -> None:
    """demo.json and demo_table.md; the table and where everything is go to `log`."""
    (out / "demo.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    table_text = format_table(summary)
    (out / "demo_table.md").write_text(table_text + "\n", encoding="utf-8")
    log("\n" + table_text)
    log(f"\nEverything is in {out.resolve()}: demo_table.md, demo.json, lut.sqlite, supernet/, "
        f"search/report.md (+ trajectory.png, tradeoff.png), *.onnx / *.tflite")


def _slug(name: str) -> str:
    return name.split(" ")[0]


def _finetune(supernet_path: Path, config: SubnetConfig, cfg: DemoConfig,
              log: Callable[[str], None]) -> tuple[float, nn.Module]:
    """Fine-tune one sub-network from super-network weights (`finetune_network`); returns (val top-1, model)."""
    space, supernet, meta = load_supernet(supernet_path)
    task = task_of(space)
    ft = FinetuneConfig.for_task(task, epochs=cfg.finetune_epochs, seed=cfg.seed)
    holdout = (meta.get("train_config") or {}).get("holdout")
    train_set = task.dataset("builtin", "train", space.spec.input_hw, holdout=holdout)
    val_set = task.dataset("builtin", "val", space.spec.input_hw)
    with torch.no_grad():
        model = supernet.subnet(config)
    result = finetune_network(model, task, train_set, val_set, ft, log=lambda line: None)
    log(f"  {space.depth(config):.2f} blocks, {space.macs(config) / 1e6:.2f} MMACs: val top-1 "
        f"{result.before['acc']:.4f} -> {result.after['acc']:.4f}")
    return result.after["acc"], model.eval()


def _export(model: nn.Module, space: SearchSpace, stem: Path) -> dict[str, Path]:
    """ONNX and TFLite files of `model` at `stem`.onnx / .tflite (the LUT's I/O convention)."""
    h, w = space.spec.input_hw
    x = torch.randn(1, space.spec.in_channels, h, w)
    files = {}
    for runtime, suffix in (("onnx", ".onnx"), ("tflite", ".tflite")):
        files[runtime] = export_module(model, (x,), runtime, stem.with_suffix(suffix), image_args=(0,),
                                       image_out=False)
    return files


def format_table(summary: dict) -> str:
    lines = [f"Demo on {summary['device']}: target {summary['target_ms']:.3f} ms "
             f"(max network {summary['max_lut_ms']:.3f} ms), TFLite, 1 thread", "",
             "| network | val top-1 | LUT-predicted (ms) | measured (ms) | LUT error | MMACs | depth (blocks) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in summary["rows"]:
        lines.append(f"| {r['network']} | {r['top1']:.4f} | {r['lut_ms']:.3f} | {r['measured_ms']:.3f} "
                     f"(CoV between rounds {r['measured_cov']:.1%}) | {r['error_pct']:+.1f}% | {r['macs_m']:.2f} | "
                     f"{r['depth']:.2f} |")
    int8 = summary.get("int8")
    searched = next((r for r in summary["rows"] if int8 and r["network"] == int8["network"]), None)
    if searched and int8.get("lut_ms") is not None:
        lines += ["", f"{searched['network']} on the int8 LUT slice ({int8['runtime_options']}): "
                      f"{int8['lut_ms']:.3f} ms LUT-predicted vs {searched['lut_ms']:.3f} ms float32 "
                      f"(x{int8['lut_ms'] / searched['lut_ms']:.2f}; searched for float32)"]
    elif searched:
        lines += ["", f"int8 LUT slice ({int8['runtime_options']}) has no figure for {searched['network']}: "
                      f"{int8['note']}"]
    lines.append("")
    lines.append("time: " + ", ".join(f"{k} {v:.0f}s" for k, v in summary["timings_s"].items()))
    return "\n".join(lines)
