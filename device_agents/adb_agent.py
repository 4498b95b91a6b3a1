"""`AdbAgent`: benchmark model files on an Android phone over ADB.

Three backends, chosen by what the user has for the phone:
* `benchmark_model` (TFLite) or `onnxruntime_perf_test` (ONNX): a host binary given with
  `--benchmark-binary`, pushed once to /data/local/tmp/netadaptv2 (re-pushed when its
  sha256 differs) and run per model from one generated sh script;
* the Python runner (`runner.py`) for phones/boards with `python3` and a runtime.

Resume contract with the profiler: `benchmark()` returns every result of the batch or
raises. A dropped connection inside it is handled here: reconnect with backoff and run
the whole batch again (bounded), counting `reconnects` for the log.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from . import device_state
from .adb_batch import (
    BATCH_DIR,
    DEVICE_ROOT,
    RUNNER,
    TOOL_BACKENDS,
    BatchPlan,
    parse_df_available_kb,
    plan_batch,
    q,
    run_command,
    runner_list_file,
    runner_script,
    safe_local_path,
    split_tool_results,
    tool_script,
)
from .adb_transport import DeviceDisconnected, DeviceShell, open_transport
from .contract import AgentError, BatchResult, BenchmarkSettings, DeviceInfo, DeviceState, ModelTiming, OpProfile
from .gpu_delegate import GPU, GpuDelegation, parse_gpu_delegation
from .local import parse_op_profiles, parse_results
from .tool_output import parse_benchmark_model, parse_op_profile, parse_perf_test

RUNNER_SOURCE = Path(__file__).with_name(RUNNER)
PROPS = ("ro.product.model", "ro.soc.model", "ro.board.platform", "ro.hardware", "ro.product.cpu.abi",
         "ro.build.version.release", "ro.serialno")
_ABI_ERRORS = ("not executable", "exec format error", "no such file", "can't execute",
               "cannot execute", "syntax error", "permission denied")
SHORT_S = 30.0  # getprop, sha256sum, df: anything but the benchmark itself


def sanitize(text: str) -> str:
    """Keep ids to [A-Za-z0-9._-]: they become LUT keys and host folder names."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text.strip()).strip("_") or "unknown"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class AdbAgent:
    """A `DeviceAgent` for one phone. Not thread-safe: one agent per device and worker."""

    def __init__(self, shell: DeviceShell, *, runtime: str, workdir: Path, binary: Path | None = None,
                 batch_tries: int = 3, settle_max_s: float = 120.0, settle_poll_s: float = 10.0,
                 batch_timeout_s: float | None = None, cpu_core: int | None = None):
        if runtime not in TOOL_BACKENDS:
            raise AgentError(f"unknown runtime {runtime!r} (tflite or onnx)")
        self.shell = shell
        self.runtime = runtime
        self.binary = Path(binary) if binary else None
        if self.binary is not None and not self.binary.is_file():
            raise AgentError(f"benchmark binary not found: {self.binary}")
        self.workdir = Path(workdir) / sanitize(shell.serial)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.batch_tries = batch_tries  # whole-batch re-runs after a dropped connection
        self.settle_max_s = settle_max_s  # longest wait for a hot phone to cool down
        self.settle_poll_s = settle_poll_s
        self.batch_timeout_s = batch_timeout_s  # None: 60 s + 30 s per model and repeat
        self.cpu_core = cpu_core  # force this core; None: a big core (1 thread) / all big cores
        self.remeasured = 0  # batches measured again because the phone got hot meanwhile
        self._info: DeviceInfo | None = None
        self._versions: dict[str, str] = {}
        self._pushed: set[str] = set()  # device tools verified on the current connection
        self._has_taskset: bool | None = None

    # --- DeviceAgent -------------------------------------------------------------------------
    @property
    def reconnects(self) -> int:
        return self.shell.reconnects

    def info(self) -> DeviceInfo:
        if self._info is None:
            script = "; ".join(f"echo {q(p)}=$(getprop {q(p)})" for p in PROPS)
            out = self._checked(script, "getprop")
            props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
            model = props.get("ro.product.model", "")
            serial = props.get("ro.serialno") or self.shell.serial  # stable across USB and Wi-Fi
            soc = next((props[k] for k in ("ro.soc.model", "ro.board.platform", "ro.hardware") if props.get(k)), "")
            self._info = DeviceInfo(
                device_id=f"android:{sanitize(model)}:{sanitize(serial)}", model=model, soc=soc,
                abi=props.get("ro.product.cpu.abi", ""), os_version=props.get("ro.build.version.release", ""),
                cpu_core=self._cpus_for(1, self.read_state()))
        return self._info

    def runtime_version(self, runtime: str) -> str:
        """The runner's runtime version, or the tool name + the sha256 of the pushed binary."""
        self._check_runtime(runtime)
        if runtime not in self._versions:
            if self.binary is None:
                self._retrying(self._ensure_runner)
                cmd = f"python3 {q(DEVICE_ROOT + '/' + RUNNER)} --runtime {q(runtime)} --version"
                out, rc = self._retrying(lambda: self.shell.shell(cmd, SHORT_S))
                if rc == 127 or "python3: not found" in out or "python3: inaccessible" in out:
                    raise AgentError(f"{self.shell.serial}: the phone has no python3 for the Python runner; "
                                     f"give the Android {TOOL_BACKENDS[runtime]} binary with --benchmark-binary")
                if rc != 0:
                    raise AgentError(f"{self.shell.serial}: runner --version failed (exit {rc}): {_last_line(out)}")
                header = next((ln for ln in out.splitlines() if ln.startswith("{")), "")
                try:
                    self._versions[runtime] = json.loads(header)["runtime_version"]
                except (ValueError, KeyError) as e:
                    raise AgentError(f"{self.shell.serial}: runner gave no version: {out.strip()[-200:]}") from e
            else:
                self._versions[runtime] = f"{TOOL_BACKENDS[runtime]} sha256:{_sha256(self.binary)[:12]}"
        return self._versions[runtime]

    def benchmark(self, models: Sequence[Path], settings: BenchmarkSettings) -> BatchResult:
        self._check_runtime(settings.runtime)
        if settings.op_profile and self.binary is not None and self.runtime == "onnx":
            raise AgentError(f"{self.shell.serial}: operator profiles with onnxruntime_perf_test are not supported; "
                             "use the Python runner on the phone (--runner python, without --benchmark-binary)")
        models = [Path(m) for m in models]
        for m in models:
            if not m.is_file():
                raise AgentError(f"model file not found: {m}")
        if not models:
            state = self.read_state()
            return BatchResult([], state, state)
        plan = plan_batch(models)
        before = self.settle()
        timings, profiles, delegations = self._retrying(lambda: self._run_batch(plan, settings, before))
        after = self.read_state()
        if after.throttled:
            # Hot by the end: the figures may be throttled ones. Cool down, measure again.
            self.remeasured += 1
            before = self.settle()
            timings, profiles, delegations = self._retrying(lambda: self._run_batch(plan, settings, before))
            after = self.read_state()
        return BatchResult(timings, before, after, op_profiles=profiles[0], op_profile_note=profiles[1],
                           gpu_delegations=delegations)

    def close(self) -> None:
        self.shell.close()

    # --- state -------------------------------------------------------------------------------
    def read_state(self) -> DeviceState:
        out = self._retrying(lambda: self.shell.shell(device_state.STATE_COMMAND, SHORT_S))[0]
        return device_state.parse_state_output(out)

    def settle(self, max_wait_s: float | None = None) -> DeviceState:
        """Wait (at most `max_wait_s`, default `settle_max_s`) until the phone is not
        throttling; return the state. Same signature as `LocalAgent.settle`, which the
        profiler calls before each batch."""
        deadline = time.monotonic() + (self.settle_max_s if max_wait_s is None else max_wait_s)
        state = self.read_state()
        while state.throttled and time.monotonic() < deadline:
            time.sleep(min(self.settle_poll_s, max(0.0, deadline - time.monotonic())))
            state = self.read_state()
        return state

    def _cpus_for(self, threads: int, state: DeviceState) -> str:
        """Cores to pin to, as a comma list: the chosen core, or the `threads` fastest (`fastest_cores`)."""
        if self.cpu_core is not None:
            return str(self.cpu_core)
        return ",".join(map(str, device_state.fastest_cores(state.cpu_max_freq_khz, threads)))

    # --- plumbing ----------------------------------------------------------------------------
    def _check_runtime(self, runtime: str) -> None:
        if runtime != self.runtime:
            raise AgentError(f"this agent was opened for {self.runtime}, not {runtime}")

    def _retrying(self, fn):
        """Run `fn`; on a dropped connection reconnect (with backoff) and run it again."""
        for attempt in range(self.batch_tries):
            try:
                return fn()
            except DeviceDisconnected:
                if attempt == self.batch_tries - 1:
                    raise
                self._pushed.clear()
                self.shell.reconnect()
        raise AssertionError("unreachable")

    def _checked(self, cmd: str, what: str, timeout_s: float = SHORT_S) -> str:
        out, rc = self._retrying(lambda: self.shell.shell(cmd, timeout_s))
        if rc != 0:
            raise AgentError(f"{self.shell.serial}: {what} failed (exit {rc}): {_last_line(out)}")
        return out

    def _push_verified(self, local: Path, remote: str, mode: str) -> None:
        """Push `local` unless the device copy has the same sha256; then chmod."""
        if remote in self._pushed:
            return
        digest = _sha256(local)
        out, _ = self.shell.shell(f"sha256sum {q(remote)} 2>/dev/null", SHORT_S)
        if not out.strip().startswith(digest):
            self._ensure_space(local.stat().st_size)
            self.shell.push(local, remote)
        out, rc = self.shell.shell(f"chmod {mode} {q(remote)}", SHORT_S)
        if rc != 0:
            raise AgentError(f"{self.shell.serial}: chmod {remote} failed: {_last_line(out)}")
        self._pushed.add(remote)

    def _ensure_runner(self) -> None:
        self._mkdir(DEVICE_ROOT)
        self._push_verified(RUNNER_SOURCE, f"{DEVICE_ROOT}/{RUNNER}", "644")

    def _ensure_tool(self) -> str:
        remote = f"{DEVICE_ROOT}/{TOOL_BACKENDS[self.runtime]}"
        if remote in self._pushed:
            return remote
        self._mkdir(DEVICE_ROOT)
        self._push_verified(self.binary, remote, "755")
        out, rc = self.shell.shell(f"{q(remote)} --help 2>&1 | head -n 5", SHORT_S)
        low = out.lower()
        if any(e in low for e in _ABI_ERRORS):
            abi = self._info.abi if self._info else "this phone's ABI"
            raise AgentError(f"{self.shell.serial}: {self.binary.name} cannot run on the phone "
                             f"({abi}); build it for this ABI: {_last_line(out)}")
        return remote

    def _mkdir(self, path: str) -> None:
        out, rc = self.shell.shell(f"mkdir -p {q(path)}", SHORT_S)
        if rc != 0:
            raise AgentError(f"{self.shell.serial}: cannot create {path}: {_last_line(out)}")

    def _ensure_space(self, nbytes: int) -> None:
        out, _ = self.shell.shell(f"df -k {q(DEVICE_ROOT.rsplit('/', 1)[0])} 2>/dev/null", SHORT_S)
        free_kb = parse_df_available_kb(out)
        need_kb = nbytes // 1024 + 4096  # room for results and the runtime's scratch files
        if free_kb is not None and free_kb < need_kb:
            raise AgentError(f"{self.shell.serial}: only {free_kb // 1024} MiB free in /data/local/tmp, "
                             f"the batch needs {need_kb // 1024} MiB; free space on the phone")

    def _taskset(self) -> bool:
        if self._has_taskset is None:
            _, rc = self.shell.shell("command -v taskset >/dev/null", SHORT_S)
            self._has_taskset = rc == 0
        return self._has_taskset

    def _batch_timeout(self, n: int, s: BenchmarkSettings) -> float:
        return self.batch_timeout_s or 60.0 + 30.0 * n * s.repeats

    def _run_batch(self, plan: BatchPlan, s: BenchmarkSettings, state: DeviceState
                   ) -> tuple[list[ModelTiming], tuple[list[OpProfile | None], str], list[GpuDelegation]]:
        """Push the batch, run it in one shell session, pull one results file, parse it: the
        timings, (with `s.op_profile`) the operator profiles and why one is missing, and (with
        the GPU delegate) what the delegate took of each model."""
        tool = self._ensure_tool() if self.binary else None
        if tool is None:
            self._ensure_runner()
        local_dir = safe_local_path(self.workdir, "batch")
        local_dir.mkdir(parents=True, exist_ok=True)
        self._checked(f"rm -rf {q(BATCH_DIR)} && mkdir -p {q(BATCH_DIR)}", "preparing the batch folder")
        self._ensure_space(sum(p.stat().st_size for p in plan.host_paths))
        for host, remote in zip(plan.host_paths, plan.device_paths):
            self.shell.push(host, remote)
        cpus = self._cpus_for(s.threads, state)
        if tool is None:
            script, results = runner_script(plan, s, cpus), "results.jsonl"
            (local_dir / "models.txt").write_text(runner_list_file(plan))
            self.shell.push(local_dir / "models.txt", f"{BATCH_DIR}/models.txt")
        else:
            mask = format(sum(1 << int(c) for c in cpus.split(",")), "x") if cpus else ""
            script = tool_script(plan, self.runtime, f"../{TOOL_BACKENDS[self.runtime]}", s, mask,
                                 self._taskset())
            results = "results.txt"
        (local_dir / "batch.sh").write_text(script)
        self.shell.push(local_dir / "batch.sh", f"{BATCH_DIR}/batch.sh")
        out, rc = self.shell.shell(run_command(), self._batch_timeout(len(plan.host_paths), s))
        local_results = safe_local_path(self.workdir, f"batch/{results}")
        local_results.unlink(missing_ok=True)
        try:
            self.shell.pull(f"{BATCH_DIR}/{results}", local_results)
        except AgentError as e:
            if isinstance(e, DeviceDisconnected):
                raise
            raise AgentError(f"{self.shell.serial}: the batch wrote no results (exit {rc}): {_last_line(out)}") from e
        text = local_results.read_text(encoding="utf-8", errors="replace")
        no_profiles: tuple[list[OpProfile | None], str] = ([], "")
        if tool is None:
            lines, hosts = text.splitlines(), list(plan.host_paths)
            timings = parse_results(lines, hosts, stderr=out, returncode=rc)
            return timings, (parse_op_profiles(lines, hosts) if s.op_profile else no_profiles), []
        timings = _tool_timings(plan, self.runtime, text)
        delegations = _tool_gpu_delegations(plan, text) if s.delegate == GPU else []
        return timings, (_tool_op_profiles(plan, text) if s.op_profile else no_profiles), delegations


