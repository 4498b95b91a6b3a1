"""The LUT build engine: one worker thread per device, one shared exporter, one writer.

Per device (its slice, `build_slices.py`), in plan order and in batches: the worker asks
`SharedExports` for the batch's model files (exported once for every device, one batch
ahead), benchmarks them (`measure.py`: overhead model + reference layer + layers,
re-measured while the reference drifts) and hands the batch to the main thread, the only
one that touches SQLite: it commits the batch's rows in one transaction (`lut_rows.py`) and
refreshes the slice's reference and overhead calibration before the worker measures the
next batch. After every worker ended, each complete slice of a `sparse` plan gets its
interpolated rows. A kill loses at most the batches in flight, one per device, and a re-run
resumes each slice where it stopped.

A device on this host's own cores (`--device local`) takes turns with the exports
(`host_cpu` lock): never benchmark while exporting on the same cores. Phones don't need that.

With `several` devices (`build_lut` given a list) messages name the device, and a device
that fails (`AgentError`, a failed export) stops alone and is listed in the report while
the others finish; any other exception is a bug, raised after the others finished. With one
device (`build_lut` given an agent) any failure is raised, as from a plain loop.

Noise protocol (medians of one model drift ~±3% between processes over time, ≤1.4% within
one): each batch is timed with `repeats` interleaved passes (runner `--repeats`), and
carries the overhead model and a fixed reference layer (see `calibrate.py`); a batch whose
reference runs more than `drift_pct` slower than the slice's fast state so far is re-measured
up to `max_remeasure` times, the fastest attempt kept, and its drift is stored with its rows
either way (`measure.py`, `calibrate.py`). With `--passes N`
every key is then measured N-1 more times in fresh batches (same protocol, minutes later: another
host state), and each key keeps the whole row of its lowest-p10 pass (`passes.py`).
"""
from __future__ import annotations

import contextlib
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable, Sequence

from sqlite_utils import Database
from tqdm import tqdm

from device_agents.contract import AgentError, BenchmarkSettings
from lut_db.writer import LutWriter

from . import calibrate
from .agents import name_device
from .block_plan import BlockPlan, interpolate_block_slice
from .build_slices import Device, DeviceSlice, open_slices
from .build_types import BuildOptions, MultiBuildReport
from .export import ModelCache
from .lut_rows import FinishedBatch, commit_batch, interpolate_slice
from .context_boundary import input_layers, measure_boundary
from .measure import context_plan, measure_batch
from .plan import Plan, batches
from .runtimes import NCHWC, benchmark_settings
from .shared_exports import ExportFailed, SharedExports


@dataclass
class _Run:
    """What the workers and the writer of one build share."""

    options: BuildOptions
    settings: BenchmarkSettings
    several: bool  # name devices in messages; report device failures instead of raising them
    start: float  # time.monotonic() when the build started
    say: Callable[[str], None] = print
    host_cpu: threading.Lock | None = None  # held by exports and by benchmarks on this host
    results: queue.Queue = field(default_factory=queue.Queue)  # (kind, slice, payload) to the writer
    stop: threading.Event = field(default_factory=threading.Event)
    bug: BaseException | None = None  # the first exception that is not a device's failure

    def device_say(self, s: DeviceSlice) -> Callable[[str], None]:
        """`say` for a worker's messages: named after its device when there are several."""
        if not self.several:
            return self.say
        return lambda msg: self.say(msg.replace("lutbuild: ", f"lutbuild: {s.label}: ", 1))


