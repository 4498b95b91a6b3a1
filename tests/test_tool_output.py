"""Parsers of benchmark_model / onnxruntime_perf_test output, on real quoted outputs."""
from pathlib import Path

import pytest

from device_agents.tool_output import parse_benchmark_model, parse_perf_test
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
