"""The layering contract of docs/architecture.md, beyond what import-linter's contracts say.

`lint-imports` (run by `make test`) checks that layers point one way. These tests add the two
rules it cannot express: no module-level import cycle anywhere in our packages, and no import
hidden inside a function except for the heavy optional runtimes listed below.
"""
from __future__ import annotations

import ast
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("lut_db", "device_agents", "profiler", "search")

#: Imported inside functions on purpose: each is heavy to import (seconds, or hundreds of MB)
#: or optional at run time, and most commands never need it.
LAZY_OK = {
    "litert_torch",  # PyTorch -> TFLite converter: ~3 s to import, only when exporting TFLite
    "ai_edge_litert",  # LiteRT interpreter: only when running TFLite on this host
    "tflite_runtime",  # its predecessor, tried when LiteRT is absent (phones' Python runner)
    "onnxruntime",  # only when running ONNX on this host
    "absl",  # litert-torch's logger, silenced only around a TFLite conversion
    "matplotlib",  # plots only where a PNG is asked for
    "h5py",  # NYU Depth v2 files only
    "ai_edge_quantizer",  # INT8 TFLite quantizer, ~2 s to import: only for --quantize int8 exports
}


def _strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_module_import_cycle():
    graph = grimp.build_graph(*PACKAGES)
    edges = {m: {t for t in graph.find_modules_directly_imported_by(m) if t.split(".")[0] in PACKAGES}
             for m in graph.modules if m.split(".")[0] in PACKAGES}
    cycles = _strongly_connected(edges)
    assert not cycles, "module import cycles: " + "; ".join(" <-> ".join(sorted(c)) for c in cycles)


def _function_level_imports(path: Path):
    tree = ast.parse(path.read_text(), str(path))
    for func in ast.walk(tree):
        if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(func):
            if isinstance(node, ast.Import):
                yield node.lineno, [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                yield node.lineno, ["." * node.level + (node.module or "")]


def test_imports_inside_functions_only_for_heavy_optional_runtimes():
    offenders = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for line, names in _function_level_imports(path):
                for name in names:
                    if name.split(".")[0] not in LAZY_OK:
                        offenders.append(f"{path.relative_to(ROOT)}:{line}: {name}")
    assert not offenders, "imports inside functions (move them to the top):\n" + "\n".join(offenders)
