"""The search report: ``report.md`` + PNGs from a search folder (and optional baselines).

Reads ``final.json``, ``history.jsonl`` and, when present, ``finetune.json``,
``export.json`` and ``baselines.json``. Baselines are computed on request (`run_baselines`)
with the search's own constraints and scorer, so every accuracy in the table comes from
the same held-out images and the same BN recalibration. A measured latency of the exported
TFLite file is added when a device agent is given, beside the LUT prediction and its error.
The columns follow the space's task (`search/tasks.py`): held-out score and fine-tuned val
top-1 for classification; held-out and fine-tuned val RMSE (m) and δ1 for depth.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

from search.errors import SearchError

from .search import FINAL, read_history

BASELINES_FILE, REPORT = "baselines.json", "report.md"


def _load(path: Path):
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def rebuild(search_dir: Path, log: Callable[[str], None] = print):
    """(space, constraints, report metrics, scorer, supernet, request) of a finished search, from its meta."""
    from .search import MCDConfig
    from .session import SearchRequest, build_scorer, prepare
    final = _load(search_dir / FINAL)
    if final is None:
        raise SearchError(f"{search_dir}: no {FINAL}; the search has not finished")
    meta = final.get("meta") or {}
    limits = final["limits"]
    request = SearchRequest(
        supernet=Path(meta["supernet"]), out=search_dir / ".baselines", db=Path(meta["db"]) if meta.get("db") else None,
        device=meta.get("device"), runtime=meta.get("runtime") or "tflite", runtime_options=meta.get("runtime_options"),
        target_latency_ms=limits.get("latency_ms", limits.get("measured_ms")), target_macs=limits.get("macs"),
        metric=meta.get("metric", "lut"), data=meta.get("data"), holdout_size=meta.get("holdout_size"),
        score=meta.get("score"), mcd=MCDConfig(), resume=False)
    prepared = prepare(request, log)
    return prepared, build_scorer(request, prepared), request


def check_task(search_dir: str | Path, task: str | None) -> None:
    """SearchError (one line) unless `task` (``--task``; None: any) is the searched space's task."""
    if task is None:
        return
    from search.spaces import get_space
    from search.tasks import task_of
    final = _load(Path(search_dir) / FINAL)
    if final is None:
        raise SearchError(f"{search_dir}: no {FINAL}; run `nas-search search --out {search_dir}` until it finishes")
    task_of(get_space(final["space"]), task)


def run_baselines(search_dir: str | Path, names: Sequence[str], v1_steps: int = 50, v1_lr: float | None = None,
                  log: Callable[[str], None] = print, task: str | None = None) -> dict:
    """Compute the named baselines for a finished search; merged into ``baselines.json``.

    `v1_lr`: NetAdapt V1's per-proposal fine-tune LR (None: the task's). For a depth search
    each baseline also keeps every held-out metric (``detail["holdout_metrics"]``: RMSE, δ1...).
    """
    from .baselines import BASELINES, netadapt_v1, random_baseline, uniform_baseline
    search_dir = Path(search_dir)
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise SearchError(f"--baselines: unknown {', '.join(unknown)}; expected some of {', '.join(BASELINES)}")
    prepared, scorer, request = rebuild(search_dir, log)
    space, constraints, extra, task_ = prepared.space, prepared.constraints, prepared.report_metrics, prepared.task
    from search.tasks import task_of
    task_of(space, task)  # --task must agree with the searched space
    history = read_history(search_dir)
    budget = sum(len(r.get("candidates", [])) for r in history) or 1
    results = _load(search_dir / BASELINES_FILE) or {}
    for name in names:
        if name == "uniform":
            result = uniform_baseline(space, constraints, scorer, extra)
        elif name == "random":
            result = random_baseline(space, constraints, scorer, budget, report_metrics=extra)
        else:
            from search.data import make_loader
            train_cfg = dict(prepared.checkpoint_meta.get("train_config") or {})
            data = prepared.meta.get("data") or task_.default_data
            hw = space.spec.input_hw
            train = task_.dataset(data, "train", hw, holdout=train_cfg.get("holdout"))
            hold = task_.dataset(data, "holdout", hw, holdout=prepared.meta.get("holdout_size"))
            start = prepared.supernet.subnet(space.max_config())
            hold_loader = make_loader(hold, 256)
            batch = min(128, len(train))  # small data sets (quick runs) still get whole batches
            result = netadapt_v1(space, constraints, start, make_loader(train, batch, shuffle=True, drop_last=True),
                                 hold_loader, finetune_steps=v1_steps, lr=v1_lr, report_metrics=extra, log=log)
            model = result.detail.pop("model", None)
            if task_.records_holdout_metrics:  # its own fine-tuned weights, as it was scored
                result.detail["holdout_metrics"] = task_.evaluate(model, hold_loader)
        if task_.records_holdout_metrics and "holdout_metrics" not in result.detail:
            result.detail["holdout_metrics"] = scorer.metrics(result.config)
        results[name] = result.to_dict()
        log(f"baseline {name}: score {result.score:.4f} "
            + " ".join(f"{k}={v:.4g}" for k, v in result.values.items()) + f" ({result.time_s:.0f}s)")
    (search_dir / BASELINES_FILE).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return results


