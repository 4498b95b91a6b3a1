"""Per-layer diagnosis: a network's operators as timed *inside* the network, next to their LUT rows.

`lutbuild verify --op-profile` profiles each sampled whole network once per operator
(`device_agents.contract.OpProfile`: ONNX Runtime's profiler in the runner, or
benchmark_model ``--enable_op_profiling`` on a phone) and joins every profiled operator to
the LUT row that predicts it:

1. The exported network file is read and mapped to LUT keys exactly as `lutbuild predict`
   does (`model_graph.load_model` -> `graph_keys.map_graph`); each mapped layer covers a
   chain of graph nodes (the first node is the layer's name, the others follow it as
   consumers, in the order of `MappedLayer.ops`).
2. A profiled operator belongs to the layer whose node it names, or whose node wrote the
   tensor it is named after: ONNX Runtime names a layout-transformed node
   ``<output tensor>_nchwc``; benchmark_model names a builtin kernel ``[<tensor>]:<index>``
   (our TFLite graph nodes are ``<BUILTIN>_<index>``). Operators of no layer (ORT's
   ``ReorderInput`` / ``ReorderOutput`` layout glue, nodes the runtime made up such as a
   decomposed HardSwish, XNNPACK's per-type rows) are kept per type as *unattributed*.
3. The mapped layers are aligned with the space's own layer list (`space.layer_configs`,
   the rows `LatencyPredictor` sums) by key (`difflib`): equal keys pair one to one; where
   the exporter spelled a layer differently (a channel-padded residual add exported as
   Slice + Add + Concat) the span is one joined row (all its graph layers against all its
   LUT rows), so every LUT row of the prediction appears exactly once.

Per row: LUT ms (the row, without the per-invoke overhead), in-network ms (its operators'
kernel times per inference; the profile's statistic: median for ONNX Runtime, mean for
benchmark_model) and their ratio. A row whose operators the runtime fused into a
neighbour (ORT folds a residual Add into the conv before it) has 0 in-network ms and no
ratio. Kernel times leave out the runtime's time between operators, so ratios sit a
little below 1 even for a perfectly additive runtime; what matters is the spread across kinds.
"""
from __future__ import annotations

import difflib
import math
import re
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

from device_agents.contract import OpProfile, OpTiming
from lut_db.errors import MissingLatencyError
from lut_db.layer_key import LayerConfig
from lut_db.reader import LatencyTable

from .errors import ProfilerError
from .graph_keys import MappedLayer, map_graph
from .model_graph import ModelGraph, Node, load_model

#: benchmark_model's name of a builtin kernel: ``[tensor;tensor]:<node index>``.
_TFLITE_NODE = re.compile(r"^\[(?P<tensors>.*)\]:(?P<index>\d+)$")
#: How many kinds the summary names as breaking additivity most.
WORST_KINDS = 3


@dataclass(frozen=True)
class JoinedLayer:
    """One LUT row (or a span of rows the exporter spelled differently) and its operators' time
    inside the network (ms)."""

    layer: str  # the graph layer's name ("+"-joined for a span)
    kind: str  # LUT kind: op, and kernel/stride for convolutions ("dwconv k7s2"); "+"-joined for a span
    key: str  # the LUT key(s) ("+"-joined; "-" for a graph layer the prediction has no row for)
    lut_ms: float  # the LUT row(s), without the per-invoke overhead
    profiled_ms: float  # the profiled operators joined to it, per inference, as the profiler gave them
    network_ms: float  # the same less the profiler's own cost per operator call (0: fused into a neighbour)
    calls: int  # operator calls per inference joined to it
    operators: tuple[str, ...]  # the profiled operators' names

    @property
    def ratio(self) -> float | None:
        """In-network / LUT time; None when either side is 0 (fused away, or no LUT row)."""
        return self.network_ms / self.lut_ms if self.network_ms > 0 and self.lut_ms > 0 else None

    @property
    def raw_ratio(self) -> float | None:
        """Profiled (uncorrected) / LUT time."""
        return self.profiled_ms / self.lut_ms if self.profiled_ms > 0 and self.lut_ms > 0 else None


