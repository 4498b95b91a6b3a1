"""Parsers of benchmark_model / onnxruntime_perf_test output, on real quoted outputs."""
from pathlib import Path

import pytest

from device_agents.tool_output import parse_benchmark_model, parse_op_profile, parse_perf_test
from device_agents.contract import AgentError

DATA = Path(__file__).parent / "data" / "tool_output"


def read(name: str) -> str:
    return (DATA / name).read_text(encoding="utf-8")


def test_benchmark_model_takes_the_timed_phase_not_the_warmup_in_ms():
    r = parse_benchmark_model(read("benchmark_model_x86_tf2.13.txt"), name="mnv1.tflite")
    t = r.timing
    assert t.name == "mnv1.tflite"
    assert t.n == 50  # count= of the timed phase, not the warm-up's 5
    assert t.mean_ms == pytest.approx(116.066)
    assert (t.min_ms, t.max_ms, t.std_ms) == pytest.approx((111.222, 121.324, 1.906))
    # no percentiles printed: median from avg, p10/p90 bounded by min/max, and said so
    assert r.median_from == "avg" and t.median_ms == pytest.approx(116.066)
    assert (t.p10_ms, t.p90_ms) == (t.min_ms, t.max_ms)
    assert set(r.approximated) == {"median_ms", "p10_ms", "p90_ms"}
    assert r.model_size_mb == pytest.approx(4.27635)
    assert r.init_ms == pytest.approx(0.53)
    assert r.first_inference_ms == pytest.approx(124.020)
    assert r.warmup_avg_ms == pytest.approx(117.225)
    assert r.xnnpack is None  # this output does not say


def test_benchmark_model_reports_xnnpack_and_ignores_profiling_tables():
    text = read("benchmark_model_rpi_xnnpack_profiling.txt")
    # op-profiling tables later print more "count=" lines; they must not be taken
    text += "\nTimings (microseconds): count=50 first=1 curr=1 min=1 max=2 avg=1.5 std=0\n"
    r = parse_benchmark_model(text)
    assert r.xnnpack is True
    assert r.timing.name == "yolo_best_recall_int8_static.tflite"  # from "Graph: [...]"
    assert r.timing.n == 50 and r.timing.mean_ms == pytest.approx(55.0432)


def test_benchmark_model_old_2019_output():
    r = parse_benchmark_model(read("benchmark_model_android_2019.txt"), name="m.tflite")
    assert r.timing.n == 15 and r.timing.mean_ms == pytest.approx(66.7676)
    assert r.init_ms is None  # the old summary line has another shape; timings still parse
    assert r.warmup_avg_ms is None


def test_benchmark_model_percentiles_and_all_same_forms():
    # Stat::OutputToStream forms from stats_calculator.h (StatWithPercentiles appends
    # p5/median/p95; identical runs print "count=N curr=T(all same)").
    head = "Running benchmark for at least 1 iterations and at least 0.5 seconds\ncount=2 curr=10(all same)\n"
    text = head + (
        "Running benchmark for at least 50 iterations and at least 1 seconds\n"
        "count=60 first=1200 curr=1100 min=1000 max=1500 avg=1120.5 std=40 p5=1010 median=1100 p95=1300\n"
    )
    r = parse_benchmark_model(text, name="x")
    assert r.median_from == "median" and r.timing.median_ms == pytest.approx(1.1)
    assert (r.timing.p10_ms, r.timing.p90_ms) == pytest.approx((1.01, 1.3))
    assert r.approximated == ("p10_ms", "p90_ms")
    same = parse_benchmark_model(head + head.replace("count=2", "count=7"), name="x")
    assert same.timing.n == 7 and same.timing.median_ms == pytest.approx(0.01) and same.timing.std_ms == 0


def test_benchmark_model_output_cut_before_the_timings_is_refused():
    text = read("benchmark_model_logcat_truncated.txt")
    with pytest.raises(AgentError, match="no statistics of the timed runs"):
        parse_benchmark_model(text, name="model.tflite")


