"""The files of a search folder, written and read in one place (`SearchFiles`).

- ``request.json``: the `SearchRequest` the search last ran with (`SearchRequest.to_dict`),
  so `nas-search report` rebuilds its constraints and scorer from it (`run_baselines`).
- ``history.jsonl``: iteration 0 is the start network; then one line per iteration with the
  targets, every candidate (config, shrunk dimensions, metric values, score) and the winner.
- ``state.json``: checkpoint after every iteration (current config, iteration, RNG state,
  options); ``--resume`` continues from it and reaches the same final network as an
  uninterrupted run with the same seed.
- ``final.json``: the searched architecture (`final_record`) once every constraint holds,
  with ``unused_budget`` (per constraint, the share of its limit left unused).
- ``targets.json`` (a multi-target search only, `targets.py`): the index of its targets,
  each a folder holding the files above.

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
INDEX = "targets.json"  # a multi-target search's index (`targets.py`): its targets and their folders
STATE_FORMAT = 1  # version of state.json; a checkpoint of another format is not resumed


def write_json(path: Path, data: Any) -> None:
    """`data` as indented, key-sorted JSON, atomically (a kill leaves the old file or the new one)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    """The JSON in `path`, or None when there is no such file; SearchError (one line naming
    the file) when it is not JSON."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SearchError(f"{path}: not valid JSON ({exc}); restore it or delete the search folder") from None


def read_history(out: str | Path) -> list[dict]:
    """Records of ``history.jsonl``; a torn *last* line (a killed run) is skipped, any other
    line that is not a record with an integer ``iteration`` is a SearchError naming the file."""
    path = Path(out) / HISTORY
    if not path.exists():
        return []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise SearchError(f"{path}: not a UTF-8 history ({exc})") from None
    records = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                continue  # torn by a kill while it was appended
            raise SearchError(f"{path}: line {number} is not JSON; restore the file or delete the search folder") \
                from None
        if not isinstance(record, dict) or not isinstance(record.get("iteration"), int):
            raise SearchError(f"{path}: line {number} is not a history record (an object with an integer "
                              "'iteration')")
        records.append(record)
    return records


def is_multi_target(out: str | Path) -> bool:
    """Whether `out` holds a multi-target search (its index, ``targets.json``)."""
    return (Path(out) / INDEX).is_file()


def read_index(out: str | Path) -> dict:
    """``targets.json``; SearchError (one line naming the file) when it is not the index."""
    path = Path(out) / INDEX
    index = read_json(path)
    if not (isinstance(index, dict) and isinstance(index.get("targets"), list)
            and all(isinstance(t, dict) and isinstance(t.get("dir"), str) for t in index["targets"])):
        raise SearchError(f"{path}: not a multi-target index (expected an object with a 'targets' list)")
    return index


def target_dirs(out: str | Path) -> list[Path]:
    """The folder of every target of the multi-target search in `out`, in search order."""
    return [Path(out) / t["dir"] for t in read_index(out)["targets"]]


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


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _numbers(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and _number(v) for k, v in value.items())


def _rng_state(value: Any) -> bool:
    """`random.Random.getstate()` as JSON: [version, [625 ints], gauss or null]."""
    return (isinstance(value, list) and len(value) == 3 and isinstance(value[0], int)
            and isinstance(value[1], list) and len(value[1]) == 625 and all(isinstance(i, int) for i in value[1])
            and (value[2] is None or _number(value[2])))


#: Every field of ``state.json`` the search reads, and what it must be.
_STATE_FIELDS: dict[str, tuple[str, Any]] = {
    "format": ("an integer", lambda v: isinstance(v, int)),
    "space": ("a space name", lambda v: isinstance(v, str)),
    "limits": ("an object of numbers", _numbers),
    "mcd": ("an object", lambda v: isinstance(v, dict)),
    "iteration": ("an integer >= 0", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0),
    "config": ("a subnet config (an object with 'widths')", lambda v: isinstance(v, dict)
               and isinstance(v.get("widths"), dict) and _numbers(v["widths"])
               and _numbers(v.get("kernels", {}))),
    "score": ("a number", _number),
    "initial_values": ("an object of numbers", _numbers),
    "rng_state": ("a random-generator state", _rng_state),
    "elapsed_s": ("a number", _number),
}


def check_state(state: Any, path: Path) -> None:
    """SearchError (one line naming `path` and the field) unless `state` has the shape
    `search._Progress.state` writes (with `state_identity`'s keys)."""
    if not isinstance(state, dict):
        raise SearchError(f"{path}: not a search checkpoint (expected a JSON object)")
    for name, (expected, ok) in _STATE_FIELDS.items():
        if name not in state or not ok(state[name]):
            raise SearchError(f"{path}: field {name!r} is missing or not {expected}; restore the file or "
                              "delete the search folder")
    landing = state.get("landing", {})
    if not (isinstance(landing, dict) and all(_number(landing.get(k, 0)) for k in ("steps", "scored"))
            and isinstance(landing.get("rejected", []), list)
            and (landing.get("floor") is None or _number(landing["floor"]))):
        raise SearchError(f"{path}: field 'landing' is not the landing progress (steps, scored, rejected, floor)")
    if not isinstance(state.get("schedule_offset", 0), int):
        raise SearchError(f"{path}: field 'schedule_offset' is not an integer")


class SearchFiles:
    """The files of the search folder `out`; writes on rank 0 only (see the module docstring)."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self.writer = distributed.rank() == 0  # the other ranks read, never write

    # ------------------------------------------------------------------ reads (every rank)
    def history(self) -> list[dict]:
        return read_history(self.out)

    def final(self) -> dict | None:
        """``final.json``, or None while the search has not finished; SearchError (naming the
        file) when it is not a search result."""
        final = read_json(self.out / FINAL)
        if final is not None and not (isinstance(final, dict) and isinstance(final.get("config"), dict)
                                      and isinstance(final.get("space"), str)):
            raise SearchError(f"{self.out / FINAL}: not a search result (expected an object with 'space' and "
                              "'config')")
        return final

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
        """``state.json``: the checkpoint of the search to resume, its shape checked
        (`check_state`); SearchError naming the file otherwise."""
        state = read_json(self.out / STATE)
        if state is None:
            raise SearchError(f"--resume: {self.out} holds no search checkpoint ({STATE})")
        check_state(state, self.out / STATE)
        return state

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
        if self.out.exists() and not self.out.is_dir():
            raise SearchError(f"--out {self.out} is a file, not a folder; choose another --out")
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
