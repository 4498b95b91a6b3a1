"""Several devices fill one LUT at once: one worker thread per device, one writer.

Every device is its own LUT slice (device_id, runtime, options), so every device measures
the whole plan: each worker walks the plan's keys its slice has not measured yet, in plan
order and in batches. The work shared between them is the export: a model file is exported
once on the host (`SharedExports`: one thread owns the `ModelCache` and its worker
processes; a key is exported once however many devices want it, in the order the workers
need them, one batch ahead of each worker), and every device pushes the same file.

The main thread is the only one that touches SQLite: workers hand each finished batch over
a queue and it commits the batch's rows in one transaction, then refreshes the slice's
reference and overhead calibration. A kill therefore loses at most the batches in flight,
one per device, and a re-run resumes each slice where it stopped.

A worker whose device fails (its agent gave up reconnecting, the binary cannot run, ...)
stops after the batches it already handed over; the others go on; the report lists the
failure as one line naming the device and `lutbuild` exits non-zero.

A `--device local` among them benchmarks on the host's own cores: exports and its batches
then take turns (`host_cpu` lock), as in the single-device build. Phones don't need that.
"""
from __future__ import annotations

import contextlib
import heapq
import itertools
import queue
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from device_agents.contract import AgentError
from lut_db.layer_key import LayerConfig, RuntimeSpec
from lut_db.schema import open_lut
from lut_db.writer import DeviceRecord, LutWriter

from . import calibrate
from .agents import device_label, name_device
from .build import (BuildOptions, BuildReport, _interpolate, _measure, _row, benchmark_settings, slice_runtime)
from .errors import ProfilerError
from .export import ModelCache
from .plan import Plan, batches, make_plan, reference_layer
from .spaces import resolve_space


class ExportFailed(Exception):
    """An export the worker waited for failed in the export thread (the cause is chained)."""


class SharedExports:
    """Layer models on disk, exported once per key by one thread that owns the cache.

    `request(cfgs, prefetch)` blocks until every model of `cfgs` is on disk and returns
    their paths; `prefetch` (the caller's next batch) is exported when nothing urgent waits.
    Urgent requests go first, in arrival order; keys already exported or in flight are not
    queued again. `host_cpu`, when given, is held for each export chunk (a local benchmark
    holds it too, so the two never share the host's cores).
    """

    def __init__(self, cache: ModelCache, host_cpu: threading.Lock | None = None, ready: dict[str, Path] | None = None):
        self.cache = cache
        self._host_cpu = host_cpu
        self._cond = threading.Condition()
        self._ready: dict[str, Path] = dict(ready or {})  # key -> model file on disk
        self._failed: dict[str, BaseException] = {}
        self._current: set[str] = set()  # being exported now
        self._queued: tuple[set[str], set[str]] = (set(), set())  # urgent, prefetch
        self._heap: list[tuple[int, int, list[LayerConfig]]] = []  # (priority, order, chunk)
        self._order = itertools.count()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="lutbuild-export", daemon=True)
        self._thread.start()

    def request(self, cfgs: Sequence[LayerConfig], prefetch: Sequence[LayerConfig] = ()) -> list[Path]:
        with self._cond:
            self._enqueue(cfgs, 0)
            self._enqueue(prefetch, 1)
            while True:
                failed = next((self._failed[c.key] for c in cfgs if c.key in self._failed), None)
                if failed is not None:
                    raise ExportFailed(f"export failed: {failed}") from failed
                if all(c.key in self._ready for c in cfgs):
                    break
                if self._closed:
                    raise ExportFailed("the export thread was stopped")
                self._cond.wait()
            return [self._ready[c.key] for c in cfgs]

    def close(self, wait: bool = True) -> None:
        """Stop the export thread (after the chunk in flight when `wait`)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if wait:
            self._thread.join()

    def _enqueue(self, cfgs: Sequence[LayerConfig], priority: int) -> None:
        skip = self._ready.keys() | self._failed.keys() | self._current | self._queued[0]
        if priority:
            skip |= self._queued[1]
        todo = [c for c in dict.fromkeys(cfgs) if c.key not in skip]
        if todo:
            self._queued[priority].update(c.key for c in todo)
            heapq.heappush(self._heap, (priority, next(self._order), todo))
            self._cond.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._heap and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                _, _, chunk = heapq.heappop(self._heap)
                chunk = [c for c in chunk if c.key not in self._ready and c.key not in self._failed
                         and c.key not in self._current]
                keys = {c.key for c in chunk}
                for queued in self._queued:
                    queued.difference_update(keys)
                self._current = keys
            if not chunk:
                continue
            failure, paths = None, []
            try:
                with self._host_cpu if self._host_cpu is not None else contextlib.nullcontext():
                    paths = self.cache.layers(chunk)
            except BaseException as exc:  # noqa: BLE001 - handed to the workers waiting for it
                failure = exc
            with self._cond:
                if failure is None:
                    self._ready.update((c.key, Path(path)) for c, path in zip(chunk, paths))
                else:
                    self._failed.update((k, failure) for k in keys)
                self._current = set()
                self._cond.notify_all()


@dataclass
class _Slice:
    """One device's part of the build, shared by its worker and the writer."""

    label: str  # `--device` spec (or "local"): how messages name the device
    agent: object
    info: object
    rt: RuntimeSpec
    todo: list[LayerConfig]
    complete: bool  # `todo` is everything the slice still misses (no --limit cut)
    reference: calibrate.Reference
    report: BuildReport
    host_cpu: bool  # benchmarks on this host's cores
    error: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        return self.info.device_id, self.rt.name, self.rt.options