def test_benchmark_model_xnnpack_flag_off_wins_and_logcat_prefixes_parse():
    text = read("benchmark_model_logcat_truncated.txt") + (
        "05-31 10:31:14.000 21767 21767 I tflite  : Running benchmark for at least 1 iterations\n"
        "05-31 10:31:14.100 21767 21767 I tflite  : count=3 first=9 curr=8 min=8 max=9 avg=8.3 std=0\n"
        "05-31 10:31:14.200 21767 21767 I tflite  : Running benchmark for at least 50 iterations\n"
        "05-31 10:31:15.300 21767 21767 I tflite  : count=50 first=9 curr=8 min=7 max=9 avg=8 std=0.5\n"
    )
    r = parse_benchmark_model(text)
    assert r.xnnpack is False and r.timing.n == 50 and r.timing.name == "model.tflite"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "ERROR: Could not open 'missing.tflite'.\nERROR: Loaded model failed\n",
        read("benchmark_model_ios_warmup_only.txt"),  # warm-up phase only
        "Running benchmark for at least 1\ncount=1 curr=5\nRunning benchmark for at least 5\ncount=0\n",
        "Running benchmark for at least 1\ncount=1 curr=5\nRunning benchmark for at least 5\ncount=5 first=1 curr=2\n",
        "Running benchmark for at least 1\ncount=1 curr=5\nRunning benchmark for at least 5\n"
        "count=5 min=9 max=2 avg=5 std=1\n",
    ],
)
def test_benchmark_model_malformed_output_is_a_one_line_agent_error(text):
    with pytest.raises(AgentError) as err:
        parse_benchmark_model(text, name="m.tflite")
    assert "\n" not in str(err.value) and "m.tflite" in str(err.value)


def test_benchmark_model_error_message_quotes_the_tool_error():
    with pytest.raises(AgentError, match="Could not open"):
        parse_benchmark_model("STARTING!\nERROR: Could not open 'missing.tflite'.\n")


def test_perf_test_with_latency_statistics_in_seconds():
    r = parse_perf_test(read("perf_test_latency_stats_2023.txt"), name="m.onnx")
    t = r.timing
    assert t.n == 1000 and t.mean_ms == pytest.approx(58.8053)
    assert r.median_from == "p50" and t.median_ms == pytest.approx(58.7108)
    assert (t.min_ms, t.max_ms, t.p90_ms) == pytest.approx((55.9777, 62.3472, 59.9845))
    assert t.p10_ms == t.min_ms
    assert t.std_ms == pytest.approx((59.9845 - 58.7108) / 1.2816)
    assert set(r.approximated) == {"p10_ms", "std_ms"}


def test_perf_test_current_format_from_source():
    # performance_runner.cc today: "<Stat> Latency: <seconds> s"
    text = (
        "Session creation time cost: 0.05 s\nFirst inference time cost: 3 ms\n"
        "Total inference requests: 200\nAverage inference time cost: 1.25 ms\n"
        "Min Latency: 0.001 s\nMax Latency: 0.002 s\nP50 Latency: 0.0012 s\nP90 Latency: 0.0015 s\n"
        "P95 Latency: 0.0016 s\nP99 Latency: 0.0019 s\nP999 Latency: 0.002 s\n"
    )
    r = parse_perf_test(text, name="m.onnx")
    assert r.timing.n == 200 and r.timing.median_ms == pytest.approx(1.2)
    assert r.init_ms == pytest.approx(50.0) and r.first_inference_ms == pytest.approx(3.0)


@pytest.mark.parametrize("name", ["perf_test_acl_2020.txt", "perf_test_windows_2020.txt"])
def test_perf_test_without_statistics_falls_back_to_the_average(name):
    r = parse_perf_test(read(name), name="m.onnx")
    assert r.median_from == "avg"
    assert r.timing.median_ms == r.timing.mean_ms == r.timing.min_ms == r.timing.max_ms
    assert {"median_ms", "min_ms", "max_ms", "p10_ms", "p90_ms", "std_ms"} == set(r.approximated)
    assert r.init_ms is not None and r.init_ms > 0


def test_perf_test_values_of_real_outputs():
    acl = parse_perf_test(read("perf_test_acl_2020.txt"))
    assert (acl.timing.n, acl.timing.mean_ms) == (10, pytest.approx(144.871))
    assert acl.init_ms == pytest.approx(127.918)
    win = parse_perf_test(read("perf_test_windows_2020.txt"))
    assert (win.timing.n, win.timing.mean_ms) == (1, pytest.approx(734.606))


@pytest.mark.parametrize(
    "text",
    [
        "",
        read("benchmark_model_x86_tf2.13.txt"),  # the other tool's output
        "Total inference requests: 0\nAverage inference time cost: 1 ms\n",
        "Total inference requests: 10\nAverage inference time cost: 1 ms\nMin Latency: 0.5 s\nMax Latency: 0.6 s\n",
        "failed to initialize.\n",
    ],
)
def test_perf_test_malformed_output_is_a_one_line_agent_error(text):
    with pytest.raises(AgentError) as err:
        parse_perf_test(text, name="m.onnx")
    assert "\n" not in str(err.value) and "m.onnx" in str(err.value)


