"""A 2-process torchrun (gloo) MCD search takes the same decisions as 1 process.

Candidates are generated on rank 0 and broadcast; each rank scores every second
candidate; scores are all-gathered so both ranks pick the same winner. The scorer is the
deterministic stand-in and latencies come from the synthetic LUT fixture.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path


TESTS = Path(__file__).resolve().parent

SCRIPT = textwrap.dedent("""
    import sys, torch.distributed as dist
    sys.path.insert(0, {tests!r})
    from lut_db import LatencyTable
    from search.mcd import Constraint, LutLatencyMetric, MCDConfig, run_mcd
    from search import distributed
    from search.spaces import get_space
    from test_mcd_fixtures import DEVICE, importance_scorer

    dist.init_process_group("gloo")
    space = get_space("mbv3-tiny")
    latency = LutLatencyMetric(space, LatencyTable.load({lut!r}, DEVICE, "tflite"))
    calls = []
    base = importance_scorer(space)
    def scorer(cfg):
        calls.append(cfg)
        return base(cfg)
    result = run_mcd(space, [Constraint(latency, 0.55 * latency.value(space.max_config()))], scorer, {out!r},
                     MCDConfig(candidates=7, layers=3, seed=3), log=lambda line: None)
    rank = distributed.rank()
    with open({out!r} + f".rank{{rank}}", "w") as f:
        f.write(result.config.to_json() + "\\n" + str(len(calls)))
    dist.destroy_process_group()
""")


def _run(tmp_path: Path, nproc: int, lut: Path) -> Path:
    out = tmp_path / f"out{nproc}"
    script = tmp_path / f"run{nproc}.py"
    script.write_text(SCRIPT.format(tests=str(TESTS), lut=str(lut), out=str(out)))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", str(script)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_two_process_search_equals_one_process(tmp_path):
    sys.path.insert(0, str(TESTS))
    from test_mcd_fixtures import synth_lut
    lut = synth_lut(tmp_path / "lut.sqlite")
    one, two = _run(tmp_path, 1, lut), _run(tmp_path, 2, lut)
    final1 = json.loads((one / "final.json").read_text())
    final2 = json.loads((two / "final.json").read_text())
    assert final1["config"] == final2["config"] and final1["iterations"] == final2["iterations"]
    hist = [[{k: v for k, v in json.loads(line).items() if not k.endswith("_s")}
             for line in (d / "history.jsonl").read_text().splitlines()] for d in (one, two)]
    assert hist[0] == hist[1]
    rank_files = [Path(str(two) + f".rank{r}").read_text().split("\n") for r in (0, 1)]
    assert rank_files[0][0] == rank_files[1][0] == json.dumps(final1["config"], sort_keys=True)
    calls = [int(f[1]) for f in rank_files]
    total = int(Path(str(one) + ".rank0").read_text().split("\n")[1])
    assert sum(calls) == total and min(calls) > 0  # the work was split, not repeated
