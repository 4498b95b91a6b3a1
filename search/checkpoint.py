"""Super-network checkpoints: self-describing, loadable with ``torch.load(weights_only=True)``.

A checkpoint is a dict of tensors and plain values:
``{"format", "space", "space_overrides", "space_spec", "dropout", "state_dict", "meta"}``.
`space_overrides` are the spec fields that differ from the registered space (e.g.
granularity); loading rebuilds the space from its name + overrides and checks it matches
`space_spec`. `meta` holds what training needs to resume (train config as a dict, epoch,
optimizer and scheduler state, RNG states) — plain values and tensors only.
Writes are atomic (temporary file + rename), so a crash never leaves a torn checkpoint.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from search.errors import SearchError
from search.spaces import SearchSpace, get_space
from search.spaces.registry import UnknownSpace
from search.supernet import build_supernet

FORMAT = "netadaptv2.supernet/1"


def _plain(value):
    """Spec values as plain, weights_only-safe values (tuples -> lists, recursively)."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def space_overrides(space: SearchSpace) -> dict:
    """Spec fields of `space` that differ from its registered spec."""
    registered = get_space(space.name).spec
    return {f.name: _plain(getattr(space.spec, f.name)) for f in dataclasses.fields(space.spec)
            if getattr(space.spec, f.name) != getattr(registered, f.name)}


def _spec_dict(space: SearchSpace) -> dict:
    return {f.name: _plain(getattr(space.spec, f.name)) for f in dataclasses.fields(space.spec)}


def save_supernet(path: str | os.PathLike, supernet, meta: dict | None = None) -> Path:
    """Write `supernet` (and `meta`: plain values/tensors) to `path` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = getattr(supernet, "module", supernet)  # unwrap DDP
    payload = {"format": FORMAT, "space": module.space.name, "space_overrides": space_overrides(module.space),
               "space_spec": _spec_dict(module.space), "dropout": float(module.dropout),
               "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()}, "meta": meta or {}}
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def _overrides_back(overrides: dict) -> dict:
    return {k: tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v
            for k, v in overrides.items()}


def load_supernet(path: str | os.PathLike, space: SearchSpace | None = None, map_location="cpu"):
    """(space, supernet, meta) from a checkpoint; SearchError if it is not one, or if `space`
    is given and the checkpoint was trained on another space or other overrides.

    The super-network class comes from the space (`search.supernet.build_supernet`): `SuperNet`
    for classification spaces, `DepthSuperNet` for depth spaces."""
    path = Path(path)
    if not path.is_file():
        raise SearchError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise SearchError(f"checkpoint {path}: not a readable super-network checkpoint "
                          f"({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise SearchError(f"checkpoint {path}: not a super-network checkpoint (expected format {FORMAT})")
    _check_payload(path, payload)
    try:
        loaded_space = get_space(payload["space"], **_overrides_back(payload["space_overrides"]))
    except (UnknownSpace, TypeError, ValueError) as exc:
        raise SearchError(f"checkpoint {path}: cannot rebuild its space {payload['space']!r} ({exc})") from None
    if _spec_dict(loaded_space) != payload["space_spec"]:
        raise SearchError(f"checkpoint {path}: space {payload['space']!r} changed since it was trained")
    if space is not None and _spec_dict(space) != payload["space_spec"]:
        theirs = payload["space_overrides"] or "no overrides"
        ours = space_overrides(space) if space.name == payload["space"] else "-"
        raise SearchError(f"checkpoint {path} is for space {payload['space']} ({theirs}), not {space.name} "
                          f"({ours or 'no overrides'})")
    supernet = build_supernet(loaded_space, dropout=payload.get("dropout", 0.0))
    try:
        supernet.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:  # missing/unexpected keys, wrong shapes
        first = next((line.strip() for line in str(exc).splitlines()[1:] if line.strip()), str(exc))
        raise SearchError(f"checkpoint {path}: field 'state_dict' does not fit a super-network of space "
                          f"{payload['space']!r} ({first[:200]})") from None
    return loaded_space, supernet, payload["meta"]


#: field -> (expected types, what to say); `dropout` may be absent (older checkpoints).
_FIELDS = {
    "space": (str, "a space name"),
    "space_overrides": (dict, "a dict of spec fields"),
    "space_spec": (dict, "a dict of spec fields"),
    "dropout": ((int, float), "a number"),
    "state_dict": (dict, "a dict of tensors"),
    "meta": (dict, "a dict"),
}


def _check_payload(path: Path, payload: dict) -> None:
    """Each field of a checkpoint against its expected type (a SearchError naming the first bad one)."""
    for name, (types, what) in _FIELDS.items():
        if name not in payload:
            if name == "dropout":
                continue
            raise SearchError(f"checkpoint {path}: field {name!r} is missing (expected {what})")
        value = payload[name]
        if not isinstance(value, types) or isinstance(value, bool):
            raise SearchError(f"checkpoint {path}: field {name!r} is {type(value).__name__}, expected {what}")
    if not all(isinstance(k, str) for k in payload["space_overrides"]):
        raise SearchError(f"checkpoint {path}: field 'space_overrides' has non-text keys")
    bad = next((k for k, v in payload["state_dict"].items() if not isinstance(k, str) or not torch.is_tensor(v)),
               None)
    if bad is not None:
        raise SearchError(f"checkpoint {path}: field 'state_dict' entry {bad!r} is not a named tensor")
