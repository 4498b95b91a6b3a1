"""Mean and 95 % t-interval of per-seed figures and of paired per-seed differences.

The search benchmark compares methods on the same seeds (same super-network, same search
draws, same fine-tune order), so the honest comparison is the paired difference per seed;
its Student-t interval over n seeds (n - 1 degrees of freedom) says whether a gain is
resolved at this scale. Figures a method did not produce (None, NaN) are left out, and the
pair with them.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from scipy.stats import t as student_t


def _clean(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and not math.isnan(float(v))]


def t_interval(values: Sequence[float | None], confidence: float = 0.95) -> dict:
    """{"mean", "std", "n", "half", "lo", "hi", "values"}: mean +- half is the t-interval of the mean.

    std, half, lo and hi are None below 2 values (no interval from one figure).
    """
    vals = _clean(values)
    if not vals:
        return {"mean": None, "std": None, "n": 0, "half": None, "lo": None, "hi": None, "values": []}
    mean = statistics.mean(vals)
    if len(vals) < 2:
        return {"mean": mean, "std": None, "n": 1, "half": None, "lo": None, "hi": None, "values": vals}
    std = statistics.stdev(vals)
    half = float(student_t.ppf(0.5 + confidence / 2, len(vals) - 1)) * std / math.sqrt(len(vals))
    return {"mean": mean, "std": std, "n": len(vals), "half": half, "lo": mean - half, "hi": mean + half,
            "values": vals}


def paired(a: Sequence[float | None], b: Sequence[float | None], confidence: float = 0.95) -> dict:
    """t-interval of the per-seed differences a[i] - b[i] (pairs with a missing figure dropped)."""
    if len(a) != len(b):
        raise ValueError(f"paired: {len(a)} vs {len(b)} figures; pair them by seed")
    diffs = [x - y for x, y in zip(a, b) if _clean([x]) and _clean([y])]
    return t_interval(diffs, confidence)


def resolves(interval: dict, difference: float) -> bool | None:
    """True when the interval is narrow enough to tell a `difference` apart from none
    (half-width below it); None without an interval."""
    return None if interval["half"] is None else interval["half"] < difference


def fmt_interval(interval: dict, digits: int = 1, scale: float = 1.0, sign: bool = False) -> str:
    """``mean ± half`` (the 95 % half-width), ``mean`` alone for one figure, ``-`` for none."""
    if interval["mean"] is None:
        return "-"
    m = interval["mean"] * scale
    text = f"{m:+.{digits}f}" if sign else f"{m:.{digits}f}"
    return text + (f" ± {interval['half'] * scale:.{digits}f}" if interval["half"] is not None else "")