@dataclass(frozen=True)
class NetworkOps:
    """One network's join: its layers in order, and the profiled operators of no layer (by type)."""

    index: int  # the sample's index in the verify report
    model: str  # the exported network file
    source: str  # "onnxruntime" / "benchmark_model"
    statistic: str  # "median" / "mean" per operator over the profiled runs
    runs: int
    layers: list[JoinedLayer]
    unattributed: list[OpTiming]  # one row per operator type: ms and calls summed (as profiled)
    profiler_ms_per_call: float  # the profiler's own cost per operator call (`profiler_cost`), 0 when unknown

    @property
    def lut_ms(self) -> float:
        return sum(row.lut_ms for row in self.layers)

    @property
    def unattributed_net(self) -> list[OpTiming]:
        """`unattributed` less the profiler's cost per call (ms, >= 0)."""
        cost = self.profiler_ms_per_call
        return [OpTiming(op.name, op.op_type, max(0.0, op.ms - cost * op.count), op.count) for op in self.unattributed]

    @property
    def profiled_ms(self) -> float:
        """All profiled operators per inference (layers + unattributed), as profiled."""
        return sum(row.profiled_ms for row in self.layers) + sum(op.ms for op in self.unattributed)

    def to_json_dict(self) -> dict:
        return {"index": self.index, "model": self.model, "source": self.source, "statistic": self.statistic,
                "runs": self.runs, "lut_ms": self.lut_ms, "profiled_ms": self.profiled_ms,
                "profiler_ms_per_call": self.profiler_ms_per_call,
                "layers": [{**asdict(row), "operators": list(row.operators), "ratio": row.ratio,
                            "raw_ratio": row.raw_ratio} for row in self.layers],
                "unattributed": [asdict(op) for op in self.unattributed],
                "unattributed_net": [asdict(op) for op in self.unattributed_net]}


@dataclass(frozen=True)
class KindRatio:
    """In-network / LUT ratios of one LUT kind across the verified networks."""

    kind: str
    layers: int  # joined rows of this kind
    fused: int  # of which no operator of their own ran (no ratio)
    median_ratio: float | None  # of the corrected in-network times
    median_raw_ratio: float | None  # of the times as profiled
    min_ratio: float | None
    max_ratio: float | None
    lut_ms: float  # summed over the networks
    network_ms: float

    @property
    def distance(self) -> float:
        """|log(median ratio)|: how far the kind is from adding up (0: exactly)."""
        return abs(math.log(self.median_ratio)) if self.median_ratio else 0.0

    @property
    def delta_ms(self) -> float:
        """In-network less LUT time, summed over the networks (ms): the kind's share of the LUT's error."""
        return self.network_ms - self.lut_ms


@dataclass(frozen=True)
class OpJoinReport:
    """`verify --op-profile`'s part of the report: every profiled network, the per-kind summary,
    and why a network has no profile (one line; "" when all have one)."""

    networks: list[NetworkOps]
    kinds: list[KindRatio]
    unattributed: list[OpTiming]  # per type, summed over the networks (ms per inference summed), as profiled
    unattributed_net: list[OpTiming]  # the same less the profiler's cost per call
    note: str = ""

    def to_json_dict(self) -> dict:
        return {"networks": [n.to_json_dict() for n in self.networks],
                "kinds": [{**asdict(k), "distance": k.distance, "delta_ms": k.delta_ms} for k in self.kinds],
                "unattributed": [asdict(op) for op in self.unattributed],
                "unattributed_net": [asdict(op) for op in self.unattributed_net], "note": self.note}


