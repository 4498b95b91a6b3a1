"""`build_lut`: fill a LUT file for a search space on one device or several at once.

plan -> batches -> export -> benchmark on the device(s) -> LUT rows; the engine is
`build_engine.py` (one worker per device, one shared exporter, one writer). Re-running
resumes: every key a slice (device, runtime, options) already measured is skipped, and the
export cache makes already exported files free.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import overload
from collections.abc import Callable, Sequence

from lut_db.connect import lut_errors
from lut_db.schema import open_lut_for_writing

from .block_plan import check_granularity, make_block_plan
from .build_engine import run_build
from .build_slices import connect_devices
from .build_types import BuildOptions, BuildReport, MultiBuildReport
from .errors import ProfilerError
from .passes import check_passes
from .plan import make_plan
from .runtimes import DEFAULT_CACHE_DIR, benchmark_settings, slice_runtime
from .spaces import resolve_space

__all__ = ["BuildOptions", "BuildReport", "MultiBuildReport", "build_lut", "DEFAULT_CACHE_DIR",
           "benchmark_settings", "slice_runtime"]


@overload
def build_lut(space, agents: list | tuple, db_path: str | Path, runtime: str, options: BuildOptions | None = ...,
              progress: bool = ..., log: Callable[[str], None] | None = ...) -> MultiBuildReport: ...


@overload
def build_lut(space, agents: object, db_path: str | Path, runtime: str, options: BuildOptions | None = ...,
              progress: bool = ..., log: Callable[[str], None] | None = ...) -> BuildReport: ...


def build_lut(space, agents, db_path: str | Path, runtime: str, options: BuildOptions | None = None,
              progress: bool = True, log: Callable[[str], None] | None = None):
    """Fill the LUT at `db_path` for `space` (name or `SearchSpace`) on the device(s) of `agents`.

    `agents`: one agent -> its `BuildReport`, and a failure of the device is raised; a list or
    tuple of agents -> a `MultiBuildReport`: every device measured at once, messages name the
    device, and a device failing during the build does not raise (it is in
    `report.failures`, the others finish). User errors (unknown space/plan/runtime, options,
    two agents on the same phone, a file that is not a LUT or has a newer schema) are raised
    before the file is touched.
    """
    start = time.monotonic()
    options = options or BuildOptions()
    several = isinstance(agents, (list, tuple))
    agent_list: Sequence = list(agents) if several else [agents]
    if not agent_list:
        raise ProfilerError("no device to build on")
    space = resolve_space(space)
    slice_runtime(runtime, options.threads, delegate=options.delegate, dtype=options.dtype,  # option errors first
                  gpu_precision_loss=options.gpu_precision_loss, ort_opt=options.ort_opt, context=options.context)
    check_passes(options.passes)
    # --granularity block: whole-block keys + the layers outside blocks, registered as "<space>[block]"
    plan = make_block_plan(space, options.plan) if check_granularity(options.granularity) == "block" \
        else make_plan(space, options.plan)
    devices = connect_devices(agent_list, runtime, options, name_errors=several)
    db = open_lut_for_writing(db_path)
    try:
        with lut_errors(db_path):  # disk full, locked, damaged mid-build: one line naming the file
            report = run_build(db, plan.space, plan, devices, options, several=several, start=start,
                               progress=progress, log=log)
    finally:
        db.close()
    return report if several else report.reports[0]
