"""One trial of a study: `train`'s settings plus the drawn ones, trained by the same code as `train`
(:func:`~skinonnx.training.loop.fit`, or :func:`~skinonnx.training.cross_validation.train_cv` with ``--folds``).

Shared by both engines; the caller decides after each epoch whether the trial goes on (pruning)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..training.config import TrainConfig

#: What a best-settings file leaves out: where the trial ran and how it reported (train fills them in).
NOT_IN_CONFIG = ("name", "runs_dir", "checkpoint_dir", "progress", "track", "tracking_uri")
OBJECTIVE = "val_auc"  # the validation ROC AUC of the kept epoch; with --folds the out-of-fold AUC


@dataclass
class TrialOutcome:
    value: float | None  # None: stopped (pruned) before the end
    epochs: int  # epochs trained, over all folds
    run_dir: Path
    stopped: bool


def trial_name(number: int) -> str:
    return f"trial-{number:03d}"


def trial_config(base: TrainConfig, params: dict[str, Any], study_dir: Path, number: int | str, **overrides: Any
                 ) -> TrainConfig:
    name = trial_name(number) if isinstance(number, int) else f"trial-{number}"
    return dataclasses.replace(base, **params, name=name, runs_dir=str(study_dir), checkpoint_dir="",
                               progress=False, **overrides)


def best_so_far(report: Callable[[int, float], bool]) -> Callable[[int, float], bool]:
    """``report`` fed the best value so far instead of each epoch's (NaN until a finite one comes).

    Pruning compares a trial with others at the same epoch. The objective is the kept (best) epoch's AUC, so
    that is what is compared: one epoch's dip on a small validation set (148 images give an AUC a standard
    error of ~0.05) does not stop a trial whose best epoch is ahead of the others'.
    """
    best = float("nan")

    def reported(step: int, value: float) -> bool:
        nonlocal best
        if value == value and not best >= value:  # a NaN value leaves the best as it was
            best = value
        return report(step, best)

    return reported


def run_trial(cfg: TrainConfig, folds: int | None, report: Callable[[int, float], bool], *, log: Path,
              tracking_parent: Any = None) -> TrialOutcome:
    """Train one configuration, logging its lines to ``log``; ``report(step, best val AUC so far)`` after every
    epoch (of every fold: steps count on) returns True to stop it there."""
    epochs = 0
    report_best = best_so_far(report)

    def on_epoch(epoch: int, row: dict[str, float]) -> bool:
        nonlocal epochs
        epochs += 1
        return bool(report_best(epochs, float(row.get(OBJECTIVE, float("nan")))))

    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as handle:
        def echo(message: str) -> None:
            handle.write(f"{message}\n")
            handle.flush()

        if folds:
            from ..training.cross_validation import train_cv

            cv = train_cv(cfg, folds, echo=echo, tracking_parent=tracking_parent, on_epoch=(on_epoch,))
            value = None if cv.stopped or not cv.summary else float(cv.summary["roc_auc"])
            return TrialOutcome(value, epochs, cv.run_dir, cv.stopped)
        from ..training.loop import fit

        result = fit(cfg, echo=echo, tracking_parent=tracking_parent, on_epoch=(on_epoch,))
        if result.stopped:
            return TrialOutcome(None, epochs, result.run_dir, True)
        kept = next((row for row in result.history if int(row["epoch"]) == result.best_epoch), {})
        return TrialOutcome(float(kept.get(OBJECTIVE, float("nan"))), epochs, result.run_dir, False)


def best_settings(base: TrainConfig, params: dict[str, Any]) -> dict[str, Any]:
    """The settings `train --config FILE` reproduces the best trial with."""
    settings = {**base.to_dict(), **params}
    return {k: v for k, v in settings.items() if k not in NOT_IN_CONFIG}
