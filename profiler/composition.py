"""The composition calibration: how much slower the runtime runs a whole network than its LUT rows add up to.

Why: a LUT row times one layer invoked alone, over and over; inside a network the same layer
meets weights last read one network ago, its neighbours' code and data in the caches, the
arena's other buffers. Timed beside the model in the same runner batches (`same_batch.py`, so
that the host's state cancels), the files of a model's own rows summed fell short of the whole
model by a share that was stable across models on this project's AMD host (docs/predict.md, "An
AMD host with little of the slow state: the miss is composition"). No row can hold that: it
belongs to the network, and to how the runtime composes layers on this device.

`lutbuild calibrate MODEL...` (`composition_run.py`) measures, per model, whole / layers now
(the median over rounds of the paired ratio; also of the p10s), and stores the models' ratios in
the slice's ``composition`` calibration (`detail.models`, keyed by `model_fingerprint`, so a
renamed file, the same network's file for the other runtime or given as a factory is one
model). The row's value is the median ratio over the models: a dimensionless factor, although
the column is named ``value_ms`` (a schema change for one constant was not worth a migration).

`lutbuild predict` multiplies the LUT sum by the median ratio of the calibrated models *other
than the one predicted* (`composition_for`): a prediction is never fitted to its own
measurement, so a verification of predict against the models it was calibrated on stays a
held-out test. The breakdown shows the difference as one line, ``(composition)``, so the lines
still add up to the total. A slice without the calibration predicts the plain sum, as before;
the search (`LatencyTable.predict`) never reads it: within one slice a constant factor does not
change which candidate is faster, and the search spaces' networks are checked by `verify`.
"""
from __future__ import annotations

import hashlib
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from sqlite_utils import Database

from lut_db.layer_key import GenericKey, LayerConfig
from lut_db.writer import LutWriter

from . import calibrate
from .same_batch import SameBatch

COMPOSITION = "composition"


def model_fingerprint(keys: Sequence[LayerConfig | GenericKey]) -> str:
    """A model's identity for the calibration: the hash of its LUT keys of the project's kinds, in
    breakdown order. Generic keys are left out because they spell the converter, not the network
    (mixnet_s's grouped convolutions are ONNX Split operators but TFLite SLICEs, more lines in
    one file than the other, while its keys of our kinds are the same in both). A model with no
    key of our kinds is named by all of its keys."""
    ours = [k.key for k in keys if not isinstance(k, GenericKey)]
    return hashlib.sha256("\n".join(ours or [k.key for k in keys]).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ModelRatio:
    """One calibrated model: whole model / its LUT layer files summed, timed in the same batches."""

    model: str  # as the user gave it (file or factory), for the report
    fingerprint: str  # `model_fingerprint` of its keys
    ratio: float  # of the medians: 1 / (median over rounds of layers now / whole)
    ratio_p10: float  # the same of the p10s (the fast state): what a `--statistic p10` prediction uses
    rounds: int

    @classmethod
    def of(cls, model: str, fingerprint: str, same: SameBatch) -> ModelRatio:
        return cls(model, fingerprint, 1 / same.ratio_layers_to_whole, 1 / same.ratio_p10_layers_to_whole,
                   len(same.round_whole_ms))

    def value(self, statistic: str) -> float:
        return self.ratio_p10 if statistic == "p10" else self.ratio


@dataclass(frozen=True)
class Composition:
    """The factor a prediction is multiplied by, and the models it was learned from."""

    factor: float
    models: tuple[str, ...]
    held_out: str = ""  # the predicted model, calibrated too and left out ("" when it was not calibrated)

    def note(self) -> str:
        held = f"; {self.held_out} itself held out" if self.held_out else ""
        return f"composition x{self.factor:.3f} (median of {len(self.models)} calibrated model(s){held})"


def read_ratios(db: Database, device_id: str, runtime: str, options: str) -> list[ModelRatio]:
    """The calibrated models of a slice (none when it has no composition calibration)."""
    stored = calibrate.calibration(db, device_id, runtime, options, COMPOSITION)
    if stored is None:
        return []
    return [ModelRatio(**{**entry, "fingerprint": fp}) for fp, entry in stored[1].get("models", {}).items()]


def store_ratios(db: Database, device_id: str, runtime: str, options: str, ratios: Sequence[ModelRatio]) -> float:
    """Add `ratios` to the slice's calibration (a model calibrated before is replaced), in one
    transaction; returns the slice's new factor (the median ratio over all its models)."""
    with db.atomic():  # nested in set_calibration's own: one transaction, read and write together
        models = {r.fingerprint: r for r in read_ratios(db, device_id, runtime, options)}
        models |= {r.fingerprint: r for r in ratios}
        value = statistics.median(r.ratio for r in models.values())
        LutWriter(db).set_calibration(device_id, runtime, options, COMPOSITION, value, {
            "what": "whole model / its LUT layer files summed, timed in the same runner batches (median over "
                    "rounds; ratio_p10: of the p10s); value: the median ratio over the models, a factor, not ms. "
                    "lutbuild predict multiplies the LUT sum by the median ratio of the models other than the "
                    "one predicted (profiler/composition.py)",
            "models": {fp: {k: v for k, v in asdict(r).items() if k != "fingerprint"} for fp, r in models.items()},
        })
    return value


def composition_for(ratios: Sequence[ModelRatio], fingerprint: str, statistic: str = "median") -> Composition | None:
    """The factor of a prediction of the model `fingerprint`: the median `statistic` ratio of the
    calibrated models other than it; None when no other model is calibrated."""
    others = [r for r in ratios if r.fingerprint != fingerprint]
    if not others:
        return None
    held = next((r.model for r in ratios if r.fingerprint == fingerprint), "")
    return Composition(statistics.median(r.value(statistic) for r in others), tuple(r.model for r in others), held)