def _tool_timings(plan: BatchPlan, runtime: str, text: str) -> list[ModelTiming]:
    parse = parse_benchmark_model if runtime == "tflite" else parse_perf_test
    blocks = split_tool_results(text)
    timings = []
    for i, host in enumerate(plan.host_paths):
        if i not in blocks:
            raise AgentError(f"{host.name}: no result from {TOOL_BACKENDS[runtime]}")
        body, rc = blocks[i]
        if rc != 0:
            raise AgentError(f"{host.name}: {TOOL_BACKENDS[runtime]} exit {rc}: {_last_line(body)}")
        timings.append(replace(parse(body, name=host.name).timing, name=host.name))
    return timings


def _tool_op_profiles(plan: BatchPlan, text: str) -> tuple[list[OpProfile | None], str]:
    """benchmark_model's operator-wise profile of each model (after `_tool_timings` checked the blocks)."""
    blocks = split_tool_results(text)
    return [parse_op_profile(blocks[i][0], name=host.name) for i, host in enumerate(plan.host_paths)], ""


def _tool_gpu_delegations(plan: BatchPlan, text: str) -> list[GpuDelegation]:
    """What the GPU delegate took of each model, from its block of benchmark_model's output."""
    blocks = split_tool_results(text)
    return [parse_gpu_delegation(blocks[i][0]) for i in range(len(plan.host_paths))]


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return re.sub(r"\s+", " ", lines[-1])[:300] if lines else "(no output)"


def open_agent(spec: str, *, runtime: str, binary: Path | str | None = None, transport: str = "auto",
               key_path: Path | str | None = None, workdir: Path | str, **agent_options) -> AdbAgent:
    """`lutbuild --device host:port|serial ...` -> a connected `AdbAgent`.

    `agent_options` go to `AdbAgent` (batch_tries, settle_max_s, cpu_core, ...); the
    transport's own options (connect_tries, backoff_s, auth_timeout_s) are taken out first.
    """
    transport_keys = ("connect_tries", "backoff_s", "auth_timeout_s", "adb")
    topts = {k: agent_options.pop(k) for k in transport_keys if k in agent_options}
    shell = open_transport(spec, transport=transport, key_path=key_path, **topts)
    try:
        return AdbAgent(shell, runtime=runtime, workdir=Path(workdir), binary=binary, **agent_options)
    except Exception:
        shell.close()
        raise