def run_build(db: Database, space_name: str, plan: Plan, devices: Sequence[Device], options: BuildOptions, *,
              several: bool, start: float, progress: bool = True,
              log: Callable[[str], None] | None = None) -> MultiBuildReport:
    """Fill the slices of `devices` with `plan` (module docstring); `db` is open and migrated."""
    writer = LutWriter(db)
    slices = open_slices(db, writer, space_name, plan, devices, options)
    runtime = slices[0].device.rt.name
    settings = benchmark_settings(runtime, options.threads, options.repeats, options.delegate,
                                  **{"gpu_precision_loss": options.gpu_precision_loss, "ort_opt": options.ort_opt,
                                     **options.settings})
    run = _Run(options, settings, several, start)
    run.host_cpu = threading.Lock() if any(s.device.on_host for s in slices) else None
    result = MultiBuildReport([s.report for s in slices])
    desc = f"lutbuild {space_name} {runtime}" + (f" on {len(slices)} device(s)" if several else "")
    bar = tqdm(total=sum(s.pending for s in slices), desc=desc, unit="layer", file=sys.stderr,
               disable=not progress, dynamic_ncols=True)
    run.say = log or (lambda msg: bar.write(msg, file=sys.stderr))
    threads: list[threading.Thread] = []
    try:
        with ModelCache(options.cache_dir, runtime, options.jobs, dtype=options.dtype,
                        context=options.context) as cache:
            _measure_and_commit(db, writer, plan.name, slices, cache, run, bar, result, threads)
            result.exported, result.export_cpu_s = cache.exported, cache.export_cpu_s
            if len(slices) == 1:
                slices[0].report.exported, slices[0].report.export_cpu_s = cache.exported, cache.export_cpu_s
    finally:
        run.stop.set()
        bar.close()
    for t in threads:
        t.join(timeout=5)
    _finish_slices(db, writer, space_name, plan, slices, run)
    result.wall_s = time.monotonic() - start
    _raise_failure(slices, run)
    return result


def _measure_and_commit(db: Database, writer: LutWriter, plan_name: str, slices: list[DeviceSlice],
                        cache: ModelCache, run: _Run, bar: tqdm, result: MultiBuildReport,
                        threads: list[threading.Thread]) -> None:
    """Start the exporter and one worker per slice with work; commit their batches until all ended."""
    # What every batch of a slice carries, exported before the workers start.
    refs = list(dict.fromkeys(s.reference.layer for s in slices))
    with run.host_cpu if run.host_cpu is not None else contextlib.nullcontext():
        overhead = cache.overhead()
        ref_paths = dict(zip((c.key for c in refs), cache.layers(refs)))
    exports = SharedExports(cache, run.host_cpu, ready=ref_paths)
    finished = False
    try:
        for s in slices:
            if not s.pending:
                s.report.wall_s = time.monotonic() - run.start
                continue
            t = threading.Thread(target=_work, name=f"lutbuild-{s.label}", daemon=True,
                                 args=(s, exports, overhead, ref_paths[s.reference.layer.key], run))
            threads.append(t)
            t.start()
        _write_batches(db, writer, plan_name, len(threads), run, bar, result)
        finished = True
    finally:
        run.stop.set()
        exports.close(wait=finished)  # interrupted: don't wait for the export in flight


def _work(s: DeviceSlice, exports: SharedExports, overhead: Path, reference_path: Path, run: _Run) -> None:
    """One device's worker: export (shared) -> benchmark -> hand the batch to the writer."""
    say = run.device_say(s)
    lock = run.host_cpu if s.device.on_host and run.host_cpu is not None else contextlib.nullcontext()
    try:
        # pass 1 (keys not measured yet), then passes 2..N (--passes), each in batches of its own
        chunks = [(k, batch) for k, keys in s.work for batch in batches(keys, run.options.batch_size)]
        for i, (pass_no, batch) in enumerate(chunks):
            while not s.committed.wait(0.5):  # the writer refreshes the reference after each commit
                if run.stop.is_set():
                    return
            if run.stop.is_set():
                break
            t0 = time.monotonic()
            paths = exports.request(batch, prefetch=chunks[i + 1][1] if i + 1 < len(chunks) else ())
            t1 = time.monotonic()
            reference = s.reference
            with lock:
                measurement = measure_batch(s.device.agent, [overhead, reference_path, *paths], run.settings,
                                            reference, run.options, say,
                                            context_plan(exports.cache, batch, run.options.context))
            s.report.export_s += t1 - t0
            s.report.benchmark_s += time.monotonic() - t1
            s.committed.clear()
            run.results.put(("batch", s, FinishedBatch(batch, measurement, reference, pass_no)))
        run.results.put(("done", s, None))
    except BaseException as exc:  # noqa: BLE001 - reported by the writer, which decides
        run.results.put(("error", s, exc))


