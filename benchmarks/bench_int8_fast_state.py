"""Fast-state LUT rows on this host: each key's p10, minimum over independent builds (issue 12).

    # k builds of one slice into k files, minutes apart, each under the timing lock
    flock /tmp/na-timing.lock lutbuild build --space mbv3-tiny --device local --quantize int8 --db b1.sqlite
    # verify runs (any of the files): their --json holds each network's p10 (`fast_state`)
    flock /tmp/na-timing.lock lutbuild verify --space mbv3-tiny --device local --quantize int8 --db b1.sqlite \\
        --samples 30 --same-batch --json v1.json
    .venv/bin/python -m benchmarks.bench_int8_fast_state --luts b1.sqlite,b2.sqlite,b3.sqlite --reports v1.json,v2.json

This host's core has a slow state (docs/predict.md) that lasts seconds to minutes and slows
XNNPACK's int8 7x7 depthwise 1.65-2.6x; a whole int8 build (about a minute) can run mostly in
it, and then even its p10 rows are slow-state figures (float32 rows' p10 were not seen to move). Per verify report, the
networks' p10 (median over rounds) is scored against (a) each LUT's own p10 rows summed and
(b) the per-key minimum of p10 over all the LUTs, plus the report's overhead once: the
fast-state floor of each key, taken from the builds alone (no row comes from verification
data, nothing is fitted). Prints one line per (report, predictor); writes nothing.
Figures: docs/lut.md, "INT8 slices".
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/bench_int8_fast_state.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from profiler.spaces import resolve_space  # noqa: E402
from profiler.verify import slice_p10_rows  # noqa: E402
from profiler.verify_report import ErrorStats, error_stats  # noqa: E402
from search.spaces.config import SubnetConfig  # noqa: E402


def measured_p10(report: dict) -> list[float]:
    """Each network's p10 (ms) from a `verify --json` report (`fast_state`, or `--same-batch` rounds)."""
    if "fast_state" in report:
        return report["fast_state"]["measured_p10_ms"]
    try:
        return [statistics.median(s["same_batch"]["round_p10_ms"]) for s in report["samples"]]
    except KeyError:
        sys.exit("bench_int8_fast_state: a report without network p10s: rerun verify with this version")


def score(report: dict, luts: list[Path]) -> list[tuple[str, ErrorStats]]:
    """(predictor name, its errors against the report's network p10s) for each LUT and their minimum."""
    space = resolve_space(report["space"])
    nets = [[c.key for c in space.layer_configs(SubnetConfig.from_dict(s["subnet"]))] for s in report["samples"]]
    keys = sorted({k for net in nets for k in net})
    device, runtime, options = report["device"]["device_id"], report["runtime"], report["runtime_options"]
    rows = [slice_p10_rows(lut, device, runtime, options, keys) for lut in luts]
    for lut, got in zip(luts, rows):
        missing = [k for k in keys if got.get(k) is None]
        if missing:
            sys.exit(f"bench_int8_fast_state: {lut}: no p10 row for {len(missing)} key(s) of slice {options}, "
                     f"e.g. {missing[0]}")
    overhead, measured = report["overhead_ms"]["lut"], measured_p10(report)
    lowest = {k: min(r[k] for r in rows) for k in keys}
    out = [(f"p10 rows of {lut.name}", error_stats([sum(r[k] for k in net) + overhead for net in nets], measured))
           for lut, r in zip(luts, rows)]
    out.append((f"min p10 over {len(luts)} builds",
                error_stats([sum(lowest[k] for k in net) + overhead for net in nets], measured)))
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--luts", required=True, help="comma-separated LUT files holding the report's slice")
    parser.add_argument("--reports", required=True, help="comma-separated `lutbuild verify --json` files")
    args = parser.parse_args(argv)
    luts = [Path(p) for p in args.luts.split(",")]
    for path in [*luts, *(Path(p) for p in args.reports.split(","))]:
        if not path.is_file():
            sys.exit(f"bench_int8_fast_state: {path}: no such file")
    print(f"{'report':24} {'predictor':34} {'MAPE %':>7} {'±5 %':>6} {'±10 %':>6} {'Spearman':>8} {'bias %':>7}")
    for path in args.reports.split(","):
        report = json.loads(Path(path).read_text())
        for name, st in score(report, luts):
            print(f"{Path(path).name:24} {name:34} {st.mape_pct:7.2f} {100 * st.within_5pct:5.1f}% "
                  f"{100 * st.within_10pct:5.1f}% {st.spearman:8.4f} {st.bias_pct:+7.2f}")


if __name__ == "__main__":
    main()
