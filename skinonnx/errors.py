"""Typed domain errors.

Every error a user can cause (bad data, bad files, bad options, missing weights) is a
subclass of :class:`SkinOnnxError`, which is a ``click.ClickException``: the CLI prints its
one-line message and exits non-zero, with no traceback.
"""

from __future__ import annotations

import click


class SkinOnnxError(click.ClickException):
    """Base class: a problem the user can fix; printed as one line, exit code 1."""


class DataError(SkinOnnxError):
    """The data set layout, index file or class folders are not usable."""


class ImageError(SkinOnnxError):
    """One image file cannot be used (corrupt, unsupported, too large, too small...)."""

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class CheckpointError(SkinOnnxError):
    """A checkpoint file is missing, not ours, or unsafe to load."""


class WeightsUnavailableError(SkinOnnxError):
    """Pretrained weights cannot be found locally nor downloaded."""


class ModelFileError(SkinOnnxError):
    """An ONNX file is missing, corrupt or lacks what the command needs."""


class ProviderError(SkinOnnxError):
    """The requested ONNX Runtime execution provider is not usable here."""


class ExportError(SkinOnnxError):
    """Export produced an invalid graph."""


class QuantizationError(ExportError):
    """INT8 quantization could not run, or its result failed the accuracy gate (no file is written)."""


class ShapeError(ExportError):
    """ONNX and PyTorch outputs have different shapes."""


class AtolError(ExportError):
    """ONNX and PyTorch outputs differ by more than the tolerance."""


class OutputWriteError(SkinOnnxError):
    """A result file could not be written (permissions, disk full...)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler, ``kill``, a container stop) raised as an interruption: `train` saves and stops exactly
    as on Ctrl-C, then exits 143 (128 + 15), as a process killed by SIGTERM would."""


class RunInterrupted(SkinOnnxError):
    """Training stopped by Ctrl-C (SIGINT, exit code 130 like a shell) or SIGTERM (143), with the command that
    continues it."""

    def __init__(self, run_dir: object, epoch: int, epochs: int, resumable: bool, *,
                 checkpoint_dir: str | None = None, program: str = "skinonnx", terminated: bool = False) -> None:
        self.run_dir, self.epoch, self.epochs, self.resumable = run_dir, epoch, epochs, resumable
        self.checkpoint_dir, self.terminated = checkpoint_dir, terminated
        self.exit_code = 143 if terminated else 130
        super().__init__(self.text(program))

    def text(self, program: str) -> str:
        how = "terminated (SIGTERM)" if self.terminated else "interrupted"
        if not self.resumable:
            return f"{how} before the first epoch completed; nothing to resume (start the run again)"
        command = (f"{program} train --resume --checkpoint-dir {self.checkpoint_dir}" if self.checkpoint_dir
                   else f"{program} train --resume {self.run_dir}")
        return (f"{how} after epoch {self.epoch} of {self.epochs}; it is saved in {self.run_dir}. "
                f"Continue with: {command}")
