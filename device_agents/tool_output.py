"""Parsers for the text printed by the vendors' own benchmark binaries.

Where a phone has no Python, the ADB agent runs TFLite's ``benchmark_model`` or ONNX
Runtime's ``onnxruntime_perf_test`` and hands their stdout+stderr here. Formats were read
from the tools' sources and checked against real outputs quoted in issue threads (see
``tests/data/tool_output/``).

benchmark_model (``tensorflow/lite/tools/benchmark/benchmark_model.cc``):
  prints one statistics line per phase, after a ``Running benchmark for at least N
  iterations and at least S seconds ...`` line: first the warm-up phase, then the timed
  phase. The line is ``Stat::OutputToStream`` in µs:
  ``count=50 first=58154 curr=53809 min=53077 max=60727 avg=55043.2 std=1562``, or
  ``count=N curr=T(all same)`` when every run took the same time; builds that keep
  percentiles (``StatWithPercentiles``) append `` p5=.. median=.. p95=..``. The loop runs
  while ``run < num_runs || elapsed < min_secs``, so ``count=`` - not the ``--num_runs``
  flag - is the number of timed runs. Op-profiling tables printed later also contain
  ``count=`` lines; only the line after the second "Running benchmark" counts.
  The summary line ``Inference timings in us: Init: .., First inference: .., Warmup (avg):
  .., Inference (avg): ..`` (older: ``Average inference timings in us: Warmup: .., Init:
  .., no stats: ..``) gives init / first-run costs.

onnxruntime_perf_test (``onnxruntime/test/perftest/performance_runner.cc``):
  ``Total inference requests: N`` and ``Average inference time cost: X ms`` (older:
  ``Total iterations:`` / ``Average time cost:``); with statistics enabled also
  ``Min Latency: X s``, ``Max``, ``P50``, ``P90``, ``P95``, ``P99``, ``P999`` - in
  SECONDS (older builds: ``P50 Latency is X sec``).

Neither tool prints everything a `ModelTiming` holds. What is missing is filled by a
documented rule and named in `ToolResult.approximated`, never silently:

* median: the printed median/P50; else the mean (``median_from = "avg"``).
* p10/p90: benchmark_model's p5/p95 when printed, else its min/max; perf_test's min and
  P90 (else max). These bands are never narrower than the true p10-p90.
* std (perf_test only): (P90 - P50) / 1.2816, the normal approximation; 0 without both.

benchmark_model ``--enable_op_profiling=true`` (``ProfilingListener`` in
``tensorflow/lite/tools/benchmark/profiling_listener.cc``; tables by ``StatsCalculator`` in
``tensorflow/core/util/stats_calculator.cc``, one per subgraph, ``profile_summary_formatter.cc``):
  ``Profiling Info for Benchmark Initialization:`` (ModifyGraphWithDelegate, AllocateTensors:
  not inference, ignored), then ``Operator-wise Profiling Info for Regular Benchmark Runs:``
  with the tables ``Run Order`` (every node), ``Top by Computation Time`` (the top 10 again:
  ignored), ``Summary by node type``, and ``Timings (microseconds): count=N ...`` (N profiled
  runs). Columns are tab-separated and right-aligned (quoted outputs often have spaces):
  ``[node type] [start] [first] [avg ms] [%] [cdf%] [mem KB] [times called] [Name]`` -
  ``[start]`` only in older builds. ``avg ms`` is per call and ``times called`` per run, so a
  node's time per inference is their product (its ``%`` agrees). With several subgraphs each
  has its tables after ``Primary graph profile:`` / ``Subgraph (index: N) profile:``; a
  ``Delegate internal:`` section repeats delegated work and is ignored. `parse_op_profile`
  takes the Run Order rows, or the Summary by node type rows where no Run Order was printed.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from device_agents.contract import AgentError, ModelTiming, OpProfile, OpTiming

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_RUN_HEADER = re.compile(r"Running benchmark for at least")
_STAT_LINE = re.compile(r"\bcount\s*=\s*(\d+)")
_KEY_VALUE = re.compile(rf"\b(count|first|curr|min|max|avg|std|p5|median|p95)\s*=\s*({_NUM})")
_ERROR_LINE = re.compile(r"\b(ERROR|Error|Failed|failed|Aborted|Segmentation fault)\b")
# z of the 90th percentile of a normal distribution: p90 - p50 = 1.2816 std
_Z90 = 1.2816


@dataclass(frozen=True)
class ToolResult:
    """A `ModelTiming` parsed from a tool's output, plus what the tool said about the run."""

    timing: ModelTiming
    tool: str  # "benchmark_model" or "onnxruntime_perf_test"
    median_from: str  # which printed figure became median_ms: "median", "p50" or "avg"
    approximated: tuple[str, ...] = ()  # ModelTiming fields filled by a rule (module docstring)
    version: str = ""  # as printed, "" when the tool did not say
    xnnpack: bool | None = None  # XNNPACK delegate applied? None: the output does not say
    model_size_mb: float | None = None
    init_ms: float | None = None  # interpreter / session creation
    first_inference_ms: float | None = None
    warmup_avg_ms: float | None = None


