"""The search report: ``report.md``, ``trajectory.png`` and ``tradeoff.png`` of a search folder.

Writes only; it computes nothing. It reads ``final.json`` and ``history.jsonl`` (the search,
`files.SearchFiles`) and, when present, ``finetune.json`` (`search.finetune`),
``export.json`` (`search.export_searched`), ``measured.json`` (`measure.measure_exported`:
the exported file's latency on a device, shown beside the LUT prediction and its error) and
``baselines.json`` (`run_baselines.run_baselines`: every baseline scored like the MCD
candidates). The columns follow the space's task (`search.tasks`): held-out score and
fine-tuned val top-1 for classification; held-out and fine-tuned val RMSE (m) and δ1 for depth.
"""
from __future__ import annotations

import statistics

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from search.export_searched import EXPORT_LOG
from search.finetune import FINETUNE_LOG, SCRATCH_LOG
from search.spaces import get_space
from search.spaces.space import SearchSpace, SubnetConfig
from search.tasks import Task, task_of

from .files import SearchFiles, read_json
from .measure import MEASURED
from .run_baselines import BASELINES_FILE

REPORT, TRAJECTORY, TRADEOFF = "report.md", "trajectory.png", "tradeoff.png"
#: x axis of the trade-off plot: the first of these resources the search recorded
X_AXES = {"latency_ms": "LUT-predicted latency (ms)", "measured_ms": "measured latency (ms)", "macs": "MACs"}


def _unfinished_hint(search_dir: str | Path) -> str:
    return f"run `nas-search search --out {search_dir}` until it finishes"


def check_task(search_dir: str | Path, task: str | None) -> None:
    """SearchError (one line) unless `task` (``--task``; None: any) is the searched space's task."""
    if task is None:
        return
    final = SearchFiles(search_dir).finished(_unfinished_hint(search_dir))
    task_of(get_space(final["space"]), task)


@dataclass(frozen=True)
class ReportInputs:
    """Everything the report shows, read from a search folder."""

    final: dict  # final.json
    history: list[dict]  # history.jsonl
    finetune: dict | None  # finetune.json (None: not fine-tuned yet)
    scratch: dict | None  # scratch.json of `finetune --from-scratch` (None: not trained alone)
    export: dict | None  # export.json (None: not exported yet)
    measured: dict  # measured.json: {runtime: {median_ms, cov, n, device}} ({}: not measured)
    baselines: dict  # baselines.json: {name: BaselineResult.to_dict()} ({}: none computed)
    space: SearchSpace
    task: Task

    @classmethod
    def load(cls, search_dir: Path) -> ReportInputs:
        files = SearchFiles(search_dir)
        final = files.finished(_unfinished_hint(search_dir))
        space = get_space(final["space"])
        task = task_of(space, score_metric=(final.get("meta") or {}).get("score"))
        return cls(final, files.history(), read_json(search_dir / FINETUNE_LOG), read_json(search_dir / SCRATCH_LOG),
                   read_json(search_dir / EXPORT_LOG),
                   read_json(search_dir / MEASURED) or {}, read_json(search_dir / BASELINES_FILE) or {}, space, task)

    @property
    def limits(self) -> dict[str, float]:
        return self.final["limits"]

    @property
    def x_name(self) -> str | None:
        """The resource on the trade-off plot's x axis."""
        return next((n for n in X_AXES if n in self.final["values"]), None)


def write_report(search_dir: str | Path, log: Callable[[str], None] = print) -> Path:
    """Write ``report.md``, ``trajectory.png`` and ``tradeoff.png`` into the search folder."""
    search_dir = Path(search_dir)
    inputs = ReportInputs.load(search_dir)
    plot_trajectory(inputs, search_dir / TRAJECTORY)
    plot_tradeoff(inputs, search_dir / TRADEOFF)
    path = search_dir / REPORT
    path.write_text("\n".join(report_lines(inputs)), encoding="utf-8")
    log(f"report: {path} (+ {TRAJECTORY}, {TRADEOFF})")
    return path


# ----------------------------------------------------------------------------- plots
def pyplot():
    import matplotlib  # plots only: matplotlib takes ~0.5 s to import and most commands never plot

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


#: Axis labels of the resources a search records (its own axis each: ms and MACs differ by 10^7).
RESOURCE_LABELS = {"latency_ms": "LUT latency (ms)", "measured_ms": "measured latency (ms)", "macs": "MACs (M)"}
_SCALE = {"macs": 1e-6}  # shown in millions


