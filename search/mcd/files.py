"""The files of a search folder, written and read in one place (`SearchFiles`).

- ``request.json``: the `SearchRequest` the search last ran with (`SearchRequest.to_dict`),
  so `nas-search report` rebuilds its constraints and scorer from it (`run_baselines`).
- ``history.jsonl``: iteration 0 is the start network; then one line per iteration with the
  targets, every candidate (config, shrunk dimensions, metric values, score) and the winner.
- ``state.json``: checkpoint after every iteration (current config, iteration, RNG state,
  options); ``--resume`` continues from it and reaches the same final network as an
  uninterrupted run with the same seed.
- ``final.json``: the searched architecture (`final_record`) once every constraint holds.

Under torchrun every rank builds the same `SearchFiles`; only rank 0 writes (the writes are
no-ops on the other ranks). Every JSON file is written atomically (a temporary file renamed
over the old one); history lines are appended, and a torn last line of a killed run is
skipped on reading.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from search import distributed
from search.errors import SearchError
from search.spaces.space import SearchSpace, SubnetConfig

HISTORY, STATE, FINAL, REQUEST = "history.jsonl", "state.json", "final.json", "request.json"
STATE_FORMAT = 1  # version of state.json; a checkpoint of another format is not resumed


def write_json(path: Path, data: Any) -> None:
    """`data` as indented, key-sorted JSON, atomically (a kill leaves the old file or the new one)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    """The JSON in `path`, or None when there is no such file."""
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def read_history(out: str | Path) -> list[dict]:
    """Records of ``history.jsonl`` (a torn last line of a killed run is skipped)."""
    path = Path(out) / HISTORY
    records = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def final_record(space: SearchSpace, config: SubnetConfig, values: Mapping[str, float], score: float,
                 **extra) -> dict:
    """The architecture as ``final.json`` holds it (readable without this code).

    ``accuracy`` is the search score of `config` (higher is better; the task's: top-1 in
    [0, 1] for classification, -RMSE in m or δ1 for depth); the key keeps its name for the
    readers of existing files.
    """
    return {
        "space": space.name,
        "config": config.to_dict(),
        "block_strings": space.block_strings(config),
        "values": dict(values),
        "latency_ms": values.get("latency_ms"),
        "measured_ms": values.get("measured_ms"),
        "macs": space.macs(config),
        "depth": round(space.depth(config), 3),
        "accuracy": score,
        **extra,
    }


def state_identity(space_name: str, limits: Mapping[str, float], mcd: Mapping[str, Any]) -> dict:
    """What a checkpoint must match to be resumed: its format, the space, the limits and the
    MCD options (`MCDConfig.identity`); ``state.json`` holds these keys beside the progress."""
    return {"format": STATE_FORMAT, "space": space_name, "limits": dict(limits), "mcd": dict(mcd)}


class SearchFiles:
    """The files of the search folder `out`; writes on rank 0 only (see the module docstring)."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self.writer = distributed.rank() == 0  # the other ranks read, never write

    # ------------------------------------------------------------------ reads (every rank)
    def history(self) -> list[dict]:
        return read_history(self.out)

    def final(self) -> dict | None:
        """``final.json``, or None while the search has not finished."""
        return read_json(self.out / FINAL)

    def finished(self, hint: str = "") -> dict:
        """``final.json``; SearchError (one line, ending with `hint`) while there is none."""
        final = self.final()
        if final is None:
            raise SearchError(f"{self.out}: no {FINAL}; " + (hint or "the search has not finished"))
        return final

    def request(self) -> dict:
        """``request.json`` (`SearchRequest.to_dict`); SearchError when the folder has none."""
        data = read_json(self.out / REQUEST)
        if data is None:
            raise SearchError(f"{self.out}: no {REQUEST} (the request the search ran with); run `nas-search search "
                              f"--out {self.out} --resume ...` with the search's options to write it")
        return data

    def read_state(self) -> dict:
        """``state.json``: the checkpoint of the search to resume."""
        return json.loads((self.out / STATE).read_text(encoding="utf-8"))

    def check_resumable(self, state: Mapping[str, Any], identity: Mapping[str, Any]) -> None:
        """SearchError unless the checkpoint `state` matches `identity` (`state_identity`:
        format, space, limits, MCD options): a resumed search continues the same search."""
        if state.get("format") != identity["format"]:
            raise SearchError(f"{self.out / STATE}: unknown checkpoint format {state.get('format')!r}")
        if state["space"] != identity["space"]:
            raise SearchError(f"--resume: {self.out} searched space {state['space']!r}, not {identity['space']!r}")
        limits = identity["limits"]
        if {k: float(v) for k, v in state["limits"].items()} != {k: float(v) for k, v in limits.items()}:
            raise SearchError(f"--resume: {self.out} searched for {state['limits']}, not {dict(limits)}; "
                              "use the same targets or another --out")
        if state["mcd"] != json.loads(json.dumps(identity["mcd"])):
            raise SearchError(f"--resume: {self.out} was searched with {state['mcd']}, not {identity['mcd']}")

    # ------------------------------------------------------------------ writes (rank 0)
    def check(self, resume: bool) -> None:
        """Fail fast on a folder that holds a search when not resuming (or none when resuming).

        Rank 0 only: the other ranks would see the files rank 0 has started to write.
        """
        if not self.writer:
            return
        state = self.out / STATE
        if state.exists() and not resume:
            raise SearchError(f"{self.out} already holds a search ({STATE}); pass --resume to continue it "
                              "or choose another --out")
        if resume and not state.exists():
            raise SearchError(f"--resume: {self.out} holds no search checkpoint ({STATE})")

    def write_request(self, request: Mapping[str, Any]) -> None:
        if self.writer:
            self.out.mkdir(parents=True, exist_ok=True)
            write_json(self.out / REQUEST, dict(request))

    def start_history(self) -> None:
        """A new search: an empty ``history.jsonl``."""
        if self.writer:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / HISTORY).write_text("", encoding="utf-8")

    def rewind_history(self, last_iteration: int) -> None:
        """Drop history lines after the checkpoint (a kill between the history and the state write)."""
        if self.writer:
            kept = [r for r in self.history() if r["iteration"] <= last_iteration]
            tmp = self.out / (HISTORY + ".tmp")
            tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in kept), encoding="utf-8")
            os.replace(tmp, self.out / HISTORY)

    def append_history(self, record: Mapping[str, Any]) -> None:
        if self.writer:
            with open(self.out / HISTORY, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, sort_keys=True) + "\n")

    def write_state(self, state: Mapping[str, Any]) -> None:
        if self.writer:
            write_json(self.out / STATE, dict(state))

    def write_final(self, final: Mapping[str, Any]) -> None:
        if self.writer:
            write_json(self.out / FINAL, dict(final))

    def add_to_final(self, **items: Any) -> None:
        """Add `items` (e.g. ``holdout_metrics``) to ``final.json``."""
        if self.writer:
            self.write_final({**self.finished(), **items})