def _write_batches(db: Database, writer: LutWriter, plan_name: str, running: int, run: _Run, bar: tqdm,
                   result: MultiBuildReport) -> None:
    """The writer loop (main thread): commit each finished batch, record each worker's end."""
    while running:
        try:
            kind, s, payload = run.results.get(timeout=0.5)
        except queue.Empty:
            continue
        if kind == "batch":
            commit_batch(db, writer, s, payload, plan_name, run.settings, run.options)
            s.committed.set()
            bar.update(len(payload.layers))
            continue
        running -= 1
        s.report.reconnects = getattr(s.device.agent, "reconnects", 0)
        if kind == "error":
            _record_failure(s, payload, run, result, others_running=running > 0)
        s.report.wall_s = time.monotonic() - run.start


def _record_failure(s: DeviceSlice, exc: BaseException, run: _Run, result: MultiBuildReport,
                    others_running: bool) -> None:
    """A worker ended with `exc`: a device failure (the device stops) or a bug (raised at the end)."""
    s.exception = exc
    if isinstance(exc, (AgentError, ExportFailed)):
        s.error = name_device(s.label, str(exc))
        if others_running:
            run.say(f"lutbuild: {s.error} -- this device stopped, the other(s) go on")
    else:
        s.error = name_device(s.label, f"{type(exc).__name__}: {exc}")
        run.bug = run.bug or exc
    result.failures.append(s.error)


def _finish_slices(db: Database, writer: LutWriter, space_name: str, plan: Plan, slices: list[DeviceSlice],
                   run: _Run) -> None:
    """Each slice's final overhead calibration, and the interpolated rows of a complete sparse slice."""
    for s in slices:
        s.report.overhead_ms = calibrate.update_overhead(db, writer, *s.key)
        if run.options.context == NCHWC and not s.error:  # in-context slice: its network boundary, once
            with ModelCache(run.options.cache_dir, s.device.rt.name, run.options.jobs,
                            context=run.options.context) as cache:
                measure_boundary(db, writer, s.device.agent, cache, input_layers(space_name, plan.measure),
                                 run.settings, s.key, remeasure=s.report.measured > 0)
        if s.error or not plan.interpolate or not s.complete:
            continue
        fill = interpolate_block_slice if isinstance(plan, BlockPlan) else interpolate_slice  # --granularity block
        s.report.interpolated, s.report.not_interpolated = fill(db, writer, plan, s.device.info.device_id, s.device.rt)
        s.report.wall_s = time.monotonic() - run.start
        if s.report.not_interpolated:
            who = f"{s.label}: " if run.several else ""
            run.say(f"lutbuild: warning: {who}{s.report.not_interpolated} key(s) of {space_name} could not "
                    "be interpolated (too few measured neighbours); they stay missing")


def _raise_failure(slices: list[DeviceSlice], run: _Run) -> None:
    """One device: its failure, as it was raised (an export's own error, not its wrapper).
    Several: only a bug (device failures are in the report)."""
    if not run.several:
        exc = next((s.exception for s in slices if s.exception is not None), None)
        if exc is not None:
            raise exc.__cause__ if isinstance(exc, ExportFailed) and exc.__cause__ is not None else exc
    if run.bug is not None:
        raise run.bug  # a bug, not a device problem: the traceback, after the other devices finished
