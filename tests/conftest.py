"""Shared test set-up: quiet the TFLite/absl loggers for every test process; the tiny space and
its synthetic-LUT latency metric for the MCD tests (a module may define its own)."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("GLOG_minloglevel", "3")

import pytest  # noqa: E402  (after the logger settings: they must precede any TFLite import)
from test_mcd_fixtures import DEVICE, synth_lut  # noqa: E402

from lut_db import LatencyTable  # noqa: E402
from search.mcd import LutLatencyMetric  # noqa: E402
from search.spaces import get_space  # noqa: E402


@pytest.fixture(scope="module")
def space():
    return get_space("mbv3-tiny")


@pytest.fixture(scope="module")
def latency(space, tmp_path_factory):
    """LUT latency (ms) of mbv3-tiny networks from a synthetic LUT (`test_mcd_fixtures.synth_lut`)."""
    path = synth_lut(tmp_path_factory.mktemp("lut") / "lut.sqlite")
    return LutLatencyMetric(space, LatencyTable.load(path, DEVICE, "tflite"))
