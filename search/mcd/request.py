"""`SearchRequest`: everything `nas-search search` is asked, stored with the search.

`session.search` writes it to the search folder (``request.json``, `to_dict`) so the report
rebuilds the search's constraints and scorer from what the search ran with
(`run_baselines.rebuild`), not from what ``final.json`` happens to record.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .schedule import ReductionSchedule
from .search import MCDConfig

_PATHS = ("supernet", "out", "db")  # the fields that are paths (strings in JSON)


@dataclass(frozen=True)
class SearchRequest:
    """Everything `nas-search search` is asked (paths, targets, options)."""

    supernet: Path
    out: Path
    db: Path | None = None
    device: str | None = None  # device_id of the LUT slice
    runtime: str = "tflite"
    runtime_options: str | None = None  # None: the LUT's default (threads=1;delegate=xnnpack)
    target_latency_ms: float | None = None
    target_macs: float | None = None
    metric: str = "lut"  # what the latency target is read from: lut | measured; macs: MAC-only search
    measure_device: str = "local"  # agent for --metric measured: local or an adb serial
    interpolate: bool = False  # estimate LUT keys missing from the slice instead of failing
    space: str | None = None  # expected space (None: the checkpoint's)
    task: str | None = None  # expected task (None: the space's); classification | depth
    score: str | None = None  # score metric (None: the task's: top1; depth rmse, or delta1)
    data: str | None = None  # None: the dataset the super-network was trained on
    holdout_size: int | None = None  # None: the holdout the super-network was trained without
    calib_batches: int = 10  # BN recalibration batches per candidate (OFA uses ~2k images; 10 x 128 here)
    batch_size: int = 128
    mcd: MCDConfig = field(default_factory=MCDConfig)
    resume: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values: paths as strings, `mcd` (and its schedule) as nested dicts."""
        data = dataclasses.asdict(self)
        for name in _PATHS:
            data[name] = None if data[name] is None else str(data[name])
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchRequest:
        """The request `to_dict` wrote."""
        data = dict(data)
        for name in _PATHS:
            data[name] = None if data.get(name) is None else Path(data[name])
        mcd = dict(data.pop("mcd"))
        schedule = ReductionSchedule(**mcd.pop("schedule"))
        return cls(**data, mcd=MCDConfig(schedule=schedule, **mcd))
