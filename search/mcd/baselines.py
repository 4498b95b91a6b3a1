"""Baselines in the same code path as MCD, for the comparisons users ask for.

- `uniform_baseline`: MobileNet-style width multiplier. Every width of the max network
  scaled by one multiplier (kernels kept at max), the largest multiplier (step 0.01) that
  meets every constraint; scored like an MCD candidate.
- `random_baseline`: a *fair* random search with MCD's evaluation budget (the number of
  candidates MCD scored, landing included). Each draw is a uniformly random sub-network
  repaired into the band MCD lands in (`landing.in_band`: every limit met, the tightest
  within 2 % of it): one that misses a constraint is shrunk on randomly ordered dimensions
  (round-robin, as MCD candidates) until it meets them; one that sits below the band is
  grown one step at a time on randomly ordered dimensions while every limit holds. A draw
  that cannot be repaired into the band (coarse steps) is redrawn (at most 20 draws per
  network scored). So random networks spend the same resource as MCD's instead of sitting
  far under the target (issue 14: 0.073 ms for a 0.288 ms target). Best score wins.
- `netadapt_v1`: NetAdapt (Yang et al. 2018) as its public code does it: one layer per
  proposal, a proposal for *every* shrinkable width each iteration, each proposal
  short-fine-tuned from the current network's weights (no super-network scoring), the most
  accurate proposal (on the held-out split) is kept with its weights. Schedule defaults are
  V1's (2.5 % of the start, decay 0.96, no floor beyond 0.5 %). Filters: V1 keeps the
  filters with the largest L2 norm; we keep the *first* filters (slice-first), because the
  start weights come from the OD super-network, where the first channels are by
  construction the ones every sub-network shares (ordered importance), so reordering by
  L2 norm would break that ordering. V1 has no CBC and no kernel search: proposals only
  narrow widths, never to 0. The fine-tune and the held-out score are functions
  (`finetune_fn`, `evaluate_fn`); by default the space's task supplies them
  (`search/tasks.py`: SGD + top-1 for classification, AdamW masked L1 + -RMSE for depth).
"""
from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from search.errors import SearchError
from search.spaces.space import SearchSpace, SubnetConfig
from search.supernet import slice_like
from search.tasks import task_of

from .candidates import KERNEL_PREFIX, dimensions, grow_step, make_candidate, meets, shrink_step
from .landing import in_band
from .metrics import Constraint
from .schedule import ReductionSchedule
from .scoring import Scorer, score_all

BASELINES = ("uniform", "random", "netadapt-v1")


@dataclass
class BaselineResult:
    name: str
    config: SubnetConfig
    values: dict[str, float]
    score: float
    evaluations: int  # networks scored (or fine-tuned and scored, for V1)
    time_s: float
    detail: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["config"] = self.config.to_dict()
        return data


def _values(constraints: Sequence[Constraint], cfg: SubnetConfig, extra=()) -> dict[str, float]:
    metrics = {c.name: c.metric for c in constraints}
    for m in extra:
        metrics.setdefault(m.name, m)
    return {n: m.value(cfg) for n, m in metrics.items()}


def uniform_baseline(space: SearchSpace, constraints: Sequence[Constraint], scorer: Scorer,
                     report_metrics=()) -> BaselineResult:
    """Largest uniform width multiplier (0.01 steps) meeting every constraint."""
    t0 = time.perf_counter()
    limits = {c.name: c.limit for c in constraints}
    for step in range(100, 0, -1):
        multiplier = step / 100
        cfg = space.canonical(space.uniform_config(multiplier))
        if meets({c.name: c.metric.value(cfg) for c in constraints}, limits):
            score = score_all([cfg], scorer)[0]
            return BaselineResult("uniform", cfg, _values(constraints, cfg, report_metrics), score, 1,
                                  time.perf_counter() - t0, {"multiplier": multiplier})
    raise SearchError("uniform baseline: no width multiplier >= 0.01 meets the constraints")


def random_baseline(space: SearchSpace, constraints: Sequence[Constraint], scorer: Scorer, budget: int,
                    seed: int = 0, report_metrics=()) -> BaselineResult:
    """Best of `budget` random sub-networks inside the landing band of every constraint."""
    if budget < 1:
        raise SearchError(f"random baseline: budget must be >= 1, got {budget}")
    t0 = time.perf_counter()
    rng = random.Random(seed)
    configs: list[SubnetConfig] = []
    seen = set()
    draws = 0
    while draws < budget * 20 and len(configs) < budget:
        draws += 1
        cfg = repair_into_band(space, space.random_config(rng), constraints, rng)
        if cfg is not None and cfg not in seen:
            seen.add(cfg)
            configs.append(cfg)
    if not configs:
        raise SearchError(f"random baseline: none of {draws} random networks of {space.name} could be brought "
                          "within 2 % under the constraints")
    scores = score_all(configs, scorer)
    best = max(range(len(configs)), key=lambda i: (scores[i], -i))
    return BaselineResult("random", configs[best], _values(constraints, configs[best], report_metrics), scores[best],
                          len(configs), time.perf_counter() - t0, {"scores": scores, "draws": draws})