def parse_benchmark_model(text: str, name: str = "") -> ToolResult:
    """Parse TFLite ``benchmark_model`` output (µs) into ms. Malformed or impossible numbers
    (`ModelTiming.checked`) -> `AgentError`, never another exception."""
    lines = text.splitlines()
    phases: list[str] = []  # the first statistics line after each "Running benchmark" line
    waiting = False
    for line in lines:
        if _RUN_HEADER.search(line):
            waiting = True
        elif waiting and _STAT_LINE.search(line):
            phases.append(line)
            waiting = False
    if len(phases) < 2:
        raise AgentError(f"benchmark_model{_for(name)}: no statistics of the timed runs ({_why(lines)})")
    stats = {k: float(v) for k, v in _KEY_VALUE.findall(phases[1])}
    count = stats.get("count", 0.0)
    if not (math.isfinite(count) and count == int(count)):
        raise AgentError(f"benchmark_model{_for(name)}: unreadable run count: {phases[1].strip()[:160]}")
    count = int(count)
    if count < 1:
        raise AgentError(f"benchmark_model{_for(name)}: zero timed runs ({_why(lines)})")
    if "avg" not in stats:  # "count=N curr=T(all same)": every run took T
        if "curr" not in stats or (count > 1 and "(all same)" not in phases[1]):
            raise AgentError(f"benchmark_model{_for(name)}: unreadable statistics: {phases[1].strip()[:160]}")
        t = stats["curr"]
        stats.update(min=t, max=t, avg=t, std=0.0)
    missing = [k for k in ("min", "max", "std") if k not in stats]
    if missing:
        raise AgentError(f"benchmark_model{_for(name)}: statistics lack {', '.join(missing)}: "
                         f"{phases[1].strip()[:160]}")
    if not stats["min"] <= stats["avg"] <= stats["max"]:
        raise AgentError(f"benchmark_model{_for(name)}: inconsistent statistics: {phases[1].strip()[:160]}")

    ms = {k: v / 1000.0 for k, v in stats.items() if k != "count"}
    approximated = ["p10_ms", "p90_ms"]
    if "median" in ms:
        median, median_from = ms["median"], "median"
    else:
        median, median_from = ms["avg"], "avg"
        approximated.insert(0, "median_ms")
    timing = ModelTiming(
        name=name or _graph_name(text),
        n=count,
        median_ms=median,
        mean_ms=ms["avg"],
        p10_ms=ms.get("p5", ms["min"]),
        p90_ms=ms.get("p95", ms["max"]),
        std_ms=ms["std"],
        min_ms=ms["min"],
        max_ms=ms["max"],
    )
    timing.checked("benchmark_model")
    summary = _summary_us(text)
    return ToolResult(
        timing=timing,
        tool="benchmark_model",
        median_from=median_from,
        approximated=tuple(approximated),
        version=_search(r"(?:TensorFlow Lite|TfLite|LiteRT)[^\n:]*[Vv]ersion\s*[:=]?\s*\[?([\w.\-]+)", text) or "",
        xnnpack=_xnnpack_state(text),
        model_size_mb=_float(_search(rf"The input model file size \(MB\):\s*({_NUM})", text)),
        init_ms=summary.get("init"),
        first_inference_ms=summary.get("first"),
        warmup_avg_ms=summary.get("warmup"),
    )


