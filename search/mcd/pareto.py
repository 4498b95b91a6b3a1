"""The Pareto files of a multi-target search: ``pareto.md`` and ``pareto.png``.

Writes only (like `report.py`): per target it reads the target folder's ``final.json`` (the
searched network) and ``baselines.json`` (the uniform width multiplier and the fair random
search, scored like MCD's candidates), and ``pareto_measured.json`` at the top when
`measure_pareto` (``nas-search report --measure-device``) has measured every network.
Latencies are LUT-predicted unless a "measured" column or panel says otherwise.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from profiler.agents import open_agent
from search.spaces import get_space
from search.spaces.space import SubnetConfig
from search.tasks import Task, task_of

from .files import SearchFiles, read_index, read_json
from .metrics import MeasuredLatencyMetric
from .report import pyplot
from .run_baselines import BASELINES_FILE, scored_budget

PARETO_MD, PARETO_PNG, PARETO_MEASURED = "pareto.md", "pareto.png", "pareto_measured.json"
NETWORKS = ("searched", "uniform", "random")  # rows per target, in this order
_MARKERS = {"searched": ("*", "C0"), "uniform": ("o", "C1"), "random": ("^", "C2")}


def pareto_rows(out: Path) -> tuple[list[dict], Task]:
    """One row per (finished target, network): values, score, unused budget, networks scored,
    measured latency (None when not measured). The task gives the score's name and sign."""
    measured = read_json(out / PARETO_MEASURED) or {}
    rows: list[dict] = []
    task = None
    scored = 0  # candidates MCD scored to reach each target: every earlier target's and its own
    for entry in read_index(out)["targets"]:
        folder = out / entry["dir"]
        final = SearchFiles(folder).final()
        if final is None:
            continue
        scored += scored_budget(folder)
        if task is None:
            task = task_of(get_space(final["space"]), score_metric=(final.get("meta") or {}).get("score"))
        limits = final["limits"]
        networks = {"searched": {"config": final["config"], "values": final["values"], "score": final["accuracy"],
                                 "evaluations": scored}}
        networks.update(read_json(folder / BASELINES_FILE) or {})
        for name in NETWORKS:
            if name not in networks:
                continue
            net = networks[name]
            meas = (measured.get(entry["dir"]) or {}).get(name)
            rows.append({"target": entry["dir"], "limits": limits, "network": name, "values": net["values"],
                         "score": net["score"], "evaluations": net.get("evaluations"), "config": net["config"],
                         "unused": {n: (lim - net["values"][n]) / lim for n, lim in limits.items()},
                         "measured_ms": meas["median_ms"] if meas else None})
    return rows, task


def write_pareto(out: str | Path, log: Callable[[str], None] = print) -> Path | None:
    """``pareto.md`` + ``pareto.png`` in `out` (a multi-target search); None while no target has finished."""
    out = Path(out)
    rows, task = pareto_rows(out)
    if not rows:
        return None
    path = out / PARETO_MD
    path.write_text("\n".join(_table(rows, task)) + "\n", encoding="utf-8")
    _plot(rows, task, out / PARETO_PNG)
    log(f"pareto: {path} (+ {PARETO_PNG})")
    return path


def _table(rows: list[dict], task: Task) -> list[str]:
    has_measured = any(r["measured_ms"] is not None for r in rows)
    head = ["target", "network", task.plot_label, "LUT latency (ms)", "MACs (M)", "unused budget",
            *(["measured (ms)"] if has_measured else []), "networks scored"]
    lines = ["# Pareto: one super-network, every target", "",
             "Searched (MCD + landing) vs the uniform width multiplier vs the fair random search (networks "
             "drawn into the band [0.98 t, t], as many as MCD scored to reach the target), scored alike on "
             "the held-out split; latencies LUT-predicted" + (", and measured with random weights" if has_measured
                                                              else "") + ".", "",
             "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        lat, macs = r["values"].get("latency_ms"), r["values"].get("macs")
        cells = [r["target"], f"**{r['network']}**" if r["network"] == "searched" else r["network"],
                 f"{task.plot_value(r['score']):.4f}", f"{lat:.3f}" if lat is not None else "-",
                 f"{macs / 1e6:.2f}" if macs is not None else "-",
                 ", ".join(f"{n} {u:.1%}" for n, u in r["unused"].items())]
        if has_measured:
            cells.append(f"{r['measured_ms']:.3f}" if r["measured_ms"] is not None else "-")
        cells.append(str(r["evaluations"]) if r["evaluations"] is not None else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _plot(rows: list[dict], task: Task, path: Path) -> None:
    plt = pyplot()
    x_name = "latency_ms" if all("latency_ms" in r["values"] for r in rows) else "macs"
    panels = [(x_name, "LUT-predicted latency (ms)" if x_name == "latency_ms" else "MACs (M)")]
    if any(r["measured_ms"] is not None for r in rows):
        panels.append(("measured_ms", "measured latency (ms, random weights)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4), squeeze=False)
    for ax, (name, xlabel) in zip(axes[0], panels):
        scale = 1e-6 if name == "macs" else 1.0
        for network in NETWORKS:
            mine = [r for r in rows if r["network"] == network]
            xs = [r["measured_ms"] if name == "measured_ms" else r["values"][name] * scale for r in mine]
            points = [(x, task.plot_value(r["score"])) for x, r in zip(xs, mine) if x is not None]
            if not points:
                continue
            marker, color = _MARKERS[network]
            ax.plot(*zip(*sorted(points)), marker=marker, color=color, ms=9 if marker == "*" else 6, label=network)
        limit_name = "latency_ms" if name == "measured_ms" else name
        for limit in sorted({r["limits"][limit_name] for r in rows if limit_name in r["limits"]}):
            ax.axvline(limit * scale, ls="--", lw=0.8, color="grey")
        ax.set_xlabel(xlabel), ax.set_ylabel(task.plot_label), ax.legend(fontsize=8)
        ax.set_title(("measured" if name == "measured_ms" else "LUT-predicted") + " (dashed: targets)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def measure_pareto(out: str | Path, agent_spec: str, log: Callable[[str], None] = print) -> dict:
    """Measure every network of the Pareto table (searched and baselines, every target) on a device.

    Each network is exported with random weights (latency does not depend on them) in the
    runtime of the search's LUT slice and benchmarked through `agent_spec` (``local`` or an
    ADB serial) with `MeasuredLatencyMetric`. Writes ``pareto_measured.json``
    ``{target: {network: {"median_ms", "cov"}}}`` and returns it.
    """
    out = Path(out)
    rows, _ = pareto_rows(out)
    if not rows:
        return {}
    first = SearchFiles(out / rows[0]["target"]).final() or {}
    space = get_space(first["space"])
    runtime = (first.get("meta") or {}).get("runtime") or "tflite"
    agent = open_agent(agent_spec)
    measured: dict[str, dict] = {}
    try:
        metric = MeasuredLatencyMetric(space, agent, runtime, workdir=out / "measured")
        for r in rows:
            config = space.canonical(SubnetConfig.from_dict(r["config"]))
            ms = metric.value(config)
            measured.setdefault(r["target"], {})[r["network"]] = {"median_ms": ms, "cov": metric.cov.get(config)}
            log(f"measured {r['target']} {r['network']}: {ms:.3f} ms ({runtime})")
    finally:
        agent.close()
    (out / PARETO_MEASURED).write_text(json.dumps(measured, indent=1) + "\n", encoding="utf-8")
    return measured
