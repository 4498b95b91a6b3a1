"""Dense depth estimation (FastDepth space): network, super-network, loss, metrics, data, task.

Torch is imported by the modules here; the space description itself stays torch-free in
`search/spaces/fastdepth.py`.
"""
