"""One batch of models on a phone: device file names, the sh script, the results file.

Why generated names: user file names (which may hold `;`, spaces or quotes) never reach
the phone's shell. Model i becomes `m0001.onnx` on the device; results are matched back
by position, and the host keeps the map. The whole batch runs as one shell session that
writes one results file, so a batch costs one round trip however many models it has.
Everything here is pure text in, text out: testable without a phone.
"""
from __future__ import annotations

import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .contract import AgentError, BenchmarkSettings, runner_args
from .gpu_delegate import GPU, gpu_flags

DEVICE_ROOT = "/data/local/tmp/netadaptv2"  # the one place shell users may write and exec
BATCH_DIR = f"{DEVICE_ROOT}/batch"
MODEL_SUFFIXES = {".tflite", ".onnx"}
_BEGIN = "@@NETADAPT-BEGIN"
_END = "@@NETADAPT-END"
_BLOCK_RE = re.compile(rf"^{_BEGIN} (\d+)\n(.*?)^{_END} \1 rc=(\d+)$", re.M | re.S)

TOOL_BACKENDS = {"tflite": "benchmark_model", "onnx": "onnxruntime_perf_test"}
RUNNER = "runner.py"


def q(text: str) -> str:
    """Every piece of text that reaches the device shell goes through here."""
    return shlex.quote(str(text))


@dataclass(frozen=True)
class BatchPlan:
    """Host model paths and the device names they were given, index for index."""

    host_paths: tuple[Path, ...]
    device_names: tuple[str, ...]

    @property
    def device_paths(self) -> tuple[str, ...]:
        return tuple(f"{BATCH_DIR}/{n}" for n in self.device_names)


def plan_batch(models: Sequence[Path]) -> BatchPlan:
    names = []
    for i, m in enumerate(models, start=1):
        suffix = Path(m).suffix.lower()
        names.append(f"m{i:04d}{suffix if suffix in MODEL_SUFFIXES else '.bin'}")
    return BatchPlan(tuple(Path(m) for m in models), tuple(names))


def run_command() -> str:
    """The one shell command of a batch. Scripts use paths relative to the batch folder,
    so only this line names the device folder."""
    return f"cd {q(BATCH_DIR)} && sh batch.sh"


def runner_script(plan: BatchPlan, s: BenchmarkSettings, cpus: str) -> str:
    """Python runner: one process for the batch, results in `results.jsonl`."""
    args = ["python3", f"../{RUNNER}", *runner_args(s, "models.txt", "results.jsonl")]
    if cpus:
        args += ["--cpus", cpus]
    return "\n".join([
        "#!/system/bin/sh",
        "rm -f results.jsonl",
        " ".join(q(a) for a in args),
        "",
    ])


def runner_list_file(plan: BatchPlan) -> str:
    return "".join(f"{n}\n" for n in plan.device_names)


#: onnxruntime_perf_test `-o` levels (0 disable, 1 basic, 2 extended, 99 all, its default):
#: the default level adds no flag, so the command of an existing slice is unchanged.
ORT_PERF_TEST_LEVEL_FLAGS = {"all": [], "extended": ["-o", "2"], "basic": ["-o", "1"]}


def tool_command(runtime: str, binary: str, model: str, s: BenchmarkSettings) -> list[str]:
    """Argument vector of the vendor tool for one model (`repeats` is a runner-only option)."""
    if runtime == "tflite":
        return [binary, f"--graph={model}", f"--num_threads={s.threads}",
                f"--warmup_runs={s.warmup_runs}", f"--num_runs={s.min_runs}",
                f"--min_secs={s.min_seconds}",
                f"--use_xnnpack={'true' if s.delegate == 'xnnpack' else 'false'}",
                *(gpu_flags(s.gpu_precision_loss) if s.delegate == GPU else []),
                *(["--enable_op_profiling=true"] if s.op_profile else [])]
    if runtime == "onnx":
        return [binary, "-I", "-e", "cpu", "-m", "times", "-r", str(s.min_runs),
                "-x", str(s.threads), *ORT_PERF_TEST_LEVEL_FLAGS[s.ort_opt], model]
    raise AgentError(f"unknown runtime {runtime!r} (tflite or onnx)")


def tool_script(plan: BatchPlan, runtime: str, binary: str, s: BenchmarkSettings, mask: str,
                has_taskset: bool) -> str:
    """One block per model in `results.txt`: BEGIN i / tool output / END i rc=N."""
    lines = ["#!/system/bin/sh", "rm -f results.txt"]
    prefix = f"taskset {q(mask)} " if mask and has_taskset else ""
    for i, path in enumerate(plan.device_names):
        cmd = " ".join(q(a) for a in tool_command(runtime, binary, path, s))
        lines += [f"echo '{_BEGIN} {i}' >> results.txt",
                  f"{prefix}{cmd} >> results.txt 2>&1",
                  f"echo \"{_END} {i} rc=$?\" >> results.txt"]
    return "\n".join(lines + [""])


def split_tool_results(text: str) -> dict[int, tuple[str, int]]:
    """results.txt -> {model index: (tool output, exit status)}."""
    return {int(m.group(1)): (m.group(2), int(m.group(3))) for m in _BLOCK_RE.finditer(text)}


def safe_local_path(workdir: Path, name: str) -> Path:
    """Where a pulled file may be written: strictly inside `workdir`.

    Absolute names, `..` components and anything resolving outside are refused, so a
    device (or a bug) cannot make us write elsewhere on the host.
    """
    pure = PurePosixPath(name)
    if not name or pure.is_absolute() or os.path.isabs(name) or ".." in pure.parts or "\\" in name:
        raise AgentError(f"refusing to write pulled file {name!r} outside the work dir")
    root = Path(workdir).resolve()
    target = (root / pure).resolve()
    if target != root and root not in target.parents:
        raise AgentError(f"refusing to write pulled file {name!r} outside the work dir")
    return target


def parse_df_available_kb(text: str) -> int | None:
    """Free KiB from `df -k PATH` (toybox, busybox, coreutils); None when unreadable.

    Old toolbox df prints `Size Used Free Blksize` with unit suffixes (1.5G): handled too.
    """
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) < 2:
        return None
    header = lines[0].split()
    col = next((i for i, h in enumerate(header) if h.lower() in ("available", "avail", "free")), None)
    if col is None:
        return None
    fields = " ".join(lines[1:]).split()  # a long device name may wrap onto its own line
    # Align from the right: the mount point / name columns can contain the wrap.
    offset = len(header) - col
    if header[-1].lower() == "on":  # "Mounted on" is two header words, one value
        offset -= 1
    if len(fields) < offset:
        return None
    value = fields[-offset]
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]?)", value, re.I)
    if not m:
        return None
    scale = {"": 1, "K": 1, "M": 1024, "G": 1024 ** 2, "T": 1024 ** 3}[m.group(2).upper()]
    return int(float(m.group(1)) * scale)
