"""Image classification (MobileNetV3 spaces): the task and its fine-tuning loop.

Mirrors `search/depth/`: `task.py` (`ClassificationTask`: data, loss, top-1, report cells)
and `train.py` (the SGD fine-tune of one standalone network, over `search.optim`). The
data sets (`search/data/`) and top-1 / BN recalibration (`search/evaluate.py`) stay where
they are: MCD's scorer and the super-network benchmarks use them too.
"""
