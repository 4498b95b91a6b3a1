"""Predicted-vs-measured scatter of a `verify` report (LUT and MAC proxy, y = x, ±5% band)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .verify_report import VerifyReport


def plot_verify(report: VerifyReport, path: str | Path) -> Path:
    """Write the scatter PNG of `report` (as returned by `verify_lut`) to `path`."""
    import matplotlib  # why: optional plotting, ~0.5 s to load; only `--plot` needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # why: after choosing the Agg backend (no display)

    samples = report.samples
    measured = np.array([s.measured_ms for s in samples])
    lut = np.array([s.predicted_ms for s in samples])
    proxy = np.array([s.mac_proxy_ms for s in samples])
    lo = 0.9 * min(measured.min(), lut.min(), proxy.min())
    hi = 1.1 * max(measured.max(), lut.max(), proxy.max())
    line = np.linspace(lo, hi, 100)

    fig, ax = plt.subplots(figsize=(6, 6), dpi=120)
    ax.fill_between(line, line * 0.95, line * 1.05, color="0.85", label="±5%")
    ax.plot(line, line, color="0.3", lw=1, label="y = x")
    m, lut_stats = report.mac_proxy.stats, report.stats
    ax.scatter(measured, proxy, s=18, marker="x", color="tab:orange",
               label=f"MAC proxy: MAPE {m.mape_pct:.1f}%, ±5% {100 * m.within_5pct:.0f}%")
    ax.scatter(measured, lut, s=18, color="tab:blue",
               label=f"LUT: MAPE {lut_stats.mape_pct:.1f}%, ±5% {100 * lut_stats.within_5pct:.0f}%")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_title(f"{report.space} · {report.runtime} · {report.stats.n} networks", fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def save_figure(fig, path: str | Path) -> Path:
    """Lay out `fig`, write it to `path` (parent folders created) and free it; the path written."""
    import matplotlib.pyplot as plt  # why: only callers that already drew a figure get here

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
