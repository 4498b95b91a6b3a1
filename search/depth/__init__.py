"""Dense depth estimation (FastDepth spaces): the task, its loss, metrics, data and training loops.

Mirrors `search/classification/`. The space description stays torch-free in
`search/spaces/fastdepth.py`, the standalone network is `search/spaces/fastdepth_net.py`
and the OD super-network `search/supernet/fastdepth.py`.
"""