def measure_exported(search_dir: Path, agent_spec: str, log: Callable[[str], None] = print) -> dict:
    """Median latency (ms) and CoV of each exported file, measured through a device agent."""
    from device_agents.contract import BenchmarkSettings

    from .session import _open_agent
    export = _load(search_dir / "export.json")
    if not export:
        raise SearchError(f"{search_dir}: nothing exported; run `nas-search export --search {search_dir} ...` first")
    agent = _open_agent(agent_spec)
    measured = {}
    try:
        for runtime, item in export["files"].items():
            timing = agent.benchmark([Path(item["path"])], BenchmarkSettings(runtime=runtime)).timings[0]
            measured[runtime] = {"median_ms": timing.median_ms, "cov": timing.cov, "n": timing.n,
                                 "device": agent.info().device_id}
            log(f"measured {runtime}: {timing.median_ms:.3f} ms (CoV {timing.cov:.1%}, n={timing.n})")
    finally:
        agent.close()
    (search_dir / "measured.json").write_text(json.dumps(measured, indent=1) + "\n", encoding="utf-8")
    return measured


def write_report(search_dir: str | Path, log: Callable[[str], None] = print) -> Path:
    """Write ``report.md``, ``trajectory.png`` and ``tradeoff.png`` into the search folder."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    search_dir = Path(search_dir)
    final = _load(search_dir / FINAL)
    if final is None:
        raise SearchError(f"{search_dir}: no {FINAL}; run `nas-search search --out {search_dir}` until it finishes")
    history = read_history(search_dir)
    finetune = _load(search_dir / "finetune.json")
    export = _load(search_dir / "export.json")
    measured = _load(search_dir / "measured.json") or {}
    baselines = _load(search_dir / BASELINES_FILE) or {}
    limits = final["limits"]
    from search.spaces import get_space
    from search.tasks import task_of
    space = get_space(final["space"])
    meta = final.get("meta") or {}
    task = task_of(space, score_metric=meta.get("score"))
    x_name = next((n for n in ("latency_ms", "measured_ms", "macs") if n in final["values"]), None)
    x_label = {"latency_ms": "LUT-predicted latency (ms)", "measured_ms": "measured latency (ms)",
               "macs": "MACs"}[x_name]

    # trajectory
    its = [r["iteration"] for r in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for name in final["values"]:
        axes[0].plot(its, [r["values"].get(name) for r in history], marker="o", label=name)
        if name in limits:
            axes[0].axhline(limits[name], ls="--", lw=1, color="grey")
    axes[0].set_xlabel("iteration"), axes[0].set_title("resource of the current network (dashed: limit)")
    axes[0].set_yscale("log"), axes[0].legend(fontsize=8)
    shown = task.plot_value  # score -> what the plots show (e.g. RMSE = -score)
    axes[1].plot(its, [shown(r["score"]) for r in history], marker="o", color="C2")
    for r in history[1:]:
        axes[1].scatter([r["iteration"]] * len(r["candidates"]), [shown(c["score"]) for c in r["candidates"]], s=6,
                        color="grey", alpha=0.5)
    axes[1].set_xlabel("iteration"), axes[1].set_title(f"{task.plot_label} (dots: all candidates)")
    fig.tight_layout()
    fig.savefig(search_dir / "trajectory.png", dpi=110)
    plt.close(fig)

    # trade-off
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot([r["values"][x_name] for r in history], [shown(r["score"]) for r in history], marker=".", color="C0",
            label="MCD trajectory")
    ax.scatter([final["values"][x_name]], [shown(final["accuracy"])], marker="*", s=160, color="C0", label="searched")
    for i, (name, b) in enumerate(sorted(baselines.items())):
        ax.scatter([b["values"][x_name]], [shown(b["score"])], marker="os^D"[i % 4], s=60, color=f"C{i + 1}",
                   label=name)
    if x_name in limits:
        ax.axvline(limits[x_name], ls="--", lw=1, color="grey")
    ax.set_xlabel(x_label), ax.set_ylabel(task.plot_label)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(search_dir / "tradeoff.png", dpi=110)
    plt.close(fig)

    # markdown
    lines = [f"# Search report: {final['space']}", "",
             "Constraints: " + ", ".join(f"`{n} <= {v:g}`" for n, v in limits.items())
             + f"; {final['iterations']} MCD iterations, {final.get('search_time_s', 0):.0f} s search, "
             f"J={final['mcd']['candidates']}, L={final['mcd']['layers']}, seed {final['mcd']['seed']}.", "",
             "| " + " | ".join(("network", *task.report_holdout_headers, *task.report_finetune_headers,
                                  "LUT latency (ms)", "measured (ms)", "MACs (M)", "depth", "networks scored")) + " |",
             "|" + " --- |" * (6 + len(task.report_holdout_headers) + len(task.report_finetune_headers))]
    lut = final["values"].get("latency_ms")
    runtime = (final.get("meta") or {}).get("runtime") or "tflite"
    tfl = measured.get(runtime) or next(iter(measured.values()), None)  # the LUT's runtime first
    meas = f"{tfl['median_ms']:.3f} (CoV {tfl['cov']:.1%})" if tfl else "-"
    scored = sum(len(r.get("candidates", [])) for r in history) + 1
    cells = ["**searched (MCD)**", *task.report_holdout(final["accuracy"], final.get("holdout_metrics")),
             *task.report_finetune(finetune), f"{lut:.3f}" if lut is not None else "-", meas,
             f"{final['macs'] / 1e6:.2f}", f"{final['depth']:.2f}", str(scored)]
    lines.append("| " + " | ".join(cells) + " |")
    from search.spaces.space import SubnetConfig
    for name, b in sorted(baselines.items()):
        cfg = SubnetConfig.from_dict(b["config"])
        lat = b["values"].get("latency_ms")
        cells = [name, *task.report_holdout(b["score"], (b.get("detail") or {}).get("holdout_metrics")),
                 *task.report_finetune(None), f"{lat:.3f}" if lat is not None else "-", "-",
                 f"{space.macs(cfg) / 1e6:.2f}", f"{space.depth(cfg):.2f}", str(b["evaluations"])]
        lines.append("| " + " | ".join(cells) + " |")
    if tfl and lut is not None:
        err = (lut - tfl["median_ms"]) / tfl["median_ms"]
        lines += ["", f"LUT prediction vs measured ({tfl['device']}): {lut:.3f} vs {tfl['median_ms']:.3f} ms "
                      f"({err:+.1%})."]
    if export:
        lines += ["", "Exported: " + ", ".join(f"`{v['path']}` (max output diff {v['max_abs_diff']:.1e})"
                                                for v in export["files"].values()) + f"; weights: {export['weights']}."]
    cfg = SubnetConfig.from_dict(final["config"])
    lines += ["", "## Architecture", "", "```", *final["block_strings"], "```", "",
              "| width variable | searched | max |", "| --- | --- | --- |"]
    for name, var in space.width_vars.items():
        lines.append(f"| {name} | {cfg.widths[name]} | {var.max} |")
    lines += ["", "Kernels: " + ", ".join(f"{b}={k}" for b, k in sorted(cfg.kernels.items())), "",
              "![trajectory](trajectory.png)", "", "![trade-off](tradeoff.png)", ""]
    path = search_dir / REPORT
    path.write_text("\n".join(lines), encoding="utf-8")
    log(f"report: {path} (+ trajectory.png, tradeoff.png)")
    return path
