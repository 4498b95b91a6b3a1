"""The devices of a build and their LUT slices: who measures what, and where it resumes.

Every device is its own slice (device_id, runtime, options) and measures the whole plan:
its `todo` is the plan's keys the slice has not measured yet (resume), in plan order, and
with `--passes N` its `again` the keys of passes 2..N (`passes.py`), all cut to `--limit`.
`connect_devices` asks each agent who it is before the LUT file is touched.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from collections.abc import Sequence

from sqlite_utils import Database

from device_agents.contract import AgentError, DeviceInfo
from lut_db.layer_key import LayerConfig, RuntimeSpec
from lut_db.writer import DeviceRecord, LutWriter

from . import calibrate
from .agents import device_label, name_device
from .build_types import BuildOptions, BuildReport
from .errors import ProfilerError
from .passes import measured_passes, pass_todo
from .plan import Plan, reference_layer
from .runtimes import check_agent_delegate, slice_runtime


@dataclass(frozen=True)
class Device:
    """One agent of a build, identified: its label (`--device` spec, or "local"), who it is, and its slice runtime."""

    label: str
    agent: object  # a `device_agents.contract.DeviceAgent`
    info: DeviceInfo
    rt: RuntimeSpec

    @property
    def on_host(self) -> bool:
        """Benchmarks on this host's cores (exports and its batches must take turns)."""
        return getattr(self.agent, "shell", None) is None


@dataclass
class DeviceSlice:
    """One device's part of a build, shared by its worker thread and the writer (main) thread."""

    device: Device
    todo: list[LayerConfig]  # pass 1: keys not measured yet
    complete: bool  # `todo` and `again` are everything the slice still misses (no --limit cut)
    reference: calibrate.Reference  # refreshed by the writer after each committed batch
    report: BuildReport
    error: str = ""  # one line naming the device, when it stopped
    exception: BaseException | None = None  # what stopped it
    #: Set while no batch of this slice waits to be committed: the worker measures its next
    #: batch against the reference the writer refreshed after the previous one.
    committed: threading.Event = field(default_factory=threading.Event)
    #: `--passes N`: the keys of passes 2..N (each re-measured, the lower-p10 row kept: passes.py)
    again: list[list[LayerConfig]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.committed.set()

    @property
    def work(self) -> list[tuple[int, list[LayerConfig]]]:
        """(pass, its keys) in the order a worker measures them; pass 1 = `todo`."""
        return [(k, keys) for k, keys in enumerate([self.todo, *self.again], start=1) if keys]

    @property
    def pending(self) -> int:
        """Keys to measure in this run, over every pass."""
        return len(self.todo) + sum(len(keys) for keys in self.again)

    @property
    def key(self) -> tuple[str, str, str]:
        return self.device.info.device_id, self.device.rt.name, self.device.rt.options

    @property
    def label(self) -> str:
        return self.device.label


def connect_devices(agents: Sequence, runtime: str, options: BuildOptions, name_errors: bool) -> list[Device]:
    """Ask every agent who it is and which runtime version it runs (`AgentError` named after
    the device when `name_errors`); two agents on one device are a user error."""
    devices = []
    for agent in agents:
        label = device_label(agent)
        try:
            info = agent.info()
            rt = slice_runtime(runtime, options.threads, agent.runtime_version(runtime), options.delegate,
                               options.dtype, options.gpu_precision_loss, options.ort_opt, options.context)
            check_agent_delegate(rt, agent, label)
        except AgentError as exc:
            if not name_errors:
                raise
            raise AgentError(name_device(label, str(exc))) from exc
        devices.append(Device(label, agent, info, rt))
    by_id: dict[str, str] = {}
    for d in devices:
        if d.info.device_id in by_id:
            raise ProfilerError(f"--device {by_id[d.info.device_id]} and --device {d.label} are the same device "
                                f"({d.info.device_id}); give each phone once")
        by_id[d.info.device_id] = d.label
    return devices


def open_slices(db: Database, writer: LutWriter, space_name: str, plan: Plan, devices: Sequence[Device],
                options: BuildOptions) -> list[DeviceSlice]:
    """Register the space and the devices, and say what each slice still has to measure."""
    writer.register_space(space_name, plan.keys)
    slices = []
    for d in devices:
        writer.register_device(DeviceRecord.from_info(d.info))
        remaining = plan.remaining(writer.measured_keys(d.info.device_id, d.rt.name, d.rt.options))
        # --passes N: then the keys whose row has seen fewer than k passes, for k = 2..N (resume)
        seen = measured_passes(db, d.info.device_id, d.rt.name, d.rt.options) if options.passes > 1 else {}
        later = pass_todo(plan.measure, seen, options.passes)[1:]
        todo, *again = _cut([remaining, *later], options.limit)
        report = BuildReport(space_name, plan.name, d.info.device_id, d.rt.name, d.rt.version, d.rt.options,
                             planned=len(plan.measure), already_measured=len(plan.measure) - len(remaining),
                             passes=options.passes)
        reference = calibrate.load_reference(db, d.info.device_id, d.rt.name, d.rt.options,
                                             default=reference_layer(plan.measure))
        complete = len(todo) + sum(map(len, again)) == len(remaining) + sum(map(len, later))
        slices.append(DeviceSlice(d, todo, complete, reference, report, again=again))
    return slices


def _cut(passes: list[list[LayerConfig]], limit: int | None) -> list[list[LayerConfig]]:
    """Each pass's keys cut so that all passes together hold at most `limit` (--limit: keys per run)."""
    if limit is None:
        return passes
    out = []
    for keys in passes:
        out.append(keys[:max(0, limit)])
        limit -= len(out[-1])
    return out
