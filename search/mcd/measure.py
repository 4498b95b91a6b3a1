"""The exported searched network measured on a device (``measured.json``), for the report.

The report puts the measured latency beside the LUT prediction and its error, the check
DESIGN.md asks of the final network.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from device_agents.contract import BenchmarkSettings
from profiler.agents import open_agent
from search.errors import SearchError
from search.export_searched import EXPORT_LOG

from .files import read_json

MEASURED = "measured.json"


def measure_exported(search_dir: Path, agent_spec: str, log: Callable[[str], None] = print) -> dict:
    """Median latency (ms) and CoV of each exported file, measured through a device agent.

    `agent_spec`: ``local`` (this host) or a phone (ADB serial or ``host:port``). Returns and
    writes ``{runtime: {"median_ms", "cov", "n", "device"}}``.
    """
    search_dir = Path(search_dir)
    export = read_json(search_dir / EXPORT_LOG)
    if not export:
        raise SearchError(f"{search_dir}: nothing exported; run `nas-search export --search {search_dir} ...` first")
    agent = open_agent(agent_spec)
    measured = {}
    try:
        for runtime, item in export["files"].items():
            timing = agent.benchmark([Path(item["path"])], BenchmarkSettings(runtime=runtime)).timings[0]
            measured[runtime] = {"median_ms": timing.median_ms, "cov": timing.cov, "n": timing.n,
                                 "device": agent.info().device_id}
            log(f"measured {runtime}: {timing.median_ms:.3f} ms (CoV {timing.cov:.1%}, n={timing.n})")
    finally:
        agent.close()
    (search_dir / MEASURED).write_text(json.dumps(measured, indent=1) + "\n", encoding="utf-8")
    return measured
