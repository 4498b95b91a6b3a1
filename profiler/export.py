"""LUT key or whole sub-network -> ONNX / TFLite model file, cached on disk.

One exported file per `LayerConfig` (named by `LayerConfig.digest`) under a folder that
names the exporter (runtime, I/O convention version, torch and converter versions), so a
new converter never reuses stale files. Files are written to a temporary name and renamed:
a killed export never leaves a truncated model in the cache.

I/O conventions (the same for a layer alone and for a whole network, so the LUT sum and the
measured network pay the same boundaries):
- TFLite: image tensors are NHWC at the model boundary (`litert_torch.to_channel_last_io`),
  which removes the NCHW<->NHWC transposes a layer alone would otherwise carry (0.395 ->
  0.311 ms on a 224x224 block). `add` has two image inputs; `linear` takes and returns an
  (N, C) vector; `gap` returns (N, C).
- ONNX: NCHW / NC, as PyTorch, with the TorchScript exporter (`dynamo=False`): ~0.07 s per
  small layer here, against ~100x more for the dynamo exporter (see docs/lut.md).
Weights are random (seed 0) and BatchNorm statistics randomized, so nothing folds away.

In-context ONNX rows (`ModelCache(..., context="nchwc")`, `--context nchwc`): a key's file is
the layer wrapped between layout-keeping neighbours (`context_models.wrap_layer`), and each
image tensor at its boundary has a *pair model* (`context_models.pair_module`) timed in the
same batch; both live under `<exporter>/context-nchwc-v<CONTEXT_FORMATS["nchwc"]>/`.
Weights-cold TFLite rows (`context="cold"`, `--context cold`): a key's file is N copies of the
layer with distinct weights (`cold_models.cold_module`), under `<exporter>/context-cold-v<n>/`.

INT8 (`ModelCache(..., dtype="int8")`, `--quantize int8`): each file is the float32 file of
the same key (taken from, or first written to, the float32 cache) quantized by
`quantize.py`, in its own cache folder whose name adds the dtype and the quantizer's version;
the layout at the boundary is the same (NHWC for TFLite), with int8 I/O for TFLite.

Exports run in worker processes (`ModelCache(jobs=2)`); workers send converter chatter
(litert-torch progress lines, absl/glog, warnings) to `<cache>/export-worker.log` instead
of the terminal. Never benchmark while a batch is exporting on the same cores.
"""
from __future__ import annotations

import concurrent.futures as futures
import functools
import importlib.metadata
import json
import logging
import multiprocessing
import os
import threading
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from collections.abc import Iterable, Sequence

import torch
from torch import nn

try:  # torch-private modules `install_cia_cache` patches; a torch without them gets no cache
    import torch.export.decomp_utils as decomp_utils
    import torch.export.exported_program as exported_program
    from torch._export import utils as export_utils
except ImportError:  # pragma: no cover
    decomp_utils = exported_program = export_utils = None

from lut_db.layer_key import LayerConfig, file_digest
from lut_db.op_kinds import IMAGE, OP_KINDS
from search.spaces import SubnetConfig, space_from_spec
from search.spaces.ops import build_layer

from .cold_models import Branches, cold_module
from .context_models import Tensor, boundary_tensors, graph_inputs, pair_module, two_inputs_module, wrap_layer
from .quantize import check_dtype, converter_versions, quantize_model
from .runtimes import ALONE, COLD, EXTENSIONS, NCHWC, RUNTIMES, check_runtime

__all__ = ["EXTENSIONS", "RUNTIMES", "ModelCache", "export_layer", "export_module", "export_network",
           "exporter_id", "layer_module", "network_module", "overhead_module", "quantize_file"]
#: Bump when the exported graphs change (I/O convention, opset, module code): new cache folder.
EXPORT_FORMAT = 1
ONNX_OPSET = 17
#: The per-invoke overhead model is a ReLU of one element (`overhead_module`): its own work is
#: a few ns, so its median is what any single-model invoke costs (runtime entry, delegate
#: dispatch, Python binding, output fetch). A 1x1x1 conv was ~1 us slower in ONNX Runtime
#: (its Conv kernel set-up), a ReLU is as cheap as an op gets in both runtimes.
OVERHEAD_NAME = "overhead-relu1"
#: Bump a context's entry when its models (`context_models.py`, `cold_models.py`) change: new cache sub-folder.
CONTEXT_FORMATS = {NCHWC: 1, COLD: 2}  # cold 2: the 24 MiB copy target