def op_profile_refusal(runtime: str, agent) -> str:
    """Why `agent` cannot give per-operator profiles for `runtime` ("" when it can): LiteRT's
    Python interpreter (this host, or the Python runner on a phone) has no per-operator
    profiler; onnxruntime_perf_test's profile file is not pulled back from a phone."""
    binary = getattr(agent, "binary", None)
    if runtime == "tflite" and binary is None:
        return ("--op-profile: LiteRT's Python interpreter has no per-operator profiler, so TFLite networks "
                "cannot be profiled here; use --runtime onnx, or a phone with --benchmark-binary benchmark_model")
    if runtime == "onnx" and binary is not None:
        return ("--op-profile: operator profiles with onnxruntime_perf_test are not supported; use the Python "
                "runner on the phone (--runner python, without --benchmark-binary)")
    return ""


def layer_kind(cfg) -> str:
    """The LUT kind a row is summarised under: the op, with kernel and stride for convolutions;
    a generic key's operator type."""
    if isinstance(cfg, LayerConfig):
        return f"{cfg.op} k{cfg.kernel}s{cfg.stride}" if cfg.op in ("conv", "dwconv") else cfg.op
    return f"generic {cfg.op_type}"


def profiler_cost(profile: OpProfile, operators_ms: float | None) -> float:
    """The profiler's own cost per operator call (ms): how much the profiled operators' sum
    exceeds `operators_ms` (the network's unprofiled time less the per-invoke overhead), spread
    evenly over the calls; 0 when unknown or when the profile does not exceed it.

    Why: ONNX Runtime's per-node events carry several microseconds of bookkeeping each (a
    one-element ReLU profiles at ~7 us; on this host the operators of a 0.09 ms network sum to
    0.14-0.30 ms profiled), which would drown small layers' ratios. benchmark_model's profiler is
    cheaper, and the same rule then subtracts little."""
    calls = sum(op.count for op in profile.ops)
    if operators_ms is None or calls == 0:
        return 0.0
    return max(0.0, (profile.total_ms - operators_ms) / calls)


def join_network(model: str | Path, profile: OpProfile, table: LatencyTable, space_layers: list,
                 index: int = 0, operators_ms: float | None = None) -> NetworkOps:
    """Join `profile` (of the network file `model`) to its LUT rows `space_layers` (module
    docstring); `operators_ms`: the network's unprofiled time less the per-invoke overhead (ms),
    to take the profiler's own cost out (`profiler_cost`); None: times as profiled."""
    graph = load_model(str(model))
    mapping = map_graph(graph)
    owner = _owners(graph, mapping.layers)
    per_layer: list[list[OpTiming]] = [[] for _ in mapping.layers]
    unattributed: list[OpTiming] = []
    for op in profile.ops:
        i = _owner_of(op, owner)
        (unattributed if i is None else per_layer[i]).append(op)
    cost = profiler_cost(profile, operators_ms)
    rows = _align(mapping.layers, per_layer, list(space_layers), table, cost)
    return NetworkOps(index, str(model), profile.source, profile.statistic, profile.runs, rows,
                      list(OpProfile(profile.source, profile.runs, tuple(unattributed)).by_type()), cost)


def summarize(networks: list[NetworkOps], note: str = "") -> OpJoinReport:
    """Per-kind ratios across `networks` (sorted: furthest from adding up first) and the
    unattributed operators per type."""
    by_kind: dict[str, list[JoinedLayer]] = {}
    for net in networks:
        for row in net.layers:
            by_kind.setdefault(row.kind, []).append(row)
    kinds = []
    for kind, rows in by_kind.items():
        ratios = [r.ratio for r in rows if r.ratio is not None]
        raw = [r.raw_ratio for r in rows if r.raw_ratio is not None]
        kinds.append(KindRatio(kind, len(rows), sum(1 for r in rows if r.profiled_ms <= 0),
                               statistics.median(ratios) if ratios else None,
                               statistics.median(raw) if raw else None, min(ratios, default=None),
                               max(ratios, default=None), sum(r.lut_ms for r in rows),
                               sum(r.network_ms for r in rows)))
    kinds.sort(key=lambda k: (-abs(k.delta_ms), k.kind))
    source = networks[0].source if networks else ""
    glue = OpProfile(source, 0, tuple(op for net in networks for op in net.unattributed)).by_type()
    net_by_type = {op.op_type: op for op in OpProfile(source, 0, tuple(
        op for net in networks for op in net.unattributed_net)).by_type()}
    return OpJoinReport(networks, kinds, list(glue), [net_by_type[op.op_type] for op in glue], note)


