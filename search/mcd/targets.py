"""Many targets, one super-network: ``nas-search search --target-latency-ms 0.4,0.3,0.2``.

NetAdaptV2's economic argument is "train once, search many": the super-network serves every
target. The targets are searched in descending order and each continues from the previous
target's searched (landed) network, as one long search's trajectory passes through every
larger target; the reduction schedule continues too (`search.ScheduleOrigin`: the max
network's values are its reference and the iteration count runs on), so target k costs only
the iterations from target k-1 down to it.

The output folder holds
- ``targets.json``: the index (the targets in order, each with its folder; the request);
- one complete single-target search folder per target, named by `label` (``t0.4ms``,
  ``m3.5M``, ``t0.4ms_m3.5M``): ``request.json``, ``history.jsonl``, ``state.json``,
  ``final.json`` and ``baselines.json``, so ``finetune``/``export``/``report --search
  out/t0.4ms`` work on it as on any search;
- ``pareto.md`` and ``pareto.png`` (`pareto.py`): searched vs the uniform width multiplier vs
  the fair random search at each target; ``nas-search report --search out/`` (`report_targets`)
  adds each target's report and, with ``--measure-device``, measured latencies.

``--resume`` continues per target: finished targets (``final.json``) are kept, a started one
resumes from its ``state.json``, the rest start from their predecessor's network.
The baselines of target k are the uniform width multiplier and the fair random search with
the budget MCD spent to reach that target's network: the candidates scored by targets 1..k.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

from search import distributed
from search.errors import SearchError
from search.spaces.space import SubnetConfig

from .files import INDEX, STATE, SearchFiles, read_index, target_dirs, write_json
from .metrics import Constraint
from .pareto import measure_pareto, write_pareto
from .report import check_task, write_report
from .request import SearchRequest
from .run_baselines import check_names, compute_baselines, run_baselines, scored_budget
from .search import ScheduleOrigin, SearchResult, run_mcd
from .session import build_scorer, prepare

PARETO_BASELINES = ("uniform", "random")


def label(latency_ms: float | None, macs: float | None) -> str:
    """The folder name of one target: ``t0.4ms``, ``m3.5M`` or both joined by ``_``."""
    parts = []
    if latency_ms is not None:
        parts.append(f"t{latency_ms:g}ms")
    if macs is not None:
        parts.append(f"m{macs / 1e6:g}M")
    return "_".join(parts)


def target_list(latency_ms: Sequence[float], macs: Sequence[float]) -> list[tuple[float | None, float | None]]:
    """(latency, MACs) per target: equal-length lists pair up, a single value applies to every target.

    SearchError unless each list is strictly descending (each target continues from the previous).
    """
    for name, values in (("--target-latency-ms", latency_ms), ("--target-macs", macs)):
        if any(b >= a for a, b in zip(values, values[1:])):
            raise SearchError(f"{name}: targets must be strictly descending (each continues from the previous "
                              f"target's network), got {', '.join(f'{v:g}' for v in values)}")
    count = max(len(latency_ms), len(macs))
    for name, values in (("--target-latency-ms", latency_ms), ("--target-macs", macs)):
        if len(values) not in (0, 1, count):
            raise SearchError(f"{name}: {len(values)} targets, but the other list has {count}; give as many "
                              "or one for all")

    def at(values: Sequence[float], i: int) -> float | None:
        return None if not values else values[i] if len(values) > 1 else values[0]

    return [(at(latency_ms, i), at(macs, i)) for i in range(count)]


def search_targets(request: SearchRequest, latency_ms: Sequence[float], macs: Sequence[float],
                   log: Callable[[str], None] = print, scorer=None,
                   baselines: Sequence[str] = PARETO_BASELINES) -> list[SearchResult]:
    """Search every target (descending) from one super-network; then the baselines and the Pareto files.

    `request`: the options (its own target fields are ignored); `scorer` replaces the
    super-network scorer (tests). Returns the results of the targets searched so far (fewer
    than asked when `request.mcd.stop_after` stopped one: continue with ``resume``).
    """
    distributed.init_from_env("cpu")
    targets = target_list(latency_ms, macs)
    out = Path(request.out)
    entries = [{"dir": label(t, m), "target_latency_ms": t, "target_macs": m} for t, m in targets]
    _check_out(out, entries, request.resume)
    last = dataclasses.replace(request, target_latency_ms=targets[-1][0], target_macs=targets[-1][1],
                               out=out / entries[-1]["dir"], resume=False)
    prepared = prepare(last, log, check_out=False)  # checks the smallest target is reachable
    if scorer is None:
        scorer = build_scorer(last, prepared)
    if distributed.rank() == 0:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / INDEX, {"targets": entries, "request": {**request.to_dict(), "resume": False}})
    space = prepared.space
    origin_values = {c.name: c.metric.value(space.max_config()) for c in prepared.constraints}
    start: SubnetConfig | None = None
    iterations = 0
    results: list[SearchResult] = []
    for index, (entry, (lat, mac)) in enumerate(zip(entries, targets)):
        folder = out / entry["dir"]
        files = SearchFiles(folder)
        limits = {"latency_ms": lat, "macs": mac}
        constraints = [Constraint(c.metric, float(limits["macs" if c.name == "macs" else "latency_ms"]))
                       for c in prepared.constraints]
        final = files.final()
        if final is not None:
            log(f"target {index + 1}/{len(entries)} {entry['dir']}: done already")
            start, iterations = SubnetConfig.from_dict(final["config"]), iterations + int(final["iterations"])
            results.append(SearchResult(start, dict(final["values"]), final["accuracy"], int(final["iterations"]),
                                        float(final.get("search_time_s", 0.0)), True,
                                        int(final.get("landing_steps", 0)), scored_budget(folder)))
            continue
        resume = (folder / STATE).is_file()
        target_request = dataclasses.replace(request, target_latency_ms=lat, target_macs=mac, out=folder,
                                             resume=resume)
        files.write_request(target_request.to_dict())
        meta = {**prepared.meta, "constraints": {c.name: {"limit": c.limit, "metric": c.metric.describe()}
                                                 for c in constraints},
                "chain": {"index": index, "targets": len(entries), "index_file": str(out / INDEX),
                          "start": entries[index - 1]["dir"] if index else "max network"}}
        log(f"target {index + 1}/{len(entries)} {entry['dir']}: from "
            f"{meta['chain']['start']}" + (" (resuming)" if resume else ""))
        result = run_mcd(space, constraints, scorer, folder, request.mcd, start=start, resume=resume,
                         report_metrics=prepared.report_metrics, log=log, meta=meta,
                         origin=ScheduleOrigin(origin_values, iterations))
        if not result.done:
            return results
        if prepared.task.records_holdout_metrics and hasattr(scorer, "metrics") and files.writer:
            files.add_to_final(holdout_metrics=scorer.metrics(result.config))
        results.append(result)
        start, iterations = result.config, iterations + result.iteration
    _baselines(out, entries, targets, prepared, scorer, baselines, log)
    if distributed.rank() == 0:
        write_pareto(out, log=log)
    return results


def _check_out(out: Path, entries: list[dict], resume: bool) -> None:
    """Fail fast on a folder that is a file, holds another search, or (resuming) holds none or other targets."""
    if out.exists() and not out.is_dir():
        raise SearchError(f"--out {out} is a file, not a folder; choose another --out")
    if (out / STATE).exists():
        raise SearchError(f"{out} holds a single-target search ({STATE}); choose another --out")
    if not resume:
        if (out / INDEX).exists():
            raise SearchError(f"{out} already holds a multi-target search ({INDEX}); pass --resume to continue it "
                              "or choose another --out")
        return
    if not (out / INDEX).exists():
        raise SearchError(f"--resume: {out} holds no multi-target search ({INDEX})")
    stored = [t["dir"] for t in read_index(out)["targets"]]
    if stored != [e["dir"] for e in entries]:
        raise SearchError(f"--resume: {out} searched the targets {', '.join(stored)}, not "
                          f"{', '.join(e['dir'] for e in entries)}; use the same targets or another --out")


def _baselines(out: Path, entries: list[dict], targets, prepared, scorer, names: Sequence[str],
               log: Callable[[str], None]) -> None:
    """The baselines of every target (kept when a resumed run computed them already); the
    random search of target k gets the candidates MCD scored for targets 1..k."""
    if not names:
        return
    budget = 0
    for entry, (lat, mac) in zip(entries, targets):
        folder = out / entry["dir"]
        budget += scored_budget(folder)
        limits = {"latency_ms": lat, "macs": mac}
        constraints = [Constraint(c.metric, float(limits["macs" if c.name == "macs" else "latency_ms"]))
                       for c in prepared.constraints]
        log(f"baselines of {entry['dir']} (random: {budget} networks, as MCD scored to reach it)")
        compute_baselines(folder, dataclasses.replace(prepared, constraints=constraints), scorer, names, budget,
                          log=log, keep_done=True)



def report_targets(out: str | Path, names: Sequence[str] = (), v1_steps: int = 50, task: str | None = None,
                   measure_device: str | None = None, log: Callable[[str], None] = print) -> Path | None:
    """`nas-search report` on a multi-target folder: for every finished target the named
    baselines (random: the budget MCD spent to reach it, cumulative as in `search_targets`)
    and its ``report.md``; with `measure_device`, every network of the Pareto table measured
    (`pareto.measure_pareto`); then ``pareto.md`` + ``pareto.png``."""
    out = Path(out)
    check_names(names)
    budget = 0
    finished = []
    for folder in target_dirs(out):
        if SearchFiles(folder).final() is None:
            log(f"{folder}: not finished; continue it with `nas-search search --out {out} --resume ...`")
            break
        finished.append(folder)
        budget += scored_budget(folder)
        if names:
            run_baselines(folder, names, v1_steps=v1_steps, log=log, task=task, budget=budget)
    if not finished:
        raise SearchError(f"{out}: no target of the multi-target search has finished")
    check_task(finished[0], task)
    if measure_device:
        measure_pareto(out, measure_device, log=log)
    for folder in finished:
        write_report(folder, log=log)
    return write_pareto(out, log=log)
