"""The per-iteration resource target of MCD: a decaying reduction that lands on the constraint.

NetAdapt (V1, public code) asks each iteration for a fixed-shape reduction of the current
resource: ``target = current - init_red * decay ** (iteration - 1)`` with
``init_red = 0.025 * initial resource`` and ``decay = 0.96``. Big steps while the network is
large and redundant, smaller ones near the constraint where each layer matters more.

Our defaults differ on purpose (see `ReductionSchedule`):
- ``initial_fraction = 0.05``: MCD shrinks L layers per candidate, so one iteration can take a
  larger step than V1's single layer without tearing one layer down (that cap is the very
  reason NetAdaptV2 introduced MCD). Halving to 50 % of the max network then takes ~13
  iterations instead of V1's ~39.
- ``min_fraction = 0.005``: V1's geometric series sums to ``0.025 / 0.04 = 62.5 %`` of the
  initial resource, so V1 alone can never reach a target below 37.5 % of the start; a floor
  on the step keeps every target reachable in a bounded number of iterations.
- The target never goes below the constraint (``max(schedule, constraint)``), so the last
  iteration lands on the constraint rather than under it.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReductionSchedule:
    """Per-iteration resource reduction, as fractions of the *initial* resource (any unit)."""

    initial_fraction: float = 0.05  # first step: 5 % of the start network (V1: 2.5 %, one layer per step)
    decay: float = 0.96  # V1's decay: steps shrink as the network gets tight
    min_fraction: float = 0.005  # floor: V1's series alone stalls at 62.5 % total reduction

    def __post_init__(self) -> None:
        if not 0 < self.initial_fraction < 1:
            raise ValueError(f"schedule: initial_fraction must be in (0, 1), got {self.initial_fraction}")
        if not 0 < self.decay <= 1:
            raise ValueError(f"schedule: decay must be in (0, 1], got {self.decay}")
        if not 0 <= self.min_fraction <= self.initial_fraction:
            raise ValueError(f"schedule: min_fraction must be in [0, initial_fraction], got {self.min_fraction}")

    def reduction(self, iteration: int, initial: float) -> float:
        """Resource to remove in `iteration` (1-based), in the unit of `initial`."""
        if iteration < 1:
            raise ValueError(f"schedule: iterations are 1-based, got {iteration}")
        fraction = max(self.initial_fraction * self.decay ** (iteration - 1), self.min_fraction)
        return fraction * initial

    def target(self, iteration: int, current: float, initial: float, limit: float) -> float:
        """Target of `iteration`: ``max(current - reduction, limit)``; `limit` once it is met."""
        if current <= limit:
            return limit  # already satisfied: a candidate only has to stay within the constraint
        return max(current - self.reduction(iteration, initial), limit)