def repair_into_band(space: SearchSpace, config: SubnetConfig, constraints: Sequence[Constraint],
                     rng: random.Random) -> SubnetConfig | None:
    """`config` shrunk onto the limits if it misses one, then grown into the band while every
    limit holds (see `random_baseline`); None when it cannot reach the band."""
    limits = {c.name: c.limit for c in constraints}
    order = dimensions(space)
    rng.shuffle(order)
    candidate = make_candidate(space, config, constraints, limits, order)
    if candidate is None:
        return None
    config, values = candidate.config, dict(candidate.values)
    grew = True
    while grew and not in_band(values, limits):
        grew = False
        rng.shuffle(order)
        for dim in order:
            grown = grow_step(space, config, dim)
            if grown is None:
                continue
            grown_values = {c.name: c.metric.value(grown) for c in constraints}
            if meets(grown_values, limits):
                config, values, grew = grown, grown_values, True
                if in_band(values, limits):
                    break
    return config if in_band(values, limits) else None


def transfer_weights(source_model, target_model) -> None:
    """Copy `source_model`'s weights into the (smaller) `target_model`: first channels kept."""
    source = source_model.state_dict()
    target_model.load_state_dict({name: slice_like(source[name], t.shape)
                                  for name, t in target_model.state_dict().items()})


def netadapt_v1(space: SearchSpace, constraints: Sequence[Constraint], start_model, train_loader=None,
                holdout_loader=None, finetune_steps: int = 100, lr: float | None = None,
                schedule: ReductionSchedule | None = None, max_iterations: int = 200, report_metrics=(),
                seed: int = 0, log: Callable[[str], None] = print,
                finetune_fn: Callable[[object, int], None] | None = None,
                evaluate_fn: Callable[[object], float] | None = None) -> BaselineResult:
    """NetAdapt V1 from `start_model` (a standalone network of the space, e.g. the sliced max network).

    `finetune_fn(model, iteration)`: the short fine-tune of each proposal, in place; default:
    the task's, `finetune_steps` steps on `train_loader` at `lr` (None: the task's; V1's
    scripts: 500 steps on ImageNet). `evaluate_fn(model) -> score` (higher is better);
    default: the task's score on `holdout_loader`.
    """
    task = task_of(space)
    if finetune_fn is None:
        if train_loader is None:
            raise SearchError("netadapt-v1: pass train_loader or finetune_fn")
        finetune_fn = task.proposal_finetune(train_loader, finetune_steps, task.proposal_lr if lr is None else lr,
                                             seed)
    if evaluate_fn is None:
        if holdout_loader is None:
            raise SearchError("netadapt-v1: pass holdout_loader or evaluate_fn")
        evaluate_fn = lambda model: task.score(task.evaluate(model, holdout_loader))  # noqa: E731
    schedule = schedule or ReductionSchedule(0.025, 0.96, 0.005)
    t0 = time.perf_counter()
    limits = {c.name: c.limit for c in constraints}
    current, model = space.canonical(start_model.config), start_model
    initial = {c.name: c.metric.value(current) for c in constraints}
    width_dims = [d for d in dimensions(space) if not d.startswith(KERNEL_PREFIX)]
    evaluations, iteration, score = 0, 0, float("nan")
    trajectory = []
    while not meets({c.name: c.metric.value(current) for c in constraints}, limits):
        iteration += 1
        if iteration > max_iterations:
            raise SearchError(f"netadapt-v1: constraints not met after {max_iterations} iterations")
        now = {c.name: c.metric.value(current) for c in constraints}
        targets = {c.name: schedule.target(iteration, now[c.name], initial[c.name], c.limit) for c in constraints}
        best = None
        for dim in width_dims:
            cand = _v1_proposal(space, current, constraints, targets, dim)
            if cand is None:
                continue
            proposal = space.build_subnet(cand)
            transfer_weights(model, proposal)
            finetune_fn(proposal, iteration)
            score_ = float(evaluate_fn(proposal))
            evaluations += 1
            if best is None or score_ > best[0]:
                best = (score_, cand, copy.deepcopy(proposal))
        if best is None:
            raise SearchError("netadapt-v1: no single-layer proposal reaches the iteration target "
                              "(its reduction is capped by the smallest layer)")
        score, current, model = best
        trajectory.append({"iteration": iteration, "targets": targets, "values": _values(constraints, current),
                           "score": score, "elapsed_s": round(time.perf_counter() - t0, 2)})
        log(f"v1 iter {iteration}: {' '.join(f'{n}={v:.4g}' for n, v in trajectory[-1]['values'].items())} "
            f"holdout score {score:.4f} ({evaluations} fine-tunes, {time.perf_counter() - t0:.0f}s)")
    return BaselineResult("netadapt-v1", current, _values(constraints, current, report_metrics), score, evaluations,
                          time.perf_counter() - t0, {"iterations": iteration, "trajectory": trajectory,
                                                     "finetune_steps": finetune_steps, "model": model})


def _v1_proposal(space, current, constraints, targets, dim) -> SubnetConfig | None:
    """Shrink one width (never to 0: V1 has no CBC) just enough to meet `targets`."""
    cfg = current
    while True:
        smaller = shrink_step(space, cfg, dim)
        if smaller is None or smaller.widths[dim] == 0:
            return None
        cfg = smaller
        if meets({c.name: c.metric.value(cfg) for c in constraints}, targets):
            return cfg
