"""The local agent: benchmark model files on this host, the way a phone would.

Each batch runs `runner.py` in a fresh Python process (like the runner on a device), so one
batch's allocations, thread pools and JIT caches never leak into the next. Single-threaded
batches are pinned to one core, chosen deterministically (see `pick_core`), so successive
batches - and successive `lutbuild` runs - land on the same core.
"""
from __future__ import annotations

import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from device_agents import device_state
from device_agents.contract import (
    AgentError,
    BadTiming,
    BatchResult,
    BenchmarkSettings,
    DeviceInfo,
    DeviceState,
    ModelTiming,
    OpProfile,
    runner_args,
)

RUNNER = Path(__file__).with_name("runner.py")
_TIMING_KEYS = ("n", "median_ms", "mean_ms", "p10_ms", "p90_ms", "std_ms", "min_ms", "max_ms")


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """CPU model name from /proc/cpuinfo (x86 "model name", ARM "Hardware"/"Processor")."""
    fields: dict[str, str] = {}
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and value.strip():
                    fields.setdefault(key.strip().lower(), value.strip())
    except OSError:
        pass
    for key in ("model name", "hardware", "processor", "cpu model"):
        value = fields.get(key, "")
        if value and not value.isdigit():  # ARM's "processor : 0" is a core index
            return " ".join(value.split())
    return platform.processor() or platform.machine() or "unknown-cpu"


def pick_core(allowed: set[int] | None = None, root: str = "/") -> int | None:
    """The core a single-threaded batch is pinned to: the highest-numbered of the fastest cores.

    Fastest = highest ``cpuinfo_max_freq`` (the big cluster on big.LITTLE); among equals the
    highest number, because core 0 takes most interrupts and housekeeping. None where this
    OS cannot pin (no `os.sched_setaffinity`).
    """
    if not hasattr(os, "sched_getaffinity"):
        return None
    allowed = allowed if allowed is not None else os.sched_getaffinity(0)
    if not allowed:
        return None
    top = device_state.read_state(root).cpu_max_freq_khz
    return max(allowed, key=lambda core: (top.get(f"cpu{core}", 0), core))


class LocalAgent:
    """`DeviceAgent` for this host. `python`: the interpreter that runs the runner."""

    def __init__(
        self,
        python: str = sys.executable,
        pin: bool = True,
        timeout_s: float | None = 3600.0,
        poll_s: float = 5.0,
    ):
        self.python = python
        self.core = pick_core() if pin else None
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self._versions: dict[str, str] = {}

    # ------------------------------------------------------------------ DeviceAgent
    def info(self) -> DeviceInfo:
        """`cpu_core`: the core single-threaded batches are pinned to ("" when unpinned)."""
        cpu = cpu_model()
        host = socket.gethostname().split(".")[0]
        return DeviceInfo(
            device_id=f"local:{host}:{cpu}",
            model=host,
            soc=cpu,
            abi=platform.machine(),
            os_version=platform.platform(),
            cpu_core="" if self.core is None else str(self.core),
        )

    def runtime_version(self, runtime: str) -> str:
        """The runtime as the runner sees it in its own process, e.g. "onnxruntime 1.32.0"."""
        if runtime not in self._versions:
            proc = self._run_runner(["--runtime", runtime, "--version"], cpus=None)
            self._versions[runtime] = json.loads(proc.stdout.splitlines()[0])["runtime_version"]
        return self._versions[runtime]

    def benchmark(self, models: Sequence[Path], settings: BenchmarkSettings) -> BatchResult:
        models = [Path(m) for m in models]
        state_before = device_state.read_state()
        cpus = [self.core] if settings.threads == 1 and self.core is not None else None
        with tempfile.TemporaryDirectory(prefix="netadaptv2-local-") as tmp:
            list_file = Path(tmp, "models.txt")
            list_file.write_text("".join(f"{m.resolve()}\n" for m in models), encoding="utf-8")
            out = Path(tmp, "results.jsonl")
            proc = self._run_runner(runner_args(settings, str(list_file), str(out)), cpus=cpus, allow_fail=True)
            lines = out.read_text(encoding="utf-8").splitlines() if out.exists() else []
        state_after = device_state.read_state()
        timings = parse_results(lines, models, stderr=proc.stderr, returncode=proc.returncode)
        if not settings.op_profile:
            return BatchResult(timings=timings, state_before=state_before, state_after=state_after)
        profiles, note = parse_op_profiles(lines, models)
        return BatchResult(timings, state_before, state_after, op_profiles=profiles, op_profile_note=note)

    def close(self) -> None:
        pass

    # ------------------------------------------------------------------ thermal guard
    def settle(self, max_wait_s: float) -> DeviceState:
        """Wait until the host is not throttled (polling every `poll_s`), at most `max_wait_s`.

        Returns the last state read; the caller decides what a still-throttled state means
        (re-measure, or record it). A host that is not throttling returns at once.
        """
        deadline = time.monotonic() + max_wait_s
        state = device_state.read_state()
        while state.throttled and time.monotonic() < deadline:
            time.sleep(min(self.poll_s, max(0.0, deadline - time.monotonic())))
            state = device_state.read_state()
        return state

    # ------------------------------------------------------------------ internals
    def _run_runner(self, args: list[str], cpus: list[int] | None, allow_fail: bool = False):
        cmd = [self.python, str(RUNNER), *args]
        if cpus:
            cmd += ["--cpus", ",".join(map(str, cpus))]
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout_s, env=env)
        except subprocess.TimeoutExpired:
            raise AgentError(f"local runner did not finish within {self.timeout_s:.0f} s") from None
        except OSError as exc:
            raise AgentError(f"cannot start the local runner with {self.python}: {exc}") from None
        if proc.returncode != 0 and not allow_fail:
            raise AgentError(f"local runner failed (exit {proc.returncode}): {_last_line(proc.stderr)}")
        return proc


