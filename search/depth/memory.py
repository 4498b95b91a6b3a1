"""Fail-fast estimate of the memory a depth super-network's training needs on CPU, before any work.

`fastdepth` trains at 224x224 px: one training step of the OD super-network keeps every
activation of the max network (conv, BatchNorm and activation outputs, the masked copies of
per-image OD) for the backward pass. At the former default of 128 images per step that
is ~16 GB, so `nas-search train --space fastdepth` was killed by the OOM killer on a laptop
after minutes of rendering data. `check_training_memory` estimates the peak from the space
alone (no network built, no data rendered) and refuses a batch that cannot fit, naming
`--batch-size` and the largest one that does.

The model (bytes; `A` = float32 bytes of the max network's layer outputs per image, summed
over `space.layer_configs(max_config)`: 45.6 MiB for `fastdepth`, 0.98 MiB for `fastdepth-tiny`):

    needed = data + FIXED_OVERHEAD_BYTES + ACTIVATION_FACTOR * A * batch

`data` is what the data set keeps resident (`data.resident_bytes`: builtin-depth renders
train + val up front). The two constants were fitted, conservatively, to the peak RSS of
one child process running two training steps (its peak RSS, ``VmHWM``, minus its peak before
the first step), measured on this project's 2-core Intel Xeon host
(`python benchmarks/bench_depth.py --memory`, results in
`benchmarks/results/bench_depth_memory.json`, docs/depth.md "Memory"):

    fastdepth       batch 2 / 4 / 8 / 16 / 32 / 64: +415 / 760 / 1466 / 2588 / 4480 / 8268 MiB
    fastdepth-tiny  batch 32 / 128:                 +166 / 534 MiB

(the larger of two runs where there were two: the same step varied by up to 12% between
runs), and to a whole `nas-search train --space fastdepth --epochs 1 --steps-per-epoch 10`
at batch 8 (rendering train + val, 10 steps, validation of the max and min networks): peak
2603 MiB, 2301 MiB above the 302 MiB the process holds when the check runs. The estimate,
`data + 700 MiB + 3.2 * A * batch`, is 2392 MiB for that run (+4%) and 20-27% above the one-step
points from batch 8 to 64: the check does not refuse a batch that fits, and refuses little more.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from search.errors import SearchError

from .data import resident_bytes

#: Peak bytes of a training step per byte of the max network's layer outputs (fitted, see above).
ACTIVATION_FACTOR = 3.2
#: Fixed cost of a training run beyond data and activations: optimizer state, autograd and allocator
#: buffers, rendering, validation (fitted to a whole `nas-search train` run, see above).
FIXED_OVERHEAD_BYTES = 700 * 2 ** 20
_GIB = 2 ** 30


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated peak memory of training one depth super-network process, in bytes."""

    space: str
    image_hw: tuple[int, int]
    batch_size: int
    activation_bytes_per_image: int  # float32 layer outputs of the max network, one image
    data_bytes: int  # resident data set (train + val)
    available_bytes: int | None  # what the OS can give (None: unknown on this platform)

    @property
    def step_bytes_per_image(self) -> float:
        return ACTIVATION_FACTOR * self.activation_bytes_per_image

    @property
    def needed_bytes(self) -> int:
        return int(self.data_bytes + FIXED_OVERHEAD_BYTES + self.step_bytes_per_image * self.batch_size)

    @property
    def fits(self) -> bool:
        return self.available_bytes is None or self.needed_bytes <= self.available_bytes

    def largest_batch(self) -> int:
        """The largest batch that fits in `available_bytes` (0: not even one image)."""
        if self.available_bytes is None:
            return self.batch_size
        room = self.available_bytes - self.data_bytes - FIXED_OVERHEAD_BYTES
        return max(0, math.floor(room / self.step_bytes_per_image))


def activation_bytes_per_image(space) -> int:
    """float32 bytes of every layer output of `space`'s max network for one image (from its LUT layer
    configs: no network is built)."""
    total = 0
    for cfg in space.layer_configs(space.max_config()):
        oh, ow = cfg.out_hw
        total += cfg.cout * oh * ow
    return 4 * total


def available_memory_bytes(proc: Path = Path("/proc"), cgroup: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Memory this process can still get (bytes): ``MemAvailable`` of /proc/meminfo, capped by a
    cgroup v2 limit (containers); None where neither can be read (e.g. macOS)."""
    available = None
    try:
        for line in (proc / "meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        available = None
    try:
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            room = int(limit) - int((cgroup / "memory.current").read_text().strip())
            available = room if available is None else min(available, room)
    except (OSError, ValueError):
        pass
    return available


def estimate_training_memory(space, batch_size: int, data_spec: str,
                             available_bytes: int | None = None) -> MemoryEstimate:
    """The estimate for training `space` at its input size with `batch_size` images per step."""
    hw = tuple(space.spec.input_hw)
    data = resident_bytes(data_spec, "train", hw) + resident_bytes(data_spec, "val", hw)
    return MemoryEstimate(space.name, hw, batch_size, activation_bytes_per_image(space), data, available_bytes)


def check_training_memory(space, batch_size: int, data_spec: str, default_batch: int,
                          available_bytes: int | None = None) -> MemoryEstimate:
    """SearchError (one line, naming ``--batch-size``) when training cannot fit in memory.

    `available_bytes` None: read from the OS (`available_memory_bytes`); unknown there: no check.
    """
    if available_bytes is None:
        available_bytes = available_memory_bytes()
    est = estimate_training_memory(space, batch_size, data_spec, available_bytes)
    if est.fits:
        return est
    largest = est.largest_batch()
    h, w = est.image_hw
    advice = (f"use --batch-size {largest} or less (the depth default is {default_batch})" if largest >= 1 else
              "not even --batch-size 1 fits: free memory, or train fastdepth-tiny (64x64)")
    raise SearchError(
        f"--batch-size {batch_size}: training {space.name} at {h}x{w} px needs an estimated "
        f"{est.needed_bytes / _GIB:.1f} GiB ({est.step_bytes_per_image / 2 ** 20:.0f} MiB of activations per image, "
        f"data {est.data_bytes / _GIB:.2f} GiB), {available_bytes / _GIB:.1f} GiB is available; {advice}")
