"""Parsers of untrusted text: arbitrary input gives a result or the module's own error, nothing else.

Property-based (hypothesis): the phone's benchmark tools, the runner's JSON lines, block
strings, LUT keys and ADB serials are text a user, a phone or a damaged file hands us. Each
test feeds random text, and random text built around the real format (so the parser gets
past its first check), and accepts only a parsed value or the module's error type.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st

from device_agents.adb_transport import check_serial
from device_agents.contract import AgentError, ModelTiming
from device_agents.local import parse_results
from device_agents.tool_output import parse_benchmark_model, parse_perf_test
from lut_db.layer_key import LayerConfig
from search.spaces.blocks import decode_block

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_NUMBERS = st.one_of(
    st.integers(-10**6, 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["1e400", "-0", "0", "nan", "inf", "-1e400", "1" * 30, ".5", "5.", "+3", "1e-400"]),
)
_BENCH_KEYS = st.sampled_from(["count", "first", "curr", "min", "max", "avg", "std", "p5", "median", "p95"])


def _stat_line(draw) -> str:
    pairs = draw(st.lists(st.tuples(_BENCH_KEYS, _NUMBERS), max_size=12))
    tail = draw(st.sampled_from(["", "(all same)", " junk"]))
    return " ".join(f"{k}={v}" for k, v in pairs) + tail


@st.composite
def benchmark_model_text(draw) -> str:
    header = "Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 s"
    parts = [draw(st.text(max_size=60)), header, _stat_line(draw), header, _stat_line(draw),
             f"Inference timings in us: Init: {draw(_NUMBERS)}, First inference: {draw(_NUMBERS)}, "
             f"Warmup (avg): {draw(_NUMBERS)}, Inference (avg): {draw(_NUMBERS)}",
             draw(st.text(max_size=60))]
    keep = draw(st.lists(st.booleans(), min_size=len(parts), max_size=len(parts)))
    return "\n".join(p for p, k in zip(parts, keep) if k or p is header)


@st.composite
def perf_test_text(draw) -> str:
    lines = [f"Total inference requests: {draw(st.integers(-5, 10**25))}",
             f"Average inference time cost: {draw(_NUMBERS)} ms"]
    for key in draw(st.lists(st.sampled_from(["Min", "Max", "P50", "P90", "P95", "P99", "P999"]), max_size=7)):
        lines.append(f"{key} Latency: {draw(_NUMBERS)} {draw(st.sampled_from(['s', 'sec']))}")
    lines.append(draw(st.text(max_size=40)))
    return "\n".join(draw(st.permutations(lines)))


def _only_agent_error(parse, text: str) -> None:
    try:
        result = parse(text, name="m.tflite")
    except AgentError as exc:
        assert "\n" not in str(exc)
        return
    _assert_sane(result.timing)


def _assert_sane(timing: ModelTiming) -> None:
    values = [timing.min_ms, timing.p10_ms, timing.median_ms, timing.mean_ms, timing.p90_ms, timing.max_ms]
    assert all(math.isfinite(v) and v > 0 for v in values), timing
    assert timing.n >= 1 and math.isfinite(timing.std_ms) and timing.std_ms >= 0


@FAST
@given(st.one_of(st.text(max_size=300), benchmark_model_text()))
def test_benchmark_model_parser_gives_a_sane_timing_or_agent_error(text):
    _only_agent_error(parse_benchmark_model, text)


@FAST
@given(st.one_of(st.text(max_size=300), perf_test_text()))
def test_perf_test_parser_gives_a_sane_timing_or_agent_error(text):
    _only_agent_error(parse_perf_test, text)


_JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 10**20), st.floats(), st.text(max_size=8)),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8)
_TIMING_KEYS = ("n", "median_ms", "mean_ms", "p10_ms", "p90_ms", "std_ms", "min_ms", "max_ms")


@st.composite
def runner_line(draw) -> str:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.text(max_size=80))
    record = {"index": draw(st.one_of(st.integers(-1, 2), _JSON_VALUES))}
    for key in _TIMING_KEYS:
        if draw(st.booleans()) or kind == 3:
            record[key] = draw(st.one_of(st.floats(-1, 5), st.integers(-1, 60), _JSON_VALUES))
    if draw(st.integers(0, 5)) == 0:
        record["error"] = draw(_JSON_VALUES)
    if draw(st.integers(0, 8)) == 0:
        record["header"] = draw(_JSON_VALUES)
    return json.dumps(record)


@FAST
@given(st.lists(runner_line(), max_size=4))
def test_runner_results_parser_gives_sane_timings_or_agent_error(lines):
    models = [Path("a.tflite"), Path("b.tflite")]
    try:
        timings = parse_results(lines, models, stderr="x", returncode=1)
    except AgentError as exc:
        assert "\n" not in str(exc)
        return
    assert [t.name for t in timings] == ["a.tflite", "b.tflite"]
    for timing in timings:
        _assert_sane(timing)


@FAST
@given(st.one_of(st.text(max_size=60),
                 st.lists(st.one_of(st.sampled_from(["ir", "ds", "cn", "se", "re", "hs", "r2", "k3", "s2", "e6",
                                                     "c16", "e0.25", "k", "c", "r0", "e-1", "c1e400", "s0"]),
                                    st.text(max_size=5)), max_size=7).map("_".join)))
def test_block_strings_decode_or_raise_value_error(text):
    try:
        decode_block(text)
    except ValueError as exc:
        assert "\n" not in str(exc)


@st.composite
def layer_key_text(draw) -> str:
    good = LayerConfig("conv", 8, 8, 8, 16).key.split(":")
    parts = [draw(st.one_of(st.just(p), st.text(max_size=8), _NUMBERS)) for p in good]
    return ":".join(parts[:draw(st.integers(0, len(parts) + 1))])


@FAST
@given(st.one_of(st.text(max_size=80), layer_key_text()))
def test_layer_keys_parse_or_raise_value_error(text):
    try:
        cfg = LayerConfig.from_key(text)
    except ValueError as exc:
        assert "\n" not in str(exc)
        return
    assert LayerConfig.from_key(cfg.key) == cfg


@FAST
@given(st.one_of(st.text(max_size=60), st.from_regex(r"[A-Za-z0-9.:_%+\[\]-]{0,40}", fullmatch=True)))
def test_adb_serials_are_accepted_or_refused_with_agent_error(text):
    try:
        assert check_serial(text) == text
    except AgentError as exc:
        assert "\n" not in str(exc)
