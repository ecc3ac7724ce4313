"""Command line: a click group with one module per pipeline stage.

Heavy imports (torch, onnxruntime) happen inside the commands that need them, so `test`, `predict`
and `info` import no torch and a deploy machine needs only onnxruntime, numpy and Pillow.
"""

from __future__ import annotations

import click

from .. import __version__
from ..cpus import passive_openmp_wait
from .audit_commands import audit
from .compare_commands import compare
from .deploy_commands import info, predict, test_cmd, web
from .explain_commands import explain
from .export_commands import export, parity, quantize
from .monitor_commands import monitor
from .serve_commands import serve
from .training_commands import demo, pretrain, synthetic, train
from .tuning_commands import tune


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="skinonnx")
def main() -> None:
    """Train a ResNet50 skin-lesion classifier (benign vs malignant), export it to ONNX, deploy it."""
    passive_openmp_wait()  # before any command imports torch: no OpenMP spin-waiting on a shared CPU


for _command in (train, pretrain, export, quantize, parity, test_cmd, compare, predict, info, explain, demo,
                 synthetic, web, serve, monitor, audit, tune):
    main.add_command(_command)

if __name__ == "__main__":  # pragma: no cover
    main()
