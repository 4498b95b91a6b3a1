"""Whole-network latency of a `SubnetConfig` from a LUT slice, fast enough for search (MCD).

`LatencyTable.predict(space.layer_configs(cfg))` is exact but builds ~30-60 `LayerConfig`s
per network. `LatencyPredictor` caches the summed latency of each block per (in, expand,
out, kernel) choice, so predicting a network is one dict look-up per block plus the stem
and head: the same figure (sum of the layers' LUT latencies + the slice's per-invoke
overhead once), hundreds of thousands of networks per second. All values in ms.

Block keys (`lutbuild build --granularity block`, `lut_db.layer_key.BlockConfig`): where the
slice has a row for a whole block configuration, that row is the block's latency (in-block
composition included by construction); a block without one is the sum of its layer rows.
`granularity="layer"` ignores block rows (the per-layer figure, for comparisons), `"block"`
requires them.
"""
from __future__ import annotations

from collections.abc import Iterable

from lut_db.errors import MissingLatencyError
from lut_db.layer_key import LayerConfig, is_block
from lut_db.reader import LatencyTable

#: How `LatencyPredictor` prices a block (module docstring).
GRANULARITIES = ("auto", "layer", "block")


class LatencyPredictor:
    """Predicts a sub-network's latency (ms) on one LUT slice.

    `check=True` (default) verifies up front that every key the space can need is in the
    table (or can be interpolated, when the table was loaded with `interpolate=True`) and
    raises `MissingLatencyError` naming the first missing key and how many are missing,
    instead of failing in the middle of a search.

    `granularity`: ``"auto"`` (default) uses a block row where the slice has one and the
    block's layer rows otherwise; ``"layer"`` always sums layer rows; ``"block"`` needs a row
    for every block configuration (a `--granularity block` build). A space without the
    block-wise layout is always predicted layer by layer.
    """

    def __init__(self, space, table: LatencyTable, check: bool = True, granularity: str = "auto"):
        if granularity not in GRANULARITIES:
            raise ValueError(f"LatencyPredictor.granularity: expected one of {GRANULARITIES}, got {granularity!r}")
        self.space = space
        self.table = table
        self.overhead_ms = table.overhead_ms
        # The block cache needs the block-wise layer layout (stem, blocks, head); a space that
        # lays out its layers differently (e.g. the depth spaces) is predicted layer by layer.
        self.fast = space.blockwise_layout
        if not self.fast or (granularity == "auto" and not block_row_count(table)):
            granularity = "layer"  # no block row to use: the layer path, exactly as before
        self.granularity = granularity
        if check:
            self.check()
        self._stem: dict[int, float] = {}
        self._head: dict[tuple[int, int], float] = {}
        # Per block: the fields predict() reads, resolved once, and the block's latency cache.
        self._blocks = [
            (b.name, b.kind == "cn", b.residual, b.in_var, b.expand_var, b.out_var, {}, b)
            for b in space.blocks
        ]

    # ------------------------------------------------------------------ checks
    def needed_keys(self) -> list[LayerConfig]:
        """Every key a prediction at this granularity can read, sorted by key: the space's layer
        keys (``layer``), its block keys (``block``), or each block's row where the slice has it
        and its layer keys where not (``auto``)."""
        space = self.space
        if self.granularity == "layer":
            return sorted(space.all_layer_configs(), key=lambda c: c.key)
        if self.granularity == "block":
            return sorted(space.all_block_configs(), key=lambda c: c.key)
        needed = {c.key: c for c in space.all_block_configs() if not self.table.has(c) and not is_block(c.key)}
        for block in space.blocks:
            for choice in space.block_choices(block):
                key = space.block_key(block, *choice)
                for cfg in [key] if self.table.has(key) else space.block_layers(block, *choice):
                    needed.setdefault(cfg.key, cfg)
        return sorted(needed.values(), key=lambda c: c.key)

    def missing_keys(self) -> list[LayerConfig]:
        """Keys of the space without a value in the table (interpolation not attempted)."""
        return self.table.missing(self.needed_keys())

    def check(self) -> None:
        """Raise `MissingLatencyError` if some key of the space has no latency (see class doc)."""
        missing = self.missing_keys()
        if not missing:
            return
        if self.table.interpolate and not any(is_block(c.key) for c in missing):
            for cfg in missing:  # estimates now (or raises naming the key that cannot be)
                self.table.latency(cfg)
            return
        t = self.table
        what, option = ("block", " --granularity block") if self.granularity == "block" else ("layer", "")
        raise MissingLatencyError(
            missing[0].key, t.device_id, t.runtime, t.runtime_options, path=t.origin,
            reason=f"{len(missing)} of the {len(self.needed_keys())} {what} keys of space "
                   f"{self.space.name} are missing; run `lutbuild build --space {self.space.name}{option}`")

    # ------------------------------------------------------------------ parts
    def block_latency(self, block, cin: int, expand: int, out: int, kernel: int) -> float:
        """LUT latency (ms) of `block` (a `ResolvedBlock`) at these widths/kernel: its block row
        (granularity ``block``, or ``auto`` where the slice has it), else the sum of its layer rows.

        `out == 0` on a residual block means removed (0 ms). Not cached; `predict` caches.
        """
        if block.residual and out == 0:
            return 0.0
        if self.granularity != "layer":
            key = self.space.block_key(block, cin, expand, out, kernel)
            if self.granularity == "block" or self.table.has(key):
                return self.table.latency(key)
        # Same layer list as `space.layer_configs` (one source of truth for the keys).
        layers = self.space.block_layers(block, cin, expand, out, kernel)
        return sum(self.table.latency(c) for c in layers)

    def stem_latency(self, width: int) -> float:
        """LUT latency (ms) of the stem conv with `width` filters (cached)."""
        ms = self._stem.get(width)
        if ms is None:
            ms = self._stem[width] = self.table.latency(self.space.stem_layer(width))
        return ms

    def head_latency(self, channels: int, fc: int) -> float:
        """LUT latency (ms) of the head on `channels` with `fc` hidden units (cached)."""
        ms = self._head.get((channels, fc))
        if ms is None:
            ms = self._head[(channels, fc)] = sum(self.table.latency(c)
                                                  for c in self.space.head_layers(channels, fc))
        return ms

    # ------------------------------------------------------------------ networks
    def predict(self, cfg) -> float:
        """Latency (ms) of sub-network `cfg`: layers' sum + the slice's per-invoke overhead."""
        if not self.fast:
            return self.table.predict(self.space.layer_configs(cfg))
        w = cfg.widths
        kernels = cfg.kernels
        total = self.overhead_ms + (self._stem.get(w["stem"]) or self.stem_latency(w["stem"]))
        for name, is_cn, residual, in_var, expand_var, out_var, cache, block in self._blocks:
            cin = w[in_var]
            if is_cn:
                key = (cin, 0, w[out_var], 0)
            else:
                expand = w[expand_var] if expand_var else cin
                out = w[out_var]
                if residual:
                    if out > cin:
                        out = cin
                    if out == 0 or expand == 0:
                        continue
                key = (cin, expand, out, kernels[name])
            ms = cache.get(key)
            if ms is None:
                ms = cache[key] = self.block_latency(block, *key)
            total += ms
        head = (w[self.space.final_stream], w["head.fc"])
        ms = self._head.get(head)
        return total + (ms if ms is not None else self.head_latency(*head))

    def predict_many(self, cfgs: Iterable) -> list[float]:
        return [self.predict(c) for c in cfgs]


def block_row_count(table: LatencyTable) -> int:
    """Rows of `table`'s slice whose key is a whole block (`lut_db.layer_key.is_block`)."""
    # LatencyTable lists no keys publicly; its key dict is read here, once per predictor.
    return sum(1 for key in table.keys() if is_block(key))
