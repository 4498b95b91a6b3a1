"""Which keys a `--granularity block` build measures: whole blocks, plus the layers outside blocks.

A block-granular LUT has one row per whole ``ir``/``ds`` block configuration
(`lut_db.layer_key.BlockConfig`, from `SearchSpace.all_block_configs`): in-block
composition effects (the 1x1 -> dw -> 1x1 slowdown of docs/lut.md, "TFLite additivity")
are in the row by construction. The stem, ``cn`` blocks and the head stay layer keys.

- `full`: every key of `space.all_block_configs()`.
- `sparse`: the layer keys on `plan.sparse_grid` (the per-layer sparse plan's grid); the block
  keys on a channel grid per block family (`lut_db.block_interpolate.block_family`): each of
  the three channel axes (in, expand, out) keeps `plan.grid_values` of its values (min, max,
  every other one, at most `max_points`). Off-grid keys are written as `source='interpolated'`
  rows once the grid is measured (`interpolate_block_slice`: layers by `lut_db.interpolate`,
  blocks by `lut_db.block_interpolate`). A family whose grid has fewer than two points is
  measured in full.

Same order, resume and registration as the layer plans (`plan.Plan`: sorted by key; resume =
plan minus the slice's measured keys). The plan registers its keys under the space name
``<space>[block]`` (`block_space_name`), so `lutbuild show` lists the block coverage of a slice
beside the layer coverage of the same space and a block build never replaces the layer
registration.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlite_utils import Database

from lut_db.block_interpolate import block_family, interpolate_blocks
from lut_db.layer_key import BLOCK, BlockConfig, LayerConfig, RuntimeSpec, is_block
from lut_db.writer import LutWriter, MeasurementRow

from .errors import ProfilerError
from .lut_rows import interpolate_slice, write_interpolated
from .plan import PLANS, SPARSE_MAX_POINTS, Plan, grid_values, sparse_grid

GRANULARITIES = ("layer", "block")


@dataclass(frozen=True)
class BlockPlan(Plan):
    """A `Plan` whose keys are whole blocks (plus the layers outside blocks); `space` is `block_space_name`."""


def block_space_name(space_name: str) -> str:
    """The name a block plan registers its keys under (`lutbuild show`'s coverage table)."""
    return f"{space_name}[{BLOCK}]"


def check_granularity(name: str) -> str:
    if name not in GRANULARITIES:
        raise ProfilerError(f"--granularity: unknown granularity {name!r}, expected one of {', '.join(GRANULARITIES)}")
    return name


def make_block_plan(space, name: str = "full", max_points: int = SPARSE_MAX_POINTS) -> BlockPlan:
    """The block-granular plan `name` (`full` or `sparse`) of `space` (a `SearchSpace`)."""
    if name not in PLANS:
        raise ProfilerError(f"--plan: unknown plan {name!r}, expected one of {', '.join(PLANS)}")
    if not getattr(space, "blockwise_layout", False):
        raise ProfilerError(f"--granularity block: space {space.name} does not lay out its layers block by block "
                            "(stem, blocks, head); use --granularity layer")
    keys = sorted(space.all_block_configs(), key=lambda c: c.key)
    title = block_space_name(space.name)
    if name == "full":
        return BlockPlan("full", title, tuple(keys), ())
    layers = [c for c in keys if not isinstance(c, BlockConfig)]
    grid = set(sparse_grid(layers, max_points)) | set(block_grid([c for c in keys if isinstance(c, BlockConfig)],
                                                                 max_points))
    return BlockPlan("sparse", title, tuple(c for c in keys if c in grid), tuple(c for c in keys if c not in grid))


def block_grid(blocks: Sequence[BlockConfig], max_points: int = SPARSE_MAX_POINTS) -> list[BlockConfig]:
    """The blocks of `blocks` on their family's (in, expand, out) grid, sorted by key."""
    families: dict[tuple, list[BlockConfig]] = {}
    for cfg in blocks:
        families.setdefault(block_family(cfg), []).append(cfg)
    chosen: list[BlockConfig] = []
    for members in families.values():
        axes = [grid_values((getattr(c, f) for c in members), max_points) for f in ("cin", "expand", "cout")]
        picked = [c for c in members if c.cin in axes[0] and c.expand in axes[1] and c.cout in axes[2]]
        chosen.extend(picked if len(picked) >= 2 else members)
    return sorted(chosen, key=lambda c: c.key)


def interpolate_block_slice(db: Database, writer: LutWriter, plan: Plan, device_id: str,
                            rt: RuntimeSpec) -> tuple[int, int]:
    """`lut_rows.interpolate_slice` for a block plan: its layer keys by the layer rule, its block keys
    from the slice's measured blocks (`lut_db.block_interpolate`). Returns (rows written, keys left missing)."""
    layer_plan = Plan(plan.name, plan.space, (), tuple(c for c in plan.interpolate if not isinstance(c, BlockConfig)))
    written, missing = interpolate_slice(db, writer, layer_plan, device_id, rt)
    sql = ("SELECT layer_key, median_ms FROM measurements WHERE device_id = ? AND runtime = ? "
           "AND runtime_options = ? AND source = 'measured' AND layer_key LIKE ?")
    measured: dict[BlockConfig, float] = {}
    for key, ms in db.execute(sql, [device_id, rt.name, rt.options, f"{BLOCK}:%"]).fetchall():
        if is_block(key):
            measured[BlockConfig.from_key(key)] = ms
    wanted = [c for c in plan.interpolate if isinstance(c, BlockConfig) and c not in measured]
    estimates = interpolate_blocks(measured, wanted)
    write_interpolated(db, writer, [_interpolated_row(cfg, ms, device_id, rt, plan.name)
                                    for cfg, ms in sorted(estimates.items(), key=lambda item: item[0].key)],
                       device_id, rt)
    return written + len(estimates), missing + len(wanted) - len(estimates)


def _interpolated_row(cfg: LayerConfig, ms: float, device_id: str, rt: RuntimeSpec, plan: str) -> MeasurementRow:
    """An interpolated row as `lut_rows.interpolate_slice` writes them (n=0, no spread)."""
    return MeasurementRow(layer=cfg, device_id=device_id, runtime=rt, n=0, median_ms=ms, mean_ms=ms, p10_ms=ms,
                          p90_ms=ms, std_ms=0.0, source="interpolated", plan=plan)
