"""`lutbuild verify --op-profile`: each layer's time inside the network next to its LUT row.

Real parts only: a 12-key space's LUT built by the real CLI, its networks exported and run by
ONNX Runtime with its profiler (this host, and a "phone" over the loopback adbd endpoint
with the Python runner), and real TFLite network files joined to benchmark_model's
Run Order format.
"""
from __future__ import annotations

import json
import math
import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `tests.adbd_endpoint` under any import mode
from tests.adbd_endpoint import start_endpoint  # noqa: E402

from device_agents.adb_keys import ensure_key  # noqa: E402
from device_agents.contract import OpProfile, OpTiming  # noqa: E402
from lut_db.reader import LatencyTable  # noqa: E402
from tests.lutbuild_helpers import invoke, micro_space_registered, one_line_error  # noqa: E402
from profiler.op_join import join_network, profiler_cost, summarize  # noqa: E402
from profiler.spaces import resolve_space  # noqa: E402
from profiler.verify import draw_subnets  # noqa: E402
from search.spaces.config import SubnetConfig  # noqa: E402

SPACE = "test-op-micro"


@pytest.fixture(scope="module", autouse=True)
def micro_space():
    """The 12-key space of the CLI's verify test (a residual block, SE-free), registered here."""
    with micro_space_registered(SPACE) as name:
        yield name


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def check_join(report: dict) -> None:
    """Every network's rows carry exactly its LUT-keyed layers, with finite times and ratios."""
    space = resolve_space(SPACE)
    ops = report["op_profile"]
    assert ops["note"] == "" and len(ops["networks"]) == report["n"]
    for net in ops["networks"]:
        sample = report["samples"][net["index"]]
        expected = Counter(c.key for c in space.layer_configs(space.canonical(_subnet(space, sample["subnet"]))))
        joined = Counter(k for row in net["layers"] if row["key"] != "-" for k in row["key"].split("+"))
        assert joined == expected  # every LUT row of the prediction, once
        assert net["lut_ms"] == pytest.approx(sample["predicted_ms"] - report["overhead_ms"]["lut"], rel=1e-9)
        for row in net["layers"]:
            assert math.isfinite(row["lut_ms"]) and row["lut_ms"] >= 0
            assert math.isfinite(row["network_ms"]) and 0 <= row["network_ms"] <= row["profiled_ms"]
            for ratio in (row["ratio"], row["raw_ratio"]):
                assert ratio is None or (math.isfinite(ratio) and ratio > 0)
        convs = [row for row in net["layers"] if row["kind"].startswith(("conv", "dwconv"))]
        assert convs and all(row["operators"] and (row["raw_ratio"] is not None or row["lut_ms"] == 0)
                             for row in convs)
        assert math.isfinite(net["profiler_ms_per_call"]) and net["profiler_ms_per_call"] >= 0
    kinds = {k["kind"]: k for k in ops["kinds"]}
    assert {"conv k3s1", "conv k1s1", "dwconv k3s1", "linear", "gap"} <= set(kinds)
    assert all(k["median_raw_ratio"] is None or math.isfinite(k["median_raw_ratio"]) for k in kinds.values())


def _subnet(space, data: dict) -> SubnetConfig:
    return SubnetConfig.from_dict(data)


@pytest.mark.slow
def test_verify_op_profile_on_onnx_joins_every_lut_row_of_every_network(tmp_path, cache):
    db = tmp_path / "lut.sqlite"
    common = ["--space", SPACE, "--runtime", "onnx", "--db", db, "--cache-dir", cache, "--quiet"]
    result = invoke("build", *common, "--repeats", 1)
    assert result.exit_code == 0, result.output + result.stderr
    out_json = tmp_path / "verify.json"
    result = invoke("verify", *common, "--samples", 3, "--rounds", 1, "--op-profile", "--json", out_json)
    assert result.exit_code == 0, result.output + result.stderr
    report = json.loads(out_json.read_text())
    check_join(report)
    assert "per kind over 3 networks" in result.output and "breaks additivity most" in result.output
    assert "ReorderOutput" in result.output  # ORT's NCHWc layout glue, reported as no layer's

    plain = tmp_path / "plain.json"
    result = invoke("verify", *common, "--samples", 2, "--rounds", 1, "--json", plain)
    assert result.exit_code == 0 and "op_profile" not in json.loads(plain.read_text())
    assert "per kind" not in result.output


