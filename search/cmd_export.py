"""`nas-search export`: the searched network as ONNX and TFLite files (checked against PyTorch)."""
from __future__ import annotations

from pathlib import Path

import click

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
def export(search_dir, onnx, tflite, supernet, untuned, task) -> None:
    """Export the fine-tuned searched network (classifier or depth map; NHWC image I/O in TFLite);
    each file is run once and compared with PyTorch."""
    export_searched(search_dir, onnx, tflite, supernet_path=supernet, allow_untuned=untuned, log=click.echo,
                    task=task)