def format_op_join(report: OpJoinReport, samples: list | None = None) -> str:
    """The per-network tables and the per-kind summary `lutbuild verify --op-profile` prints;
    `samples`: the report's `NetworkSample`s (for each network's measured time)."""
    measured = {s.index: s.measured_ms for s in samples or []}
    lines = []
    for net in report.networks:
        whole = f", measured {measured[net.index]:.4f} ms" if net.index in measured else ""
        lines += ["", f"network {net.index} ({Path(net.model).name}): operators of {net.source} "
                      f"({net.statistic} of {net.runs} profiled runs) {net.profiled_ms:.4f} ms as profiled, "
                      f"LUT rows {net.lut_ms:.4f} ms{whole}; profiler cost taken out "
                      f"{1000 * net.profiler_ms_per_call:.1f} us per operator call"]
        width = min(44, max([len("layer"), *(len(r.layer) for r in net.layers)]))
        key_width = min(48, max([len("LUT key"), *(len(r.key) for r in net.layers)]))
        lines.append(f"  {'layer':<{width}}  {'LUT key':<{key_width}}  {'LUT ms':>8}  {'in-net ms':>9}  ratio  "
                     f"{'profiled':>8}")
        for r in net.layers:
            ratio = "fused" if r.profiled_ms <= 0 else "    -" if r.ratio is None else f"{r.ratio:5.2f}"
            lines.append(f"  {_cut(r.layer, width):<{width}}  {_cut(r.key, key_width):<{key_width}}  "
                         f"{r.lut_ms:8.4f}  {r.network_ms:9.4f}  {ratio}  {r.profiled_ms:8.4f}")
        if net.unattributed:
            lines.append("  not in any layer (in-net / profiled ms): " + ", ".join(
                f"{op.op_type} x{op.count} {net_op.ms:.4f} / {op.ms:.4f}"
                for op, net_op in zip(net.unattributed, net.unattributed_net)))
    lines += ["", f"per kind over {len(report.networks)} networks (in-network / LUT time; kernel times only, "
                  f"so an additive runtime reads a little under 1):",
              f"  {'kind':<24} {'layers':>6} {'fused':>5} {'median':>7} {'min':>6} {'max':>6} {'raw':>6} "
              f"{'LUT ms':>9} {'in-net ms':>9} {'diff ms':>8}"]
    for k in report.kinds:
        lines.append(f"  {_cut(k.kind, 24):<24} {k.layers:>6} {k.fused:>5} {_num(k.median_ratio):>7} "
                     f"{_num(k.min_ratio)} {_num(k.max_ratio)} {_num(k.median_raw_ratio)} {k.lut_ms:9.4f} "
                     f"{k.network_ms:9.4f} {k.delta_ms:+8.4f}")
    if report.unattributed:
        lines.append("  not in any layer (in-net / profiled ms): " + ", ".join(
            f"{op.op_type} x{op.count} {net_op.ms:.4f} / {op.ms:.4f}"
            for op, net_op in zip(report.unattributed, report.unattributed_net)))
    worst = report.kinds[:WORST_KINDS]
    if worst:
        lines.append("breaks additivity most (by ms of difference): " + ", ".join(
            f"{k.kind} ({k.delta_ms:+.4f} ms, median ratio {_num(k.median_ratio).strip()})" for k in worst))
    if report.note:
        lines.append(f"operator profiles: {report.note}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the join
def _chain(graph: ModelGraph, layer: MappedLayer, by_name: dict[str, Node], taken: set[int]) -> list[Node]:
    """The graph nodes `layer` covers: its first node, then for each further op type a consumer
    of the nodes so far with that type (every pattern of `graph_keys` is such a chain)."""
    first = by_name.get(layer.name)
    if first is None:
        return []
    nodes = [first]
    for op in layer.ops[1:]:
        nxt = next((c for n in reversed(nodes) for t in n.outputs for c in graph.consumers(t)
                    if c.op == op and id(c) not in taken and all(c is not m for m in nodes)), None)
        if nxt is None:
            break
        nodes.append(nxt)
    taken.update(id(n) for n in nodes)
    return nodes


def _owners(graph: ModelGraph, layers: list[MappedLayer]) -> dict[str, int]:
    """Node names and output tensor names -> the index of the layer that covers them."""
    by_name = {n.name: n for n in graph.nodes}
    owner: dict[str, int] = {}
    taken: set[int] = set()
    for i, layer in enumerate(layers):
        for node in _chain(graph, layer, by_name, taken):
            owner.setdefault(node.name, i)
            for t in node.outputs:
                owner.setdefault(t, i)
    return owner


def _owner_of(op: OpTiming, owner: dict[str, int]) -> int | None:
    """The layer a profiled operator belongs to (module docstring, step 2), or None."""
    name = op.name
    for candidate in (name, name.removesuffix("_nchwc")):
        if candidate in owner:
            return owner[candidate]
    m = _TFLITE_NODE.match(name)
    if m:
        node = f"{op.op_type}_{m.group('index')}"
        if node in owner:
            return owner[node]
        for tensor in (m.group("tensors"), *m.group("tensors").split(";")):
            if tensor in owner:
                return owner[tensor]
    return None


def _align(mapped: list[MappedLayer], ops: list[list[OpTiming]], space_layers: list, table: LatencyTable,
           cost: float) -> list[JoinedLayer]:
    """Pair the graph's layers with the prediction's LUT rows by key (module docstring, step 3)."""
    a = [layer.key.key for layer in mapped]
    b = [cfg.key for cfg in space_layers]
    rows: list[JoinedLayer] = []
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            for i, j in zip(range(i1, i2), range(j1, j2)):
                rows.append(_row([mapped[i]], [ops[i]], [space_layers[j]], table, cost))
        elif i2 > i1 or j2 > j1:
            rows.append(_row(mapped[i1:i2], ops[i1:i2], space_layers[j1:j2], table, cost))
    return rows


def _row(mapped: list[MappedLayer], ops: list[list[OpTiming]], cfgs: list, table: LatencyTable,
         cost: float) -> JoinedLayer:
    operators = tuple(op.name for group in ops for op in group)
    layer = "+".join(m.name for m in mapped) or "(not in the exported graph)"
    if cfgs:
        try:
            lut = sum(table.latency(cfg) for cfg in cfgs)
        except MissingLatencyError as exc:  # verify checked every key up front: a table changed under us
            raise ProfilerError(f"{layer}: no LUT row for {cfgs[0].key}: {exc}") from exc
        kind = "+".join(dict.fromkeys(layer_kind(c) for c in cfgs))
        key = "+".join(c.key for c in cfgs)
    else:
        lut, key = 0.0, "-"
        kind = "+".join(dict.fromkeys(layer_kind(m.key) for m in mapped)) + " (no LUT row)"
    profiled = sum(op.ms for group in ops for op in group)
    calls = sum(op.count for group in ops for op in group)
    return JoinedLayer(layer, kind, key, lut, profiled, max(0.0, profiled - cost * calls), calls, operators)


def _num(x: float | None) -> str:
    return "     -" if x is None else f"{x:6.2f}"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"