@dataclass
class MultiBuildReport:
    """What one `build_lut_multi` call did: a `BuildReport` per device, and the failures."""

    reports: list[BuildReport]
    failures: list[str] = field(default_factory=list)  # one line per device that stopped
    exported: int = 0
    export_cpu_s: float = 0.0
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        lines = [r.summary() for r in self.reports]
        if len(self.reports) > 1:
            lines.append(f"{len(self.reports)} devices, {len(self.failures)} stopped; exported {self.exported} "
                         f"file(s) once for all ({self.export_cpu_s:.1f} CPU s); total {self.wall_s:.1f} s")
        return "\n".join(lines)


def _is_local(agent) -> bool:
    return getattr(agent, "shell", None) is None


def build_lut_multi(space, agents: Sequence, db_path: str | Path, runtime: str,
                    options: BuildOptions = BuildOptions(), progress: bool = True,
                    log: Callable[[str], None] | None = None) -> MultiBuildReport:
    """Fill the LUT at `db_path` for `space` on every agent's device at once (module docstring).

    User errors (unknown space/plan/runtime, options, two agents on the same phone, a file
    that is not a LUT) are raised before the file is touched. A device failing during the
    build does not raise: it is in `report.failures`, the other devices finish.
    """
    start = time.monotonic()
    if not agents:
        raise ProfilerError("no device to build on")
    space = resolve_space(space)
    slice_runtime(runtime, options.threads, delegate=options.delegate)  # option errors before any work
    plan = make_plan(space, options.plan)
    prepared = []
    for agent in agents:
        label = device_label(agent)
        try:
            info = agent.info()
            rt = slice_runtime(runtime, options.threads, agent.runtime_version(runtime), options.delegate)
        except AgentError as exc:
            raise AgentError(name_device(label, str(exc))) from exc
        prepared.append((label, agent, info, rt))
    by_id: dict[str, str] = {}
    for label, _, info, _ in prepared:
        if info.device_id in by_id:
            raise ProfilerError(f"--device {by_id[info.device_id]} and --device {label} are the same device "
                                f"({info.device_id}); give each phone once")
        by_id[info.device_id] = label
    db = open_lut(db_path, create=True)
    try:
        return _build_multi(db, space, plan, prepared, options, progress, log, start)
    finally:
        db.close()


