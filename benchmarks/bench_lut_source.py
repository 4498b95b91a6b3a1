"""This host's LUT of a space for the benchmarks: built if missing, finished if a build was cut short.

    .venv/bin/python -m benchmarks.bench_lut_source --space mbv3-tiny --db runs/lut/mbv3-tiny.sqlite

`ensure_lut` is what a benchmark calls before it needs LUT latencies (`bench_search`): it runs
the profiler's one build entry (`profiler.build.build_lut`, as `lutbuild build --device local
--plan full` and `nas-search demo` do) with the local agent, which resumes: keys already in
the file are skipped (a complete LUT returns in well under a second), and exported layer files
come from the shared export cache (`~/.cache/netadaptv2/models`). It then loads the slice and
checks with `LatencyPredictor(space, table).check()` that every layer key of the space has a
latency, so a benchmark never starts on a LUT that would fail half way through a search.
Run as a script it builds one LUT and prints the build report and the wall time.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/bench_lut_source.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from device_agents.contract import AgentError  # noqa: E402
from device_agents.local import LocalAgent  # noqa: E402
from lut_db import LatencyTable  # noqa: E402
from lut_db.errors import UserError  # noqa: E402
from profiler.build import BuildOptions, build_lut  # noqa: E402
from profiler.predictor import LatencyPredictor  # noqa: E402
from search.spaces import get_space  # noqa: E402

PLAN = "full"  # every key measured: the tiny spaces' LUTs are exact, not interpolated (as the demo's)


def ensure_lut(space_name: str, db_path: str | Path, runtime: str = "tflite",
               log: Callable[[str], None] | None = None, *, options: BuildOptions | None = None) -> Path:
    """This host's `runtime` LUT of `space_name` in `db_path`, built or completed there; returns the path.

    `options` None: `BuildOptions(plan="full")` (single thread, XNNPACK, the shared export
    cache). Raises the profiler's one-line errors (unknown space or runtime, a file that is
    not a LUT) before touching the file, and `MissingLatencyError` if keys are still missing
    after the build (a device that failed part of it).
    """
    space = get_space(space_name)
    options = options or BuildOptions(plan=PLAN)
    db = Path(db_path)
    db.parent.mkdir(parents=True, exist_ok=True)
    agent = LocalAgent()
    try:
        report = build_lut(space, agent, db, runtime, options, progress=False, log=log)
    finally:
        agent.close()
    if log is not None:
        log(report.summary())
    # the slice the build wrote (its report names it: every slice option, ort_opt and dtype included)
    LatencyPredictor(space, LatencyTable.load(db, report.device_id, runtime, report.runtime_options)).check()
    return db


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="mbv3-tiny", help="search space (`lutbuild spaces`)")
    p.add_argument("--db", required=True, help="LUT file (created if missing, completed if partial)")
    p.add_argument("--runtime", default="tflite", choices=("tflite", "onnx"))
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="export cache [~/.cache/netadaptv2/models]; an empty folder times a cold build")
    args = p.parse_args(argv)
    options = BuildOptions(plan=PLAN) if args.cache_dir is None else BuildOptions(plan=PLAN, cache_dir=args.cache_dir)
    start = time.perf_counter()
    try:
        db = ensure_lut(args.space, args.db, args.runtime, log=lambda line: print(line, file=sys.stderr),
                        options=options)
    except (UserError, AgentError) as exc:  # one line naming the file / field, exit code 1
        print(f"bench_lut_source: error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.space} {args.runtime} LUT ready in {db}: {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
