"""The LUT layer file of every line of a model's breakdown: what the same-batch figures time.

`lutbuild predict` sums one LUT row per line of a model's breakdown; each row was timed on one
file: ours (a search-space kind) in the model cache, a generic key's one-operator model where
`predict --measure-missing` exported it, and in the weights-cold context the key's file of N
copies (`cold_models.py`). Timing these files beside the whole model (`same_batch.py`) is how
`lutbuild calibrate` learns the composition factor (`composition.py`) and how the benchmarks
take the host's state out of an error. Files missing from the cache are exported here.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lut_db.layer_key import GenericKey, LayerConfig

from .cold_models import copies as copies_of
from .export import ModelCache
from .generic_ops import export_generic
from .runtimes import COLD


def layer_files(keys: Sequence[LayerConfig | GenericKey], runtime: str, cache: ModelCache) -> list[Path]:
    """The hot (alone-context) file of every key, in order, repeats kept: ours from `cache`
    (exported in parallel when missing), generic keys' one-operator models (exported when missing)."""
    ours = iter(cache.layers([k for k in keys if not isinstance(k, GenericKey)]))
    files = []
    for key in keys:
        if isinstance(key, GenericKey):
            path = cache.layer_path(key)
            if not path.exists():
                export_generic(key, runtime, path)
            files.append(path)
        else:
            files.append(next(ours))
    return files


def cold_layer_files(keys: Sequence[LayerConfig | GenericKey], runtime: str, cache_dir: Path,
                     hot: Sequence[Path]) -> tuple[list[Path], list[int]]:
    """The weights-cold file of every key and the copies it holds; `hot[i]` (its hot file) where
    the key has no copies (generic keys, small weights), as its cold row was timed."""
    copies = [copies_of(k) for k in keys]
    with ModelCache(cache_dir, runtime, jobs=1, context=COLD) as cold:
        ours = [k for k, n in zip(keys, copies) if n > 1]
        found = dict(zip(ours, cold.layers(ours)))
    return [found.get(k, h) for k, h in zip(keys, hot)], copies
