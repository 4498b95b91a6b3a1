"""Datasets for super-network training and candidate scoring (see `datasets.py`)."""
from .datasets import (SPLITS, DatasetInfo, augment_batch, default_holdout, get_dataset)
from .loader import SeededSampler, make_loader, start_epoch

__all__ = ["SPLITS", "DatasetInfo", "augment_batch", "default_holdout", "get_dataset", "SeededSampler",
           "make_loader", "start_epoch"]