def plot_trajectory(inputs: ReportInputs, path: Path) -> None:
    """One panel per resource of the current network per step (dashed: its limit), then the
    score of the current network and of every candidate; the landing steps are shaded."""
    plt = pyplot()
    history, task = inputs.history, inputs.task
    steps = [r["iteration"] for r in history]
    landing = [r["iteration"] for r in history if r.get("phase") == "land"]
    names = list(inputs.final["values"])
    fig, axes = plt.subplots(1, len(names) + 1, figsize=(3.6 * (len(names) + 1), 3.4), squeeze=False)
    axes = axes[0]
    for ax, name in zip(axes, names):
        scale = _SCALE.get(name, 1.0)
        ax.plot(steps, [r["values"].get(name, float("nan")) * scale for r in history], marker="o", ms=3)
        title = name
        if name in inputs.limits:
            ax.axhline(inputs.limits[name] * scale, ls="--", lw=1, color="grey")
            title += " (dashed: limit)"
        ax.set_ylabel(RESOURCE_LABELS.get(name, name)), ax.set_title(title, fontsize=9)
    shown = task.plot_value  # score -> what the plots show (e.g. RMSE = -score)
    axes[-1].plot(steps, [shown(r["score"]) for r in history], marker="o", ms=3, color="C2")
    for r in history[1:]:
        axes[-1].scatter([r["iteration"]] * len(r["candidates"]), [shown(c["score"]) for c in r["candidates"]], s=5,
                         color="grey", alpha=0.5)
    axes[-1].set_ylabel(task.plot_label), axes[-1].set_title("score (dots: candidates)", fontsize=9)
    for ax in axes:
        ax.set_xlabel("MCD iteration / landing step")
        if landing:
            ax.axvspan(min(landing) - 0.5, max(landing) + 0.5, color="C1", alpha=0.12, lw=0)
    if landing:
        fig.suptitle("shaded: landing steps (growing back into the unused budget)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_tradeoff(inputs: ReportInputs, path: Path) -> None:
    """Score vs the constrained resource: the MCD trajectory, the searched network, the baselines."""
    plt = pyplot()
    final, x_name, shown = inputs.final, inputs.x_name, inputs.task.plot_value
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot([r["values"][x_name] for r in inputs.history], [shown(r["score"]) for r in inputs.history], marker=".",
            color="C0", label="MCD trajectory")
    ax.scatter([final["values"][x_name]], [shown(final["accuracy"])], marker="*", s=160, color="C0", label="searched")
    for i, (name, b) in enumerate(sorted(inputs.baselines.items())):
        ax.scatter([b["values"][x_name]], [shown(b["score"])], marker="os^D"[i % 4], s=60, color=f"C{i + 1}",
                   label=name)
    if x_name in inputs.limits:
        ax.axvline(inputs.limits[x_name], ls="--", lw=1, color="grey")
    ax.set_xlabel(X_AXES[x_name]), ax.set_ylabel(inputs.task.plot_label)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- markdown
def report_lines(inputs: ReportInputs) -> list[str]:
    """``report.md``, line by line: summary, comparison table, notes, architecture."""
    measured = _measured_on_lut_runtime(inputs)
    return [*_summary_lines(inputs), "", *_table_lines(inputs, measured), *_note_lines(inputs, measured),
            *_architecture_lines(inputs)]


def _measured_on_lut_runtime(inputs: ReportInputs) -> dict | None:
    """The measurement of the exported file of the LUT's runtime (else any; None: not measured)."""
    runtime = (inputs.final.get("meta") or {}).get("runtime") or "tflite"
    return inputs.measured.get(runtime) or next(iter(inputs.measured.values()), None)


def _summary_lines(inputs: ReportInputs) -> list[str]:
    final = inputs.final
    return [f"# Search report: {final['space']}", "",
            "Constraints: " + ", ".join(f"`{n} <= {v:g}`" for n, v in inputs.limits.items())
            + f"; {final['iterations']} MCD iterations, {final.get('landing_steps', 0)} landing steps, "
            f"{final.get('search_time_s', 0):.0f} s search, "
            f"J={final['mcd']['candidates']}, L={final['mcd']['layers']}, seed {final['mcd']['seed']}.",
            *_unused_lines(final), *_noise_lines(inputs.history)]


def _noise_lines(history: list[dict]) -> list[str]:
    """How the candidates' standard error compares with the gaps MCD decided on (issue 16)."""
    ses = [c["score_se"] for r in history for c in r.get("candidates", []) if "score_se" in c]
    if not ses:
        return []
    runner_up, median_gap = [], []
    for record in history:
        scores = sorted((c["score"] for c in record.get("candidates", [])), reverse=True)
        if len(scores) >= 2:
            runner_up.append(scores[0] - scores[1])
            median_gap.append(scores[0] - statistics.median(scores))
    line = f"Score noise: standard error {statistics.median(ses):.4f} per candidate (median)"
    if runner_up:
        line += (f"; the winner of an iteration led the runner-up by {statistics.median(runner_up):.4f} and the "
                 f"median candidate by {statistics.median(median_gap):.4f} (medians over iterations)")
    return ["", line + "."]


def _unused_lines(final: dict) -> list[str]:
    """The share of each limit the searched network leaves unused (``final.json``'s ``unused_budget``)."""
    unused = final.get("unused_budget")
    if not unused:
        return []
    return ["", "Unused budget: " + ", ".join(f"{n} {u:.1%} (searched {final['values'][n]:.4g} of "
                                             f"{final['limits'][n]:.4g})" for n, u in unused.items())
            + ("" if final.get("mcd", {}).get("land", True) else " (landing off: `--no-land`)") + "."]


def _table_lines(inputs: ReportInputs, measured: dict | None) -> list[str]:
    """The searched network, then each baseline: held-out / fine-tuned metrics and resources."""
    final, task, space = inputs.final, inputs.task, inputs.space
    lines = ["| " + " | ".join(("network", *task.report_holdout_headers, *task.report_finetune_headers,
                                "LUT latency (ms)", "measured (ms)", "MACs (M)", "depth", "networks scored")) + " |",
             "|" + " --- |" * (6 + len(task.report_holdout_headers) + len(task.report_finetune_headers))]
    lut = final["values"].get("latency_ms")
    meas = f"{measured['median_ms']:.3f} (CoV {measured['cov']:.1%})" if measured else "-"
    scored = sum(len(r.get("candidates", [])) for r in inputs.history) + 1
    cells = ["**searched (MCD)**", *task.report_holdout(final["accuracy"], final.get("holdout_metrics")),
             *task.report_finetune(inputs.finetune), f"{lut:.3f}" if lut is not None else "-", meas,
             f"{final['macs'] / 1e6:.2f}", f"{final['depth']:.2f}", str(scored)]
    lines.append("| " + " | ".join(cells) + " |")
    if inputs.scratch:  # the same architecture trained alone: the reference the fine-tuned figure must beat
        cells = ["searched, trained alone", *["-"] * len(task.report_holdout_headers),
                 *task.report_finetune(inputs.scratch), *cells[-5:-1], "-"]
        lines.append("| " + " | ".join(cells) + " |")
    for name, b in sorted(inputs.baselines.items()):
        cfg = SubnetConfig.from_dict(b["config"])
        lat = b["values"].get("latency_ms")
        cells = [name, *task.report_holdout(b["score"], (b.get("detail") or {}).get("holdout_metrics")),
                 *task.report_finetune(None), f"{lat:.3f}" if lat is not None else "-", "-",
                 f"{space.macs(cfg) / 1e6:.2f}", f"{space.depth(cfg):.2f}", str(b["evaluations"])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _note_lines(inputs: ReportInputs, measured: dict | None) -> list[str]:
    """LUT prediction vs the measured latency, and the exported files."""
    lines = []
    lut = inputs.final["values"].get("latency_ms")
    if measured and lut is not None:
        err = (lut - measured["median_ms"]) / measured["median_ms"]
        lines += ["", f"LUT prediction vs measured ({measured['device']}): {lut:.3f} vs {measured['median_ms']:.3f} ms "
                      f"({err:+.1%})."]
    if inputs.export:
        lines += ["", "Exported: " + ", ".join(f"`{v['path']}` (max output diff {v['max_abs_diff']:.1e})"
                                                for v in inputs.export["files"].values())
                  + f"; weights: {inputs.export['weights']}."]
    return lines


def _architecture_lines(inputs: ReportInputs) -> list[str]:
    """Block strings, searched vs max width of every variable, kernels, the plots."""
    final = inputs.final
    cfg = SubnetConfig.from_dict(final["config"])
    lines = ["", "## Architecture", "", "```", *final["block_strings"], "```", "",
             "| width variable | searched | max |", "| --- | --- | --- |"]
    for name, var in inputs.space.width_vars.items():
        lines.append(f"| {name} | {cfg.widths[name]} | {var.max} |")
    lines += ["", "Kernels: " + ", ".join(f"{b}={k}" for b, k in sorted(cfg.kernels.items())), "",
              f"![trajectory]({TRAJECTORY})", "", f"![trade-off]({TRADEOFF})", ""]
    return lines