def parse_perf_test(text: str, name: str = "") -> ToolResult:
    """Parse ``onnxruntime_perf_test`` output (latencies in s, average in ms). Malformed or impossible
    numbers (`ModelTiming.checked`) -> `AgentError`, never another exception."""
    lines = text.splitlines()
    n = _search(r"(?:Total inference requests|Total iterations)\s*:\s*(\d{1,18})\b", text)
    avg_ms = _float(_search(rf"(?:Average inference time cost|Average time cost)\s*:\s*({_NUM})\s*ms", text))
    if n is None or avg_ms is None:
        raise AgentError(f"onnxruntime_perf_test{_for(name)}: no request count or average time ({_why(lines)})")
    if int(n) < 1:
        raise AgentError(f"onnxruntime_perf_test{_for(name)}: zero inference requests")
    lat = {
        key.lower(): float(value) * 1000.0
        for key, value in re.findall(
            rf"\b(Min|Max|P50|P90|P95|P99|P999) Latency(?::| is)\s*({_NUM})\s*(?:s|sec)\b", text)
    }
    approximated = ["p10_ms", "std_ms"]
    if "p50" in lat:
        median, median_from = lat["p50"], "p50"
    else:
        median, median_from = avg_ms, "avg"
        approximated.insert(0, "median_ms")
    if "min" not in lat or "max" not in lat:
        approximated += ["min_ms", "max_ms"]
    if "p90" not in lat:
        approximated.append("p90_ms")
    lo, hi = lat.get("min", min(median, avg_ms)), lat.get("max", max(median, avg_ms))
    p90 = lat.get("p90", hi)
    std = (lat["p90"] - lat["p50"]) / _Z90 if "p90" in lat and "p50" in lat else 0.0
    if not lo <= median <= hi:
        raise AgentError(f"onnxruntime_perf_test{_for(name)}: inconsistent latencies "
                         f"(min {lo} ms, median {median} ms, max {hi} ms)")
    timing = ModelTiming(
        name=name, n=int(n), median_ms=median, mean_ms=avg_ms, p10_ms=lo, p90_ms=p90,
        std_ms=max(std, 0.0), min_ms=lo, max_ms=hi,
    )
    timing.checked("onnxruntime_perf_test")
    first = _float(_search(rf"First inference time cost\s*:\s*({_NUM})\s*ms", text))
    session_s = _float(_search(rf"Session creation time cost\s*:\s*({_NUM})\s*s", text))
    return ToolResult(
        timing=timing,
        tool="onnxruntime_perf_test",
        median_from=median_from,
        approximated=tuple(approximated),
        version=_search(r"onnxruntime(?:_perf_test)? (?:version|v)\s*:?\s*([\d.]+)", text) or "",
        init_ms=None if session_s is None else session_s * 1000.0,
        first_inference_ms=first,
    )


_REGULAR_RUNS = "Operator-wise Profiling Info for Regular Benchmark Runs"
_TITLE = re.compile(r"^=+ (.+?) =+\s*$")
_SUBGRAPH = re.compile(r"^(?:Primary graph|Subgraph \(index: (\d+)\)) \w+:\s*$")
_PROFILED_RUNS = re.compile(r"^Timings \(microseconds\):\s*count=(\d+)")
# `first avg % cdf% mem calls name` of a Run Order row ([start] before them in older builds)
_NODE_ROW = rf"^\s*(\S.*?)\s+{{start}}({_NUM})\s+({_NUM})\s+({_NUM})%\s+({_NUM})%\s+({_NUM})\s+(\d+)\s+(\S.*?)\s*$"
_NODE_ROW_START = re.compile(_NODE_ROW.format(start=rf"{_NUM}\s+"))
_NODE_ROW_NO_START = re.compile(_NODE_ROW.format(start=""))
# `[Node type] [count] [avg ms] [avg %] [cdf %] [mem KB] [times called]` (old builds: no calls)
_TYPE_ROW = re.compile(rf"^\s*(\S.*?)\s+(\d+)\s+({_NUM})\s+({_NUM})%\s+({_NUM})%\s+({_NUM})(?:\s+(\d+))?\s*$")