#: Environment of quiet converters: set before TensorFlow/LiteRT C++ code loads.
QUIET_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "GLOG_minloglevel": "3",
    "LITERT_TORCH_SHOW_PROGRESS": "n",
    "LITERT_TORCH_SILENCE_TORCH_LOGS": "y",
}


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "none"


def exporter_id(runtime: str, dtype: str = "float32") -> str:
    """Folder name of the exporter that produced a cached file (runtime + versions; for a
    dtype other than float32, the dtype and the quantizer's version too)."""
    check_runtime(runtime)
    converter = f"litert{_version('litert-torch')}" if runtime == "tflite" else f"opset{ONNX_OPSET}"
    base = f"{runtime}-f{EXPORT_FORMAT}-torch{_version('torch')}-{converter}"
    return base if check_dtype(dtype) == "float32" else f"{base}-{dtype}-{converter_versions(runtime)}"


# ----------------------------------------------------------------------------- converters
def quiet_converters() -> None:
    """Silence litert-torch progress lines, absl/glog and Python warnings in this process."""
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)
    warnings.filterwarnings("ignore")
    for name in ("absl", "torch", "torch._export", "torch.export", "litert_torch", "tensorflow", "jax"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from absl import logging as absl_logging  # why: optional, comes with litert-torch; heavy to load

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # pragma: no cover - absl comes with litert-torch
        pass


def install_cia_cache() -> bool:
    """Cache `torch._export.utils._collect_all_valid_cia_ops` (a guarded monkeypatch).

    Why: `torch.export` calls it several times per conversion and it walks every op of every
    `torch.ops` namespace each time (~25-30% of a small layer's TFLite conversion here),
    returning the same set. Torch does not cache it because a custom-op library can register
    new CompositeImplicitAutograd ops later; the cache key therefore is the list of op
    namespaces plus the number of CIA registrations in the C++ dispatcher, so any such
    registration recomputes it. Only the export workers install it; a test checks the
    exported model is byte-identical with and without it. Set NETADAPTV2_NO_CIA_CACHE=1 to
    disable. Returns whether the cache is active.
    """
    if os.environ.get("NETADAPTV2_NO_CIA_CACHE") == "1":
        return False
    if export_utils is None:  # pragma: no cover - a torch without these modules: leave it alone
        return False
    targets = [m for m in (exported_program, decomp_utils) if hasattr(m, "_collect_all_valid_cia_ops")]
    original = getattr(export_utils, "_collect_all_valid_cia_ops", None)
    if original is None or not targets:
        return False
    if all(getattr(m._collect_all_valid_cia_ops, "_netadaptv2_cached", False) for m in targets):
        return True
    registrations = torch._C._dispatch_get_registrations_for_dispatch_key
    cache: dict[tuple, frozenset] = {}

    @functools.wraps(original)
    def cached():
        guard = (tuple(torch.ops._dir), len(registrations("CompositeImplicitAutograd")))
        ops = cache.get(guard)
        if ops is None:
            ops = cache[guard] = frozenset(original())
        return set(ops)  # a fresh set, as the original returns

    cached._netadaptv2_cached = True
    for module in targets:
        module._collect_all_valid_cia_ops = cached
    return True


def randomize_batchnorm(module, seed: int = 0) -> None:
    """Non-trivial BN statistics (and affine terms) so exporters cannot simplify them away."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=generator) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=generator) * 0.1)


def layer_module(cfg: LayerConfig):
    """(module, example NCHW/NC inputs, indices of image inputs, whether the output is an image).

    Which inputs and output are images is the op kind's I/O convention (`lut_db.op_kinds`)."""
    torch.manual_seed(0)  # identical weights -> identical files for one key
    module, inputs = build_layer(cfg)
    kind = OP_KINDS[cfg.op]
    image_args = [i for i, role in enumerate(kind.inputs) if role == IMAGE]
    return module, inputs, image_args, kind.output == IMAGE


def overhead_module():
    """(module, inputs) of the overhead model: ReLU of a (1, 1, 1, 1) image, NHWC in TFLite."""
    return nn.ReLU(), (torch.zeros(1, 1, 1, 1),)


def network_module(space_spec, subnet: dict, seed: int = 0):
    """The whole network of `subnet` ({'widths', 'kernels'}) in eval mode + an NCHW sample."""
    space = space_from_spec(space_spec)
    torch.manual_seed(seed)
    model = space.build_subnet(SubnetConfig.from_dict(subnet)).eval()
    randomize_batchnorm(model, seed)
    h, w = space.spec.input_hw
    return model, (torch.randn(1, space.spec.in_channels, h, w),)


def export_module(module, inputs: Sequence, runtime: str, path: Path, image_args: Sequence[int] = (0,),
                  image_out: bool = True, outputs: int = 1) -> Path:
    """Write `module` to `path` (atomically: temporary file + rename) with the I/O convention above
    (`outputs`: how many tensors the module returns, all images or all vectors as `image_out`)."""
    check_runtime(runtime)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        with torch.no_grad():
            if runtime == "tflite":
                _export_tflite(module, inputs, tmp, list(image_args), list(range(outputs)) if image_out else [])
            else:
                _export_onnx(module, inputs, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _export_tflite(module, inputs, path: Path, image_args: list[int], image_outputs: list[int]) -> None:
    quiet_converters()
    import litert_torch  # why: optional converter (TFLite only), seconds to load; after quiet_converters

    sample = tuple(x.permute(0, 2, 3, 1).contiguous() if i in image_args else x for i, x in enumerate(inputs))
    if image_args or image_outputs:
        module = litert_torch.to_channel_last_io(module, args=image_args, outputs=image_outputs)
    litert_torch.convert(module.eval(), sample).export(str(path))


def _export_onnx(module, inputs, path: Path) -> None:
    names = [f"in{i}" for i in range(len(inputs))]
    torch.onnx.export(module.eval(), tuple(inputs), str(path), dynamo=False, opset_version=ONNX_OPSET,
                      input_names=names, output_names=["out"], do_constant_folding=True)


def export_layer(cfg: LayerConfig, runtime: str, path: Path) -> Path:
    """Export one LUT key alone (see the module docstring for the I/O convention)."""
    module, inputs, image_args, image_out = layer_module(cfg)
    return export_module(module, inputs, runtime, path, image_args, image_out)


def export_context_layer(cfg: LayerConfig, runtime: str, path: Path) -> Path:
    """Export one LUT key between layout-keeping neighbours (`context_models.wrap_layer`)."""
    module, inputs, image_args, image_out = layer_module(cfg)
    return export_module(wrap_layer(cfg, module), inputs, runtime, path, image_args, image_out)


def export_cold_layer(cfg: LayerConfig, runtime: str, path: Path) -> Path:
    """Export one LUT key as its weights-cold model, N copies (`cold_models.cold_module`)."""
    module, inputs, image_args, image_out = layer_module(cfg)
    cold, n = cold_module(cfg, module, inputs)
    return export_module(cold, inputs, runtime, path, image_args, image_out,
                         outputs=n if isinstance(cold, Branches) else 1)  # a chain returns its last copy's output


def export_input_layer(cfg: LayerConfig, runtime: str, path: Path) -> Path:
    """Export one LUT key fed by the graph's input, a neighbour on its output only
    (`context_models.wrap_layer(pre=False)`: the network boundary, `context_boundary.py`)."""
    module, inputs, image_args, image_out = layer_module(cfg)
    return export_module(wrap_layer(cfg, module, pre=False), inputs, runtime, path, image_args, image_out)


def export_pair(tensor: Tensor, runtime: str, path: Path) -> Path:
    """Export the pair model of an image tensor (`context_models.pair_module`)."""
    module, inputs = pair_module(tensor)
    return export_module(module, inputs, runtime, path)


def export_network(space_spec, subnet: dict, runtime: str, path: Path, seed: int = 0) -> Path:
    """Export a whole sub-network: image in (NHWC for TFLite); logits (N, classes) out, or an
    image out (NHWC for TFLite) for a dense-prediction network."""
    model, inputs = network_module(space_spec, subnet, seed)
    with torch.no_grad():
        image_out = model(*inputs).dim() == 4
    return export_module(model, inputs, runtime, path, image_args=(0,), image_out=image_out)


# ----------------------------------------------------------------------------- cache + workers
@dataclass(frozen=True)
class _Job:
    kind: str  # "layer", "context_layer", "cold_layer", "input_layer", "pair", "two_inputs", "network", "overhead"
    runtime: str
    path: str
    layer: LayerConfig | None = None
    space_spec: object = None
    subnet: dict | None = None
    float_path: str = ""  # int8 jobs: the float32 file quantized (exported first when missing)
    tensor: Tensor | None = None  # "pair" jobs: the tensor of the pair model


def _run_job(job: _Job) -> float:
    """Export one file in a worker; returns the CPU seconds it took."""
    start = time.process_time()
    target = Path(job.float_path or job.path)
    if job.float_path and target.exists():
        pass  # the float32 cache already has it
    elif job.kind == "layer":
        export_layer(job.layer, job.runtime, target)
    elif job.kind == "context_layer":
        export_context_layer(job.layer, job.runtime, target)
    elif job.kind == "cold_layer":
        export_cold_layer(job.layer, job.runtime, target)
    elif job.kind == "input_layer":
        export_input_layer(job.layer, job.runtime, target)
    elif job.kind == "pair":
        export_pair(job.tensor, job.runtime, target)
    elif job.kind == "overhead":
        module, inputs = overhead_module()
        export_module(module, inputs, job.runtime, target)
    elif job.kind == "two_inputs":
        module, inputs = two_inputs_module()
        export_module(module, inputs, job.runtime, target, image_args=(0, 1))
    else:
        export_network(job.space_spec, job.subnet, job.runtime, target)
    if job.float_path:
        quantize_file(job.runtime, target, Path(job.path))
    return time.process_time() - start


def quantize_file(runtime: str, float_path: Path, path: Path, calibration=None) -> Path:
    """`quantize.quantize_model` written atomically (temporary file + rename), as `export_module`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        quantize_model(runtime, float_path, tmp, calibration)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


#: How often an export worker checks that the build that started it is alive (s).
PARENT_POLL_S = 0.5


def _exit_with_parent(parent_pid: int, poll_s: float = PARENT_POLL_S) -> None:
    """End this worker process when `parent_pid` is gone (re-parented: `getppid()` changes).

    A `kill -9` of `lutbuild build` runs no clean-up, and an idle worker blocks forever reading
    its task pipe (it holds the write end itself, so it never sees EOF): without this it lived
    on with ~300 MB. A daemon thread polling the parent pid works on every POSIX system and
    whichever thread of the parent started the pool (Linux's PR_SET_PDEATHSIG follows the
    parent *thread*, and the pool is started by the export thread)."""
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _init_worker(log_path: str, cia_cache: bool, parent_pid: int | None = None) -> None:
    if parent_pid is not None:
        _exit_with_parent(parent_pid)
    for name, value in QUIET_ENV.items():
        os.environ[name] = value
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)  # converter C++ logging and prints go to the log, not the terminal
    os.dup2(fd, 2)
    os.close(fd)
    quiet_converters()
    if cia_cache:
        install_cia_cache()


def subnet_digest(space_spec, subnet: dict, seed: int = 0) -> str:
    """File-name-safe hash of (space table, sub-network, weight seed)."""
    text = json.dumps({"space": repr(space_spec), "subnet": subnet, "seed": seed}, sort_keys=True)
    return file_digest(text)


class ModelCache:
    """Exported models on disk: `<cache_dir>/<exporter_id>/<digest>.<ext>`, exported on demand.

    `jobs` worker processes (spawned once, reused across batches) do the exporting; the
    caller blocks until a batch is on disk, then benchmarks it with the workers idle.
    `context="nchwc"` (ONNX float32, `runtimes.check_context` checked it): a key's file is its
    in-context model, and `layers` also exports the pair models of its boundary tensors;
    `context="cold"` (TFLite float32): a key's file is its weights-cold model (N copies).
    """

    def __init__(self, cache_dir: str | Path, runtime: str, jobs: int = 2, cia_cache: bool = True,
                 dtype: str = "float32", context: str = ALONE):
        self.runtime = check_runtime(runtime)
        self.dtype = check_dtype(dtype)
        self.context = context
        self.root = Path(cache_dir).expanduser() / exporter_id(runtime, dtype)
        #: int8: the float32 cache its files are quantized from (None for float32)
        self.float_root = None if dtype == "float32" else Path(cache_dir).expanduser() / exporter_id(runtime)
        self.root.mkdir(parents=True, exist_ok=True)
        self.jobs = max(1, int(jobs))
        self.cia_cache = cia_cache
        self.exported = 0  # files this cache exported (not found on disk)
        self.export_cpu_s = 0.0  # CPU seconds the workers spent on them
        self._pool: futures.ProcessPoolExecutor | None = None

    def __enter__(self) -> ModelCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def layer_path(self, cfg: LayerConfig) -> Path:
        if self.context != ALONE:
            return self._context_root / "layers" / f"{cfg.digest}{EXTENSIONS[self.runtime]}"
        return self.root / "layers" / f"{cfg.digest}{EXTENSIONS[self.runtime]}"

    @property
    def _context_root(self) -> Path:
        return self.root / f"context-{self.context}-v{CONTEXT_FORMATS[self.context]}"

    def input_layers(self, cfgs: Iterable[LayerConfig]) -> list[Path]:
        """Paths of the keys' models with an output neighbour only (in-context caches; exported
        when missing): each as a network's first layer, fed by the graph's input."""
        cfgs = list(cfgs)
        paths = [self._context_root / "input-layers" / f"{c.digest}{EXTENSIONS[self.runtime]}" for c in cfgs]
        self._run([_Job("input_layer", self.runtime, str(p), layer=c) for c, p in zip(cfgs, paths) if not p.exists()])
        return paths

    def pair_path(self, tensor: Tensor) -> Path:
        """Path of the pair model of `tensor` (in-context caches only)."""
        return self._context_root / "pairs" / f"{tensor.name}{EXTENSIONS[self.runtime]}"

    def two_inputs_path(self) -> Path:
        """Path of the two-input overhead model (`context_models.TwoInputs`), which `layers`
        exports with the first batch holding a two-input layer."""
        return self._context_root / f"overhead-add2{EXTENSIONS[self.runtime]}"

    def network_path(self, space_spec, subnet: dict, seed: int = 0) -> Path:
        return self.root / "networks" / f"{subnet_digest(space_spec, subnet, seed)}{EXTENSIONS[self.runtime]}"

    def overhead(self) -> Path:
        """Path of the overhead model (exported on first use)."""
        path = self.root / f"{OVERHEAD_NAME}{EXTENSIONS[self.runtime]}"
        if not path.exists():
            self._run([self._job(_Job("overhead", self.runtime, str(path)))])
        return path

    def _job(self, job: _Job) -> _Job:
        """`job`, told where its float32 file is when this cache holds int8 files."""
        if self.float_root is None:
            return job
        return replace(job, float_path=str(self.float_root / Path(job.path).relative_to(self.root)))

    def layers(self, cfgs: Iterable[LayerConfig]) -> list[Path]:
        """Paths of the models of `cfgs` (same order), exporting the missing ones in parallel."""
        cfgs = list(cfgs)
        paths = [self.layer_path(c) for c in cfgs]
        kind = {ALONE: "layer", NCHWC: "context_layer", COLD: "cold_layer"}[self.context]
        jobs = {str(p): self._job(_Job(kind, self.runtime, str(p), layer=c))
                for c, p in zip(cfgs, paths) if not p.exists()}
        if self.context == NCHWC:  # each boundary tensor's pair model, once
            for t in sorted({t for c in cfgs for t in boundary_tensors(c)}):
                p = self.pair_path(t)
                if not p.exists():
                    jobs[str(p)] = _Job("pair", self.runtime, str(p), tensor=t)
            two = self.two_inputs_path()
            if any(graph_inputs(c) > 1 for c in cfgs) and not two.exists():
                jobs[str(two)] = _Job("two_inputs", self.runtime, str(two))
        self._run(list(jobs.values()))
        return paths

    def networks(self, space_spec, subnets: Sequence[dict], seed: int = 0) -> list[Path]:
        """Paths of whole-network models (same order), exporting the missing ones in parallel."""
        paths = [self.network_path(space_spec, s, seed) for s in subnets]
        jobs = {str(p): self._job(_Job("network", self.runtime, str(p), space_spec=space_spec, subnet=s))
                for s, p in zip(subnets, paths) if not p.exists()}
        self._run(list(jobs.values()))
        return paths

    def _run(self, jobs: list[_Job]) -> None:
        if not jobs:
            return
        if self._pool is None:
            context = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads
            self._pool = futures.ProcessPoolExecutor(
                self.jobs, mp_context=context, initializer=_init_worker,
                initargs=(str(self.root / "export-worker.log"), self.cia_cache, os.getpid()))
        for seconds in self._pool.map(_run_job, jobs):
            self.exported += 1
            self.export_cpu_s += seconds