# ----------------------------------------------------------------------------- --enable_op_profiling tables
def test_op_profile_takes_the_regular_runs_run_order_in_ms_per_inference():
    text = read("benchmark_model_op_profiling_android_xnnpack.txt")
    p = parse_op_profile(text, name="m.tflite")
    assert p.source == "benchmark_model" and p.statistic == "mean" and p.runs == 50  # Timings: count=50
    names = {op.name for op in p.ops}
    assert len(p.ops) == 8 and "[model_1/flatten/Reshape]:11" in names  # a node left on the CPU kernels
    assert not names & {"ModifyGraphWithDelegate/0", "AllocateTensors/0"}  # the initialization profile
    gemm = p.ops[0]  # avg ms is per call, times called per run: 0.214 ms x 4 calls
    assert (gemm.name, gemm.op_type, gemm.count) == ("Delegate/Convolution (NHWC, F32) GEMM:2",
                                                     "Convolution (NHWC, F32) GEMM", 4)
    assert gemm.ms == pytest.approx(0.856) and p.share(gemm) == pytest.approx(0.47848, abs=1e-4)  # the printed %
    # the Top by Computation Time table repeats nodes: counted once; the sum is the profiled run time
    assert p.total_ms == pytest.approx(1.789)
    assert p.total_ms <= parse_benchmark_model(text).timing.mean_ms
    assert [t.op_type for t in p.by_type()][:2] == ["Convolution (NHWC, F32) GEMM", "Convolution (NHWC, F32) IGEMM"]


def test_op_profile_reads_the_older_layout_with_a_start_column():
    p = parse_op_profile(read("benchmark_model_op_profiling_aarch64_builtin.txt"))
    assert p.runs == 497 and len(p.ops) == 6
    assert p.ops[0].op_type == "CONV_2D" and p.ops[0].ms == pytest.approx(0.851)  # not [start] nor [first]
    assert p.ops[0].name == "[sequential/conv2d/Relu6;sequential/conv2d/BiasAdd;sequential/conv2d/Conv2D]:0"
    assert [(t.op_type, t.count) for t in p.by_type()][0] == ("CONV_2D", 2)


def test_op_profile_space_aligned_quotes_subgraphs_and_a_summary_only_output():
    tabs = read("benchmark_model_op_profiling_android_xnnpack.txt")
    spaces = parse_op_profile(tabs.replace("\t", "    "))  # as issue threads quote it
    assert spaces == parse_op_profile(tabs)
    head = "Operator-wise Profiling Info for Regular Benchmark Runs:\n"
    table = ("============================== Run Order ==============================\n"
             "\t[node type]\t[first]\t[avg ms]\t[%]\t[cdf%]\t[mem KB]\t[times called]\t[Name]\n"
             "\tWHILE\t1.000\t1.000\t50.000%\t50.000%\t0.000\t1\t[loop]:0\n"
             "\tADD\t0.500\t0.500\t50.000%\t100.000%\t0.000\t2\t[x]:1\n\n")
    sub = parse_op_profile(head + "Primary graph profile:\n" + table + "Subgraph (index: 1) profile:\n" + table
                           + "Delegate internal:\n" + table)
    assert {op.name for op in sub.ops} == {"[loop]:0", "[x]:1", "subgraph 1: [loop]:0", "subgraph 1: [x]:1"}
    assert sub.total_ms == pytest.approx(4.0)  # the delegate's internal view is not counted again
    summary = ("Number of nodes executed: 3\n"
               "============================== Summary by node type ==============================\n"
               "\t[Node type]\t[count]\t[avg ms]\t[avg %]\t[cdf %]\t[mem KB]\t[times called]\n"
               "\tCONV_2D\t2\t1.500\t75.000%\t75.000%\t0.000\t2\n"
               "\tADD\t1\t0.500\t25.000%\t100.000%\t0.000\t1\n\n")
    only = parse_op_profile(head + summary)
    assert [(op.name, op.ms, op.count) for op in only.ops] == [("CONV_2D", 1.5, 2), ("ADD", 0.5, 1)]


@pytest.mark.parametrize(
    "text",
    [
        read("benchmark_model_x86_tf2.13.txt"),  # no --enable_op_profiling
        read("benchmark_model_rpi_xnnpack_profiling.txt"),  # only the initialization profile survived
        "Operator-wise Profiling Info for Regular Benchmark Runs:\n\n",
        "Operator-wise Profiling Info for Regular Benchmark Runs:\n====== Run Order ======\n"
        "\t[node type]\t[first]\t[avg ms]\t[%]\t[cdf%]\t[mem KB]\t[times called]\t[Name]\n"
        "\tCONV_2D\t1.0\tgarbled\n",
    ],
)
def test_op_profile_missing_or_malformed_is_a_one_line_agent_error(text):
    with pytest.raises(AgentError) as err:
        parse_op_profile(text, name="m.tflite")
    assert "\n" not in str(err.value) and "m.tflite" in str(err.value)
