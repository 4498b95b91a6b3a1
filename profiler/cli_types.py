"""The numeric (and device) option types of both CLIs: every value checked where it is parsed.

A bad value is a click usage error, which `profiler.cli_runner` prints as one line naming
the option and exits with code 1, before any work. click's own `FloatRange` lets ``nan``
through (every comparison with nan is false) and ``inf`` whenever no maximum is set: the
float types here refuse both, so no ``Infinity`` reaches a JSON file and no NaN a network.

    COUNT            int >= 1 (epochs, batch sizes, steps, candidates, ...)
    NON_NEGATIVE     int >= 0 (workers, holdout sizes, seeds are plain ints)
    POSITIVE         finite float > 0 (learning rates, latency targets in ms, timeouts in s)
    FRACTION         finite float in (0, 1] (a share of the max network, a reduction)
    OPEN_FRACTION    finite float in (0, 1) (a decay factor)
    TORCH_DEVICE     'cpu', 'cuda', 'cuda:N', 'mps': parsed by torch and present on this host
"""
from __future__ import annotations

import math

import click
import torch


class FiniteFloat(click.FloatRange):
    """A `click.FloatRange` that also refuses nan and ±inf."""

    name = "finite float"

    def convert(self, value, param, ctx):
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number ({self._describe_range()})", param, ctx)
        return rv


class TorchDevice(click.ParamType):
    """A torch device string that torch parses and this host has (CUDA present, index in range)."""

    name = "device"

    def convert(self, value, param, ctx):
        if isinstance(value, torch.device):
            return str(value)
        try:
            dev = torch.device(value)
        except (RuntimeError, ValueError, TypeError):
            self.fail(f"{value!r} is not a torch device; expected cpu, cuda, cuda:N or mps", param, ctx)
        if dev.type == "cuda":
            if not torch.cuda.is_available():
                self.fail(f"{value!r}: CUDA is not available on this host (torch {torch.__version__}); use cpu",
                          param, ctx)
            count = torch.cuda.device_count()
            if dev.index is not None and dev.index >= count:
                self.fail(f"{value!r}: this host has {count} CUDA device(s) (cuda:0..cuda:{count - 1})", param, ctx)
        elif dev.type == "mps" and not torch.backends.mps.is_available():
            self.fail(f"{value!r}: MPS is not available on this host; use cpu", param, ctx)
        elif dev.type not in ("cpu", "cuda", "mps"):
            self.fail(f"{value!r}: unsupported device type {dev.type!r}; expected cpu, cuda, cuda:N or mps",
                      param, ctx)
        return value


COUNT = click.IntRange(min=1)
NON_NEGATIVE = click.IntRange(min=0)
POSITIVE = FiniteFloat(min=0.0, min_open=True)
FRACTION = FiniteFloat(min=0.0, max=1.0, min_open=True)
OPEN_FRACTION = FiniteFloat(min=0.0, max=1.0, min_open=True, max_open=True)
TORCH_DEVICE = TorchDevice()