def _build_multi(db, space, plan: Plan, prepared, options: BuildOptions, progress: bool, log,
                 start: float) -> MultiBuildReport:
    from tqdm import tqdm

    writer = LutWriter(db)
    writer.register_space(space.name, plan.keys)
    slices: list[_Slice] = []
    for label, agent, info, rt in prepared:
        writer.register_device(DeviceRecord.from_info(info))
        measured = writer.measured_keys(info.device_id, rt.name, rt.options)
        remaining = plan.remaining(measured)
        todo = remaining[:options.limit] if options.limit is not None else remaining
        report = BuildReport(space.name, plan.name, info.device_id, rt.name, rt.version, rt.options,
                             planned=len(plan.measure), already_measured=len(plan.measure) - len(remaining))
        reference = calibrate.load_reference(db, info.device_id, rt.name, rt.options,
                                             default=reference_layer(plan.measure))
        slices.append(_Slice(label, agent, info, rt, todo, len(todo) == len(remaining), reference, report,
                             host_cpu=_is_local(agent)))
    settings = benchmark_settings(slices[0].rt.name, options.threads, options.repeats, options.delegate,
                                  **options.settings)
    total = sum(len(s.todo) for s in slices)
    bar = tqdm(total=total, desc=f"lutbuild {space.name} {slices[0].rt.name} on {len(slices)} device(s)",
               unit="layer", file=sys.stderr, disable=not progress, dynamic_ncols=True)
    say = log or (lambda msg: bar.write(msg, file=sys.stderr))
    host_cpu = threading.Lock() if any(s.host_cpu for s in slices) else None
    results: queue.Queue = queue.Queue()
    stop = threading.Event()
    result = MultiBuildReport([s.report for s in slices])
    bug: BaseException | None = None
    threads: list[threading.Thread] = []
    try:
        with ModelCache(options.cache_dir, slices[0].rt.name, options.jobs) as cache:
            # What every batch of a slice carries, exported before the workers start.
            refs = list(dict.fromkeys(s.reference.layer for s in slices))
            with host_cpu if host_cpu is not None else contextlib.nullcontext():
                overhead = cache.overhead()
                ref_paths = dict(zip((c.key for c in refs), cache.layers(refs)))
            exports = SharedExports(cache, host_cpu, ready=ref_paths)
            finished = False
            try:
                for s in slices:
                    if not s.todo:
                        s.report.wall_s = time.monotonic() - start
                        continue
                    t = threading.Thread(target=_work, name=f"lutbuild-{s.label}", daemon=True,
                                         args=(s, exports, overhead, ref_paths[s.reference.layer.key], settings,
                                               options, host_cpu, results, stop, say))
                    threads.append(t)
                    t.start()
                running = len(threads)
                while running:
                    try:
                        kind, s, payload = results.get(timeout=0.5)
                    except queue.Empty:
                        continue
                    if kind == "batch":
                        _commit(db, writer, s, payload, plan.name, settings, options)
                        bar.update(len(payload["batch"]))
                        continue
                    running -= 1
                    s.report.reconnects = getattr(s.agent, "reconnects", 0)
                    if kind == "error":
                        exc = payload
                        if isinstance(exc, (AgentError, ExportFailed)):
                            s.error = name_device(s.label, str(exc))
                            result.failures.append(s.error)
                            if running:
                                say(f"lutbuild: {s.error} -- this device stopped, the other(s) go on")
                        else:
                            s.error = name_device(s.label, f"{type(exc).__name__}: {exc}")
                            result.failures.append(s.error)
                            bug = bug or exc
                    s.report.wall_s = time.monotonic() - start
                finished = True
            finally:
                stop.set()
                exports.close(wait=finished)  # interrupted: don't wait for the export in flight
            result.exported, result.export_cpu_s = cache.exported, cache.export_cpu_s
            if len(slices) == 1:
                slices[0].report.exported, slices[0].report.export_cpu_s = cache.exported, cache.export_cpu_s
    finally:
        stop.set()
        bar.close()
    for t in threads:
        t.join(timeout=5)
    for s in slices:
        s.report.overhead_ms = calibrate.update_overhead(db, writer, *s.key)
        if not s.error and plan.interpolate and s.complete:
            s.report.interpolated, s.report.not_interpolated = _interpolate(db, writer, plan, s.info.device_id, s.rt)
            if s.report.not_interpolated:
                say(f"lutbuild: warning: {s.label}: {s.report.not_interpolated} key(s) of {space.name} could not "
                    "be interpolated (too few measured neighbours); they stay missing")
    result.wall_s = time.monotonic() - start
    if bug is not None:
        raise bug  # a bug, not a device problem: the traceback, after the other devices finished
    return result


def _work(s: _Slice, exports: SharedExports, overhead: Path, reference_path: Path, settings, options: BuildOptions,
          host_cpu: threading.Lock | None, results: queue.Queue, stop: threading.Event, say) -> None:
    """One device's worker: export (shared) -> benchmark -> hand the batch to the writer."""
    try:
        chunks = list(batches(s.todo, options.batch_size))
        for i, batch in enumerate(chunks):
            if stop.is_set():
                break
            t0 = time.monotonic()
            paths = exports.request(batch, prefetch=chunks[i + 1] if i + 1 < len(chunks) else ())
            t1 = time.monotonic()
            reference = s.reference  # the writer refreshes it after each commit
            lock = host_cpu if s.host_cpu and host_cpu is not None else contextlib.nullcontext()
            with lock:
                measured = _measure(s.agent, [overhead, reference_path, *paths], settings, reference, options,
                                    lambda msg: say(msg.replace("lutbuild: ", f"lutbuild: {s.label}: ", 1)))
            s.report.export_s += t1 - t0
            s.report.benchmark_s += time.monotonic() - t1
            results.put(("batch", s, {"batch": batch, "measured": measured, "reference": reference}))
        results.put(("done", s, None))
    except BaseException as exc:  # noqa: BLE001 - reported by the writer, which decides
        results.put(("error", s, exc))


def _commit(db, writer: LutWriter, s: _Slice, payload: dict, plan_name: str, settings, options: BuildOptions) -> None:
    """Write one finished batch of one slice (the writer thread only)."""
    result, ref_ms, overhead_ms, drift, attempts = payload["measured"]
    batch = payload["batch"]
    provenance = {"batch": uuid.uuid4().hex[:12], "overhead_ms": overhead_ms,
                  "reference_key": payload["reference"].layer.key, "reference_ms": ref_ms,
                  "reference_drift_pct": round(drift, 3), "repeats": settings.repeats, "attempts": attempts}
    rows = [_row(cfg, timing, overhead_ms, result, s.info, s.rt, plan_name, settings, provenance)
            for cfg, timing in zip(batch, result.timings[2:])]
    writer.write(rows)  # one transaction: the whole batch or nothing
    s.reference = calibrate.update_reference(db, writer, *s.key, s.reference.layer)
    calibrate.update_overhead(db, writer, *s.key)
    s.report.measured += len(rows)
    s.report.remeasured_batches += attempts > 1
    s.report.drifted_batches += abs(drift) > options.drift_pct