def test_op_profile_of_local_tflite_is_refused_in_one_line_before_any_work(tmp_path):
    db = tmp_path / "lut.sqlite"
    result = invoke("verify", "--space", SPACE, "--runtime", "tflite", "--db", db, "--op-profile",
                    "--cache-dir", tmp_path / "cache", "--quiet")
    assert result.exit_code == 1
    line = one_line_error(result.stderr)
    assert "--op-profile" in line and "LiteRT" in line and "benchmark_model" in line
    assert not db.exists() and not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_verify_op_profile_on_a_phone_with_the_python_runner(tmp_path, cache):
    key = ensure_key(tmp_path / "keys" / "adbkey")
    host, port, stop = start_endpoint(tmp_path / "sandbox", [Path(str(key) + ".pub")],
                                      props={"ro.serialno": "LOOPV", "ro.product.model": "Verify Phone"})
    try:
        db = tmp_path / "lut.sqlite"
        phone = ["--space", SPACE, "--runtime", "onnx", "--db", db, "--cache-dir", cache, "--quiet",
                 "--transport", "adb-shell", "--adb-key", key, "--device", f"{host}:{port}"]
        result = invoke("build", *phone, "--repeats", 1, "--jobs", 1)
        assert result.exit_code == 0, result.output + result.stderr
        out_json = tmp_path / "verify.json"
        result = invoke("verify", *phone, "--samples", 2, "--rounds", 1, "--op-profile", "--json", out_json)
        assert result.exit_code == 0, result.output + result.stderr
        report = json.loads(out_json.read_text())
        assert report["device"]["device_id"] == "android:Verify_Phone:LOOPV"
        check_join(report)
        assert {n["source"] for n in report["op_profile"]["networks"]} == {"onnxruntime"}
        assert any("batch.sh" in c for c in stop.endpoint.shell_log)
    finally:
        stop()


def test_tflite_networks_join_benchmark_model_run_order_names(tmp_path, cache):
    """benchmark_model (builtin kernels) names a node ``[<output tensor>]:<index>``: a Run Order
    table in its format, written for a real exported TFLite network, joins every row."""
    pytest.importorskip("ai_edge_litert")
    from ai_edge_litert import schema_py_generated as tfl

    from device_agents.tool_output import parse_op_profile
    from profiler.export import ModelCache

    space = resolve_space(SPACE)
    cfg = draw_subnets(space, 1, 0)[0]
    with ModelCache(cache, "tflite", 1) as models:
        path = models.networks(space.spec, [cfg.to_dict()])[0]
    model = tfl.Model.GetRootAsModel(path.read_bytes(), 0)
    sub = model.Subgraphs(0)
    codes = {v: k for k, v in vars(tfl.BuiltinOperator).items() if not k.startswith("_")}
    rows = []
    for i in range(sub.OperatorsLength()):
        op = sub.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        kind = codes[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]
        tensor = sub.Tensors(int(op.OutputsAsNumpy()[0])).Name().decode()
        rows.append(f"\t{kind:>24}\t{0.0:>12}\t{0.01:>8.3f}\t{0.010:>8.3f}\t  1.000%\t  1.000%\t     0.000\t"
                    f"        1\t[{tensor}]:{i}")
    text = ("Operator-wise Profiling Info for Regular Benchmark Runs:\n"
            "============================== Run Order ==============================\n"
            "\t             [node type]\t          [start]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t"
            "  [mem KB]\t[times called]\t[Name]\n" + "\n".join(rows) + "\n\n")
    profile = parse_op_profile(text)
    assert len(profile.ops) == sub.OperatorsLength()
    layers = space.layer_configs(cfg)
    table = LatencyTable({c.key: 0.01 for c in layers}, device_id="d", runtime="tflite", runtime_options="o")
    net = join_network(path, profile, table, layers)
    assert Counter(k for row in net.layers if row.key != "-" for k in row.key.split("+")) == \
        Counter(c.key for c in layers)
    free = {"RESHAPE", "SQUEEZE"}  # no kernel, no key: left to "not in any layer"
    assert {op.op_type for op in net.unattributed} <= free
    assert sum(row.calls for row in net.layers) + sum(op.count for op in net.unattributed) == len(profile.ops)


def test_profiler_cost_is_spread_over_calls_and_never_negative():
    profile = OpProfile("onnxruntime", 10, (OpTiming("a", "Conv", 0.030, 1), OpTiming("b", "Relu", 0.010, 2)))
    assert profiler_cost(profile, 0.025) == pytest.approx(0.005)  # (0.040 - 0.025) / 3 calls
    assert profiler_cost(profile, 0.050) == 0.0 and profiler_cost(profile, None) == 0.0
    assert summarize([]).kinds == []
