"""`test`: evaluate a split through ONNX Runtime only (no torch) and write its report folder (docs/REPORTS.md).

The jobs live beside it: :mod:`.model_run` (the model over a split), :mod:`.summary` (summary.json and the
library functions), :mod:`.report_files` (the files) and :mod:`.terminal` (the table).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ..data.images import DEFAULT_MAX_PIXELS
from ..data.layouts import discover
from ..deploy.runtime import OnnxClassifier
from ..errors import DataError
from .metrics import classification_report_text
from .model_run import EvalResult, predict_split
from .provenance import find_run_dir, read_history
from .report_files import write_report
from .summary import REFERENCE_THRESHOLD, build_summary, evaluate_predictions


def evaluate_split(classifier: OnnxClassifier, data_root: str | os.PathLike[str], *, split: str = "test",
                   threshold: float | None = None, batch_size: int = 16, out_dir: str | os.PathLike[str],
                   progress: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS, bootstrap: int = 1000,
                   ci_seed: int = 0, confidence: float = 0.95,
                   use_val: bool = True, run_dir: str | os.PathLike[str] | None = None, plots: bool = True,
                   model_card: bool = True, html: bool = True, echo: Callable[[str], None] = print) -> EvalResult:
    """Evaluate ``split`` and write the report folder ``out_dir`` (see docs/REPORTS.md).

    With ``use_val`` the validation split (where the threshold and temperature were chosen) is
    also run, for its calibration before/after and its figures at the operating point.
    """
    contract = classifier.contract
    data = discover(data_root, write_split_file=False)  # classes are compared with the model's just below
    for note in data.notes:
        echo(note)
    if set(data.classes) != set(contract.classes):
        raise DataError(f"the data's classes {list(data.classes)} differ from the model's {list(contract.classes)}")
    used = contract.threshold if threshold is None else threshold
    source = f"model metadata ({contract.threshold_policy})" if threshold is None else "--threshold"
    evaluated = predict_split(classifier, data, split, used, batch_size=batch_size, progress=progress,
                              max_pixels=max_pixels, with_cam=html)
    validation = None
    if use_val and split == "val":
        validation = evaluated
    elif use_val and data.splits.get("val"):
        validation = predict_split(classifier, data, "val", used, batch_size=batch_size, progress=progress,
                                   max_pixels=max_pixels)

    at_op = evaluate_predictions(evaluated.y_true, evaluated.y_prob, used, bootstrap=bootstrap, seed=ci_seed,
                                 confidence=confidence)
    at_ref = evaluate_predictions(evaluated.y_true, evaluated.y_prob, REFERENCE_THRESHOLD, bootstrap=bootstrap,
                                  seed=ci_seed, confidence=confidence)
    index = {name: i for i, name in enumerate(contract.classes)}
    report = classification_report_text([index[r["label"]] for r in evaluated.rows],
                                        [index[r["prediction"]] for r in evaluated.rows], list(contract.classes))
    found_run = find_run_dir(classifier.metadata, run_dir)
    history = read_history(found_run)
    result = EvalResult(at_op["metrics"], used, source, classifier.provider, Path(out_dir), evaluated.rows,
                        evaluated.skipped, report, evaluated=evaluated, validation=validation, history=history,
                        preprocessing=contract.preprocessing, max_pixels=max_pixels)
    result.summary = build_summary(classifier, data, evaluated, validation, at_op, at_ref, source,
                                   bootstrap=bootstrap, ci_seed=ci_seed, confidence=confidence, run_dir=found_run,
                                   history=history)
    write_report(result, plots=plots, model_card=model_card, html=html)
    return result
