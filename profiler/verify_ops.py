"""`lutbuild verify --op-profile`: one extra, profiled pass over the verified networks.

The verify rounds stay unprofiled (the profiler's bookkeeping slows every operator, see
docs/profile.md), so the accuracy figures are unchanged; afterwards one benchmark process
per batch runs the same network files with `BenchmarkSettings.op_profile` and one pass, and
each network's `OpProfile` is joined to its LUT rows by `op_join`. The network files come
from the same model cache the rounds used (no second export).
"""
from __future__ import annotations

import sys
from dataclasses import replace

from tqdm import tqdm

from device_agents.contract import BenchmarkSettings
from lut_db.reader import LatencyTable

from .export import ModelCache
from .op_join import NetworkOps, OpJoinReport, join_network, summarize
from .plan import batches


def profile_networks(agent, space, table: LatencyTable, configs: list, operators_ms: list[float | None],
                     settings: BenchmarkSettings, options, progress: bool = True) -> OpJoinReport:
    """Profile every network of `configs` once per operator on `agent` and join each to its LUT rows.

    `operators_ms`: per network, its verified (unprofiled) median less the per-invoke overhead
    (`op_join.profiler_cost`); `options`: the `VerifyOptions` of the run (cache, batch size, dtype).
    """
    profiled = replace(settings, op_profile=True, repeats=1)
    with ModelCache(options.cache_dir, settings.runtime, options.jobs, dtype=options.dtype) as cache:
        paths = cache.networks(space.spec, [c.to_dict() for c in configs])
    chunks = list(batches(list(range(len(configs))), options.batch_size))
    networks: list[NetworkOps] = []
    notes: list[str] = []
    bar = tqdm(total=len(chunks), desc=f"verify {space.name} operator profiles", unit="batch", file=sys.stderr,
               disable=not progress, dynamic_ncols=True)
    try:
        for chunk in chunks:
            if hasattr(agent, "settle"):
                agent.settle(60.0)
            result = agent.benchmark([paths[i] for i in chunk], profiled)
            profiles = result.op_profiles or [None] * len(chunk)
            for i, profile in zip(chunk, profiles):
                if profile is None:
                    notes.append(f"network {i}: {result.op_profile_note or 'the device gave no operator profile'}")
                    continue
                networks.append(join_network(paths[i], profile, table, space.layer_configs(configs[i]), i,
                                             operators_ms[i]))
            bar.update(1)
    finally:
        bar.close()
    note = "; ".join(notes[:3]) + (f" and {len(notes) - 3} more" if len(notes) > 3 else "")
    return summarize(networks, note)
