"""Whole-network latency of a `SubnetConfig` from a LUT slice, fast enough for search (MCD).

`LatencyTable.predict(space.layer_configs(cfg))` is exact but builds ~30-60 `LayerConfig`s
per network. `LatencyPredictor` caches the summed latency of each block per (in, expand,
out, kernel) choice, so predicting a network is one dict look-up per block plus the stem
and head: the same figure (sum of the layers' LUT latencies + the slice's per-invoke
overhead once), hundreds of thousands of networks per second. All values in ms.
"""
from __future__ import annotations

from collections.abc import Iterable

from lut_db.errors import MissingLatencyError
from lut_db.layer_key import LayerConfig
from lut_db.reader import LatencyTable


class LatencyPredictor:
    """Predicts a sub-network's latency (ms) on one LUT slice.

    `check=True` (default) verifies up front that every key the space can need is in the
    table (or can be interpolated, when the table was loaded with `interpolate=True`) and
    raises `MissingLatencyError` naming the first missing key and how many are missing,
    instead of failing in the middle of a search.
    """

    def __init__(self, space, table: LatencyTable, check: bool = True):
        self.space = space
        self.table = table
        self.overhead_ms = table.overhead_ms
        if check:
            self.check()
        # The block cache needs the block-wise layer layout (stem, blocks, head); a space that
        # lays out its layers differently (e.g. the depth spaces) is predicted layer by layer.
        self.fast = space.blockwise_layout
        self._stem: dict[int, float] = {}
        self._head: dict[tuple[int, int], float] = {}
        # Per block: the fields predict() reads, resolved once, and the block's latency cache.
        self._blocks = [
            (b.name, b.kind == "cn", b.residual, b.in_var, b.expand_var, b.out_var, {}, b)
            for b in space.blocks
        ]

    # ------------------------------------------------------------------ checks
    def missing_keys(self) -> list[LayerConfig]:
        """Keys of the space without a value in the table (interpolation not attempted)."""
        return self.table.missing(sorted(self.space.all_layer_configs(), key=lambda c: c.key))

    def check(self) -> None:
        """Raise `MissingLatencyError` if some key of the space has no latency (see class doc)."""
        missing = self.missing_keys()
        if not missing:
            return
        if self.table.interpolate:
            for cfg in missing:  # estimates now (or raises naming the key that cannot be)
                self.table.latency(cfg)
            return
        t = self.table
        raise MissingLatencyError(
            missing[0].key, t.device_id, t.runtime, t.runtime_options, path=t.origin,
            reason=f"{len(missing)} of the {len(self.space.all_layer_configs())} layer keys of space "
                   f"{self.space.name} are missing; run `lutbuild build --space {self.space.name}`")

    # ------------------------------------------------------------------ parts
    def block_latency(self, block, cin: int, expand: int, out: int, kernel: int) -> float:
        """Sum of the LUT latencies (ms) of `block` (a `ResolvedBlock`) at these widths/kernel.

        `out == 0` on a residual block means removed (0 ms). Not cached; `predict` caches.
        """
        if block.residual and out == 0:
            return 0.0
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
