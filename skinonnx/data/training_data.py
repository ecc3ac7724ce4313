"""Which data a command reads when it needs the model's own data: ``--data`` if given, else the training data
recorded with the model (ONNX metadata ``training_data``, a checkpoint's ``data_root`` or a CV run's record).

The one place that decides it: export's parity images, fp16/ORT-format/INT8 checks, ``test``, ``quantize``,
``parity`` and ``explain`` all ask here, so the rule and its error message are the same everywhere.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataError


def model_data(given: str | os.PathLike[str] | None, recorded: str | os.PathLike[str] | None, *,
               needed_for: str = "this command") -> str:
    """``given`` when set, else ``recorded`` when that folder or file exists here; a clear error otherwise."""
    if given:
        return str(given)
    if recorded and Path(recorded).exists():
        return str(recorded)
    where = f" (it names {recorded}, which is not here)" if recorded else ""
    raise DataError(f"{needed_for} needs the model's data: pass --data DIR; the model records no training data "
                    f"that exists on this machine{where}")
