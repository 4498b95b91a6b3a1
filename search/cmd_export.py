"""`nas-search export`: the searched network as ONNX and TFLite files (checked against PyTorch)."""
from __future__ import annotations

from pathlib import Path

import click

from profiler.quantize import DTYPES
from search.export_searched import export_searched
from search.tasks import TASK_NAMES


@click.command()
@click.option("--search", "search_dir", type=click.Path(path_type=Path), required=True,
              help="Output folder of `nas-search search` (after `nas-search finetune`).")
@click.option("--onnx", type=click.Path(path_type=Path), default=None, help="ONNX file to write.")
@click.option("--tflite", type=click.Path(path_type=Path), default=None, help="TFLite file to write.")
@click.option("--supernet", type=click.Path(path_type=Path), default=None,
              help="Super-network checkpoint [the one the search used].")
@click.option("--untuned", is_flag=True, help="Export super-network weights when there is no finetuned.pt.")
@click.option("--task", type=click.Choice(TASK_NAMES), default=None,
              help="Fail unless the searched space is of this task [the space's].")
@click.option("--quantize", type=click.Choice(DTYPES), default="float32", show_default=True,
              help="int8: full-integer TFLite (int8 I/O) / static QDQ ONNX, calibrated on training images; "
                   "classification files are scored (val top-1) against the float32 network")
@click.option("--data", default=None, help="--quantize int8: calibration and val data [the super-network's].")
@click.option("--val-limit", type=click.IntRange(min=1), default=None,
              help="--quantize int8: score top-1 on the first N val images [all].")
def export(search_dir, onnx, tflite, supernet, untuned, task, quantize, data, val_limit) -> None:
    """Export the fine-tuned searched network (classifier or depth map; NHWC image I/O in TFLite);
    each file is run once and compared with PyTorch (int8: top-1 against the float32 network)."""
    export_searched(search_dir, onnx, tflite, supernet_path=supernet, allow_untuned=untuned, log=click.echo,
                    task=task, quantize=quantize, data=data, val_limit=val_limit)
