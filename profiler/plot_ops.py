"""Horizontal bar chart of a profile's slowest operators (`lutbuild profile --op-profile --plot`)."""
from __future__ import annotations

from pathlib import Path

from .plots import save_figure
from .profile_model import ProfileReport

LABEL_CHARS = 48  # longer node names (TFLite joins every fused tensor's name) are cut


def plot_op_profile(report: ProfileReport, path: str | Path, top: int = 15) -> Path:
    """Write a PNG of the `top` slowest operators of `report` (ms per inference, share of the
    operators' sum) to `path`; the report must hold an operator profile."""
    import matplotlib  # why: optional plotting, ~0.5 s to load; only `--plot` needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # why: after choosing the Agg backend (no display)

    profile = report.op_profile
    if profile is None:
        raise ValueError("the report has no operator profile to plot")
    ops = list(profile.ops[:top])[::-1]  # slowest at the top
    labels = [_label(op.name, op.op_type) for op in ops]
    ms = [op.ms for op in ops]
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.32 * len(ops)), dpi=120)
    bars = ax.barh(range(len(ops)), ms, color="tab:blue")
    for bar, op in zip(bars, ops):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {100 * profile.share(op):.1f}%",
                va="center", fontsize=7)
    ax.set_yticks(range(len(ops)), labels, fontsize=7)
    ax.set_xlim(0, 1.15 * max(ms, default=1.0))
    ax.set_xlabel("time per inference (ms)")
    t = report.timing
    ax.set_title(f"{Path(report.model).name} · {report.runtime} · {report.device.device_id}\n"
                 f"median {t.median_ms:.3f} ms; top {len(ops)} of {len(profile.ops)} operators "
                 f"({profile.source})", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, path)


def _label(name: str, op_type: str) -> str:
    text = name if op_type in name else f"{name} ({op_type})"
    return text if len(text) <= LABEL_CHARS else text[:LABEL_CHARS - 1] + "…"
