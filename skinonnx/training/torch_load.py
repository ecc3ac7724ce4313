"""``torch.load`` for untrusted files: tensors and plain data only, one-line errors.

Shared by checkpoints and ``--weights PATH`` state dicts (a leaf: imports no other training module).
"""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError


def safe_torch_load(path: Path, what: str) -> Any:
    """``torch.load(weights_only=True)`` with one-line errors that never advise ``weights_only=False``.

    weights_only loading accepts tensors and plain containers only; a file that would import
    anything else (a class, ``os.system``...) is refused before any of it runs.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Detected pickle protocol 4..." notices
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = _GLOBAL.search(str(exc))
        if found:
            raise CheckpointError(f"{path}: refused: loading it would import {found.group(1)}, which is code, not "
                                  "data (files are loaded with weights_only=True: tensors and plain values only; "
                                  "a whole pickled model is not accepted)") from None
        raise CheckpointError(f"{path}: not {what} (unreadable or unsupported pickle data)") from None
    except Exception as exc:  # torch raises many types for non-torch files (EOFError, IndexError, RuntimeError...)
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise CheckpointError(f"{path}: not {what} ({type(exc).__name__}{': ' + detail if detail else ''})") from None


_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
