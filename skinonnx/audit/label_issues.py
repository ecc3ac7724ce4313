"""Likely label errors from a cross-validated run's out-of-fold probabilities, ranked by cleanlab.

``train --folds K`` writes ``runs/<name>/oof.csv``: every pooled (train + val) image with the probability of
the one fold model that never trained on it (more than two classes: every class's, cleanlab's multi-class
input). cleanlab's ``find_label_issues`` (confident learning: the per-class thresholds are the mean
self-confidence of that class) flags images whose given label the out-of-fold model contradicts, and
``get_label_quality_scores`` (self-confidence: the probability of the given label) ranks every image, worst
first. A human decides; nothing is relabelled.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import SkinOnnxError

OOF_FILE = "oof.csv"
CV_FILE = "cv.json"


class AuditError(SkinOnnxError):
    """The audit's inputs (a run's out-of-fold predictions) are missing or inconsistent."""


@dataclass(frozen=True)
class OutOfFold:
    run_dir: Path
    classes: tuple[str, ...]
    positive_index: int | None  # two classes: the positive one; None for more
    paths: list[str]  # as written in oof.csv: relative to the run's data root
    labels: np.ndarray  # class index per image
    probabilities: np.ndarray  # (n, classes), calibrated out-of-fold

    def suggested(self, index: int) -> int:
        """The class the out-of-fold model prefers to image ``index``'s given label (two classes: the other one)."""
        probs = self.probabilities[index].copy()
        probs[int(self.labels[index])] = -np.inf
        return int(np.argmax(probs))


#: how far a row of K probabilities may sum from 1 (oof.csv writes 6 decimals)
SUM_TOLERANCE = 1e-4


def read_out_of_fold(run_dir: Path) -> OutOfFold:
    """The pooled ``oof.csv`` of a complete cross-validation run, or an :class:`AuditError` saying what is wrong.

    Two classes: the ``probability`` column (the positive class's); more: every class's ``p_<class>`` column."""
    cv_path, oof_path = run_dir / CV_FILE, run_dir / OOF_FILE
    if not cv_path.is_file():
        raise AuditError(f"{run_dir}: not a cross-validation run (no {CV_FILE}); label issues need out-of-fold "
                         "probabilities: train with `train --folds 5` first")
    try:
        cv = json.loads(cv_path.read_text(encoding="utf-8"))
        classes = tuple(str(c) for c in cv["classes"])
        positive = int(cv["positive_index"]) if len(classes) == 2 else None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AuditError(f"{cv_path}: cannot read the run's record ({exc})") from None
    if not cv.get("complete") or not oof_path.is_file():
        raise AuditError(f"{run_dir}: the cross-validation run is not complete (no pooled {OOF_FILE}); finish its "
                         f"folds with `train --resume {run_dir}`")
    if len(classes) < 2 or (positive is not None and positive not in (0, 1)):
        raise AuditError(f"{cv_path}: expected two or more classes and a positive index, found {list(classes)}")
    paths, labels, probs = [], [], []
    try:
        with open(oof_path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [f"p_{c}" for c in classes if positive is None and f"p_{c}" not in (reader.fieldnames or [])]
            if missing:
                raise AuditError(f"{oof_path}: a run of {len(classes)} classes without the per-class probability "
                                 f"columns ({', '.join(missing)}); it was written by an older version: combine the "
                                 "folds again with this one (`train --resume` on the run)")
            for line_no, row in enumerate(reader, start=2):
                if row["label"] not in classes:
                    raise AuditError(f"{oof_path}:{line_no}: label '{row['label']}' is not one of {list(classes)}")
                probs.append(_row_probabilities(row, classes, positive, f"{oof_path}:{line_no}"))
                paths.append(row["path"])
                labels.append(classes.index(row["label"]))
    except (OSError, KeyError, ValueError, csv.Error) as exc:
        raise AuditError(f"{oof_path}: cannot read the out-of-fold predictions ({exc})") from None
    if len(set(labels)) < 2:
        raise AuditError(f"{oof_path}: needs images of at least two classes")
    return OutOfFold(run_dir, classes, positive, paths, np.array(labels), np.array(probs, np.float64))


def _row_probabilities(row: dict[str, str], classes: tuple[str, ...], positive: int | None, where: str
                       ) -> list[float]:
    """One image's probabilities in class order: two classes from ``probability``, more from ``p_<class>``."""
    if positive is not None:
        p = float(row["probability"])
        if not 0.0 <= p <= 1.0:
            raise AuditError(f"{where}: probability {p} is not in [0, 1]")
        return [1.0 - p, p] if positive == 1 else [p, 1.0 - p]
    values = [float(row[f"p_{c}"]) for c in classes]
    if not all(0.0 <= v <= 1.0 for v in values) or abs(sum(values) - 1.0) > SUM_TOLERANCE * len(values):
        raise AuditError(f"{where}: the class probabilities {values} are not a distribution (each in [0, 1], "
                         "summing to 1)")
    return values


@dataclass(frozen=True)
class LabelIssue:
    index: int  # into OutOfFold.paths
    quality: float  # cleanlab's label quality score (the probability of the given label); low = suspicious
    flagged: bool  # cleanlab's find_label_issues says the label is likely wrong


def rank_label_issues(labels: np.ndarray, probabilities: np.ndarray) -> list[LabelIssue]:
    """Every image, most suspicious first: cleanlab's flagged issues (in its ranking), then the rest by quality."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    quality = get_label_quality_scores(labels, probabilities, method="self_confidence")
    # n_jobs=1: cleanlab's default forks a multiprocessing.Pool from this process, whose ONNX Runtime / torch /
    # OpenMP threads may hold locks at the fork, and the child then waits forever (seen here: a test hung in
    # Pool.terminate). One process gives the same result (cleanlab: n_jobs "only affects runtimes").
    flagged_order = [int(i) for i in find_label_issues(labels, probabilities, n_jobs=1,
                                                        return_indices_ranked_by="self_confidence")]
    flagged = set(flagged_order)
    rest = sorted((i for i in range(len(labels)) if i not in flagged), key=lambda i: (quality[i], i))
    return ([LabelIssue(i, float(quality[i]), True) for i in flagged_order]
            + [LabelIssue(i, float(quality[i]), False) for i in rest])