def parse_results(
    lines: Sequence[str], models: Sequence[Path], stderr: str = "", returncode: int = 0
) -> list[ModelTiming]:
    """Runner JSONL -> one `ModelTiming` per model, in order, each `checked`.

    Shared with the ADB agent (same runner, same file). The header line is skipped; a line
    that is not a JSON object with an integer ``index`` is ignored (a torn last line of a
    killed runner: its model counts as missing). A failed or missing model, or a record whose
    numbers no run can give, raises `AgentError` (`BadTiming`) and nothing else.
    """
    by_index: dict[int, dict] = {}
    for line in lines:
        record = _record(line)
        if record is not None and not record.get("header"):
            index = record.get("index")
            if isinstance(index, int) and not isinstance(index, bool):
                by_index[index] = record
    timings = []
    for index, model in enumerate(models):
        record = by_index.get(index)
        if record is None:
            why = _last_line(stderr) or f"exit {returncode}"
            raise AgentError(f"{model.name}: no result from the runner ({why})")
        if "error" in record:
            raise AgentError(f"{model.name}: {' '.join(str(record['error']).split())[:300]}")
        missing = [k for k in _TIMING_KEYS if k not in record]
        if missing:
            raise BadTiming(f"{model.name}: the runner's result lacks {', '.join(missing)}")
        passes = {}
        if "pass_medians_ms" in record:  # > 1 pass: checked with the rest by ModelTiming.checked
            if not isinstance(record["pass_medians_ms"], list):
                raise BadTiming(f"{model.name}: the runner reported pass_medians_ms = "
                                f"{record['pass_medians_ms']!r}, expected a list of ms")
            passes = {"pass_medians_ms": tuple(record["pass_medians_ms"]), "passes_kept": record.get("passes_kept")}
        timing = ModelTiming(name=model.name, **{k: record[k] for k in _TIMING_KEYS}, **passes)
        timings.append(timing.checked("the runner"))
    return timings


def parse_op_profiles(lines: Sequence[str], models: Sequence[Path]) -> tuple[list[OpProfile | None], str]:
    """The ``op_profile`` of each model's runner line (`runner.py --op-profile`), in order, and one
    line saying why a profile is None (the runtime has none: `op_profile_unavailable`).

    Shared with the ADB agent. Call it after `parse_results` (which raises for a missing or
    failed model). A profile the runner could not read (``op_profile_error``) or one no profiler
    gives raises `AgentError` naming the model.
    """
    by_index = {}
    for line in lines:
        record = _record(line)
        if record is not None and isinstance(record.get("index"), int):
            by_index[record["index"]] = record
    profiles: list[OpProfile | None] = []
    note = ""
    for index, model in enumerate(models):
        record = by_index.get(index, {})
        if "op_profile_error" in record:
            why = " ".join(str(record["op_profile_error"]).split())[:300]
            raise AgentError(f"{model.name}: no operator profile: {why}")
        if "op_profile" in record:
            profiles.append(OpProfile.from_json_dict(record["op_profile"], f"{model.name}: the runner"))
        else:
            note = note or " ".join(str(record.get("op_profile_unavailable", "the runner gave no operator profile"))
                                    .split())[:300]
            profiles.append(None)
    return profiles, note


def _record(line: str) -> dict | None:
    """One JSON object of the runner's output, None for anything else."""
    if not isinstance(line, str) or not line.strip():
        return None
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):  # JSONDecodeError, huge numbers, deep nesting
        return None
    return record if isinstance(record, dict) else None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return re.sub(r"\s+", " ", lines[-1])[:300] if lines else ""