def parse_op_profile(text: str, name: str = "") -> OpProfile:
    """benchmark_model's operator-wise profile of the regular runs (module docstring) as an
    `OpProfile` (ms per inference). No such section, or a row that is not one of the table's,
    -> `AgentError` (one line), never another exception."""
    start = text.find(_REGULAR_RUNS)
    if start < 0:
        raise AgentError(f"benchmark_model{_for(name)}: no operator-wise profile of the regular runs in its "
                         f"output (was --enable_op_profiling=true given?) ({_why(text.splitlines())})")
    nodes: dict[str, OpTiming] = {}
    types: dict[str, OpTiming] = {}
    runs = 0
    subgraph, table, node_row = 0, "", _NODE_ROW_NO_START
    for line in text[start:].splitlines()[1:]:
        stripped = line.strip()
        if stripped.startswith("Delegate internal:"):
            break  # delegated work repeated from the delegate's own view
        if _SUBGRAPH.match(stripped):
            subgraph = int(_SUBGRAPH.match(stripped).group(1) or 0)
            continue
        title = _TITLE.match(stripped)
        if title:
            table = title.group(1)
            continue
        runs_line = _PROFILED_RUNS.match(stripped)
        if runs_line and subgraph == 0 and not runs:
            runs = int(runs_line.group(1))
        if not stripped or not table or stripped.startswith("Number of nodes executed"):
            table = "" if not stripped else table
            continue
        if stripped.startswith("["):  # the header row: does this build print [start]?
            node_row = _NODE_ROW_START if "[start]" in stripped else _NODE_ROW_NO_START
            continue
        prefix = f"subgraph {subgraph}: " if subgraph else ""
        if table == "Run Order":
            m = node_row.match(line)
            if not m:
                raise AgentError(f"benchmark_model{_for(name)}: unreadable Run Order row: {stripped[:160]}")
            op_type, avg_ms, calls, node = m.group(1), float(m.group(3)), int(m.group(7)), prefix + m.group(8)
            row = _op(name, node, op_type, avg_ms * max(calls, 1), max(calls, 1))
            old = nodes.get(node)
            nodes[node] = row if old is None else OpTiming(node, op_type, old.ms + row.ms, old.count + row.count)
        elif table == "Summary by node type":
            m = _TYPE_ROW.match(line)
            if not m:
                raise AgentError(f"benchmark_model{_for(name)}: unreadable Summary by node type row: "
                                 f"{stripped[:160]}")
            op_type = prefix + m.group(1)
            calls = int(m.group(7)) if m.group(7) is not None else int(m.group(2))
            types[op_type] = _op(name, op_type, op_type, float(m.group(3)), max(calls, 1))
    ops = nodes or types
    if not ops:
        raise AgentError(f"benchmark_model{_for(name)}: the operator-wise profile has no Run Order or "
                         f"Summary by node type rows")
    return OpProfile("benchmark_model", runs, tuple(ops.values()))


def _op(name: str, node: str, op_type: str, ms: float, calls: int) -> OpTiming:
    if not math.isfinite(ms) or ms < 0:
        raise AgentError(f"benchmark_model{_for(name)}: {node}: {ms} ms per inference, expected a finite number >= 0")
    return OpTiming(node, op_type, ms, calls)


# ----------------------------------------------------------------------------- helpers
def _xnnpack_state(text: str) -> bool | None:
    flag = _search(r"Use xnnpack\s*:\s*\[(\w+)\]", text)
    if flag is not None:
        return flag.lower() in ("1", "true")
    if re.search(r"Created TensorFlow Lite XNNPACK delegate|Explicitly applied XNNPACK delegate", text):
        return True
    return None


def _summary_us(text: str) -> dict[str, float]:
    """Init / first / warm-up costs in ms from either form of the summary line."""
    out: dict[str, float] = {}
    line = _search(r"(Inference timings in us:.*)", text) or ""
    for key, label in (("init", "Init"), ("first", "First inference"), ("warmup", r"Warmup(?: \(avg\))?")):
        value = _float(_search(rf"\b{label}:\s*({_NUM})", line))
        if value is not None:
            out[key] = value / 1000.0
    return out


def _graph_name(text: str) -> str:
    path = _search(r"Graph:\s*\[([^\]]+)\]", text) or ""
    return path.replace("\\", "/").rsplit("/", 1)[-1]


def _why(lines: list[str]) -> str:
    """The first error-looking line of the output, else its last line: one line for users."""
    for line in lines:
        if _ERROR_LINE.search(line):
            return " ".join(line.split())[:200]
    tail = [line for line in lines if line.strip()]
    return ("last line: " + " ".join(tail[-1].split())[:200]) if tail else "empty output"


def _for(name: str) -> str:
    return f" ({name})" if name else ""


def _search(pattern: str, text: str) -> str | None:
    m = re.search(pattern, text)
    return m.group(1) if m else None


def _float(value: str | None) -> float | None:
    return float(value) if value is not None else None
