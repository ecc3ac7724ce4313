"""The Optuna study's bookkeeping with a stand-in for training (no network is trained): a crashed trial is
recorded with its error and the study goes on, pruning stops trials early, a study resumes to its count, and
another study under the same name is refused."""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path

import pytest

pytest.importorskip("optuna")

from skinonnx.errors import SkinOnnxError
from skinonnx.training.config import TrainConfig
from skinonnx.tuning import study as study_module
from skinonnx.tuning.space import parse_space
from skinonnx.tuning.study import StudyError, StudySettings, pruning_starts, run_study
from skinonnx.tuning.trial import TrialOutcome, best_so_far

EPOCHS = 4


def fake_trial(cfg: TrainConfig, folds, report, *, log: Path, tracking_parent=None) -> TrialOutcome:
    """val AUC peaks at lr = 3e-4 and grows by epoch; lr above 2e-3 'diverges' like a NaN loss."""
    if cfg.lr > 2e-3:
        raise SkinOnnxError("training diverged (loss is not finite); lower --lr")
    quality = max(0.0, 1 - abs(math.log10(cfg.lr / 3e-4)) / 2)
    for epoch in range(1, cfg.epochs + 1):
        if report(epoch, 0.5 + 0.4 * quality * epoch / cfg.epochs):
            return TrialOutcome(None, epoch, cfg.run_dir, True)
    return TrialOutcome(0.5 + 0.4 * quality, cfg.epochs, cfg.run_dir, False)


@pytest.fixture
def base(tmp_path: Path, synthetic_data: Path, monkeypatch: pytest.MonkeyPatch) -> TrainConfig:
    monkeypatch.setattr(study_module, "run_trial", fake_trial)
    return TrainConfig(data=str(synthetic_data), epochs=EPOCHS, name="s", runs_dir=str(tmp_path / "runs"),
                       image_size=32)


def _rows(base: TrainConfig) -> list[dict[str, str]]:
    with open(base.run_dir / "trials.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_crashes_are_recorded_pruning_stops_trials_and_a_study_resumes_to_its_count(base: TrainConfig) -> None:
    space = parse_space({"lr": {"low": 1e-5, "high": 1e-2, "log": True}}, "test")
    lines: list[str] = []
    result = run_study(base, StudySettings(10, space, pruner="median"), echo=lines.append)
    rows = _rows(base)
    assert len(rows) == 10 and result.counts.get("complete", 0) >= 2
    failed = [r for r in rows if r["state"] == "fail"]
    assert failed and all(float(r["param_lr"]) > 2e-3 and "training diverged" in r["error"] for r in failed)
    assert any("failed: training diverged" in line for line in lines)
    pruned = [r for r in rows if r["state"] == "pruned"]
    assert pruned and all(pruning_starts(EPOCHS) <= int(r["epochs"]) < EPOCHS for r in pruned)
    assert pruning_starts(EPOCHS) == 2 and any("median pruning (from epoch 2)" in line for line in lines)
    assert float(rows[0]["param_lr"]) == 3e-4 and result.best_value == pytest.approx(0.9)  # trial 0: the defaults
    progress = [line for line in lines if line.startswith("trial ")]
    assert len(progress) == 10 and progress[-1].startswith("trial 10/10 ") and progress[-1].endswith("| done")

    more: list[str] = []
    run_study(base, StudySettings(13, space, pruner="median"), echo=more.append)  # 3 more, none repeated
    assert "resuming study" in more[0] and len(_rows(base)) == 13
    assert [line.split()[1] for line in more if line.startswith("trial ")] == ["11/13", "12/13", "13/13"]
    again: list[str] = []
    run_study(base, StudySettings(13, space, pruner="median"), echo=again.append)
    assert not [line for line in again if line.startswith("trial ")] and len(_rows(base)) == 13


@pytest.mark.parametrize("pruner", ["median", "halving"])
def test_no_trial_is_judged_on_its_first_epochs(base: TrainConfig, pruner: str) -> None:
    """A third of the epochs first: 9 epochs, no trial stopped before its 3rd (isic2017's study pruned 8 of 10 trials
    on their first epoch's noise)."""
    base = dataclasses.replace(base, epochs=9)
    space = parse_space({"lr": {"low": 1e-5, "high": 2e-3, "log": True}}, "test")
    run_study(base, StudySettings(8, space, pruner=pruner), echo=lambda line: None)
    pruned = [int(r["epochs"]) for r in _rows(base) if r["state"] == "pruned"]
    assert pruned and min(pruned) == 3, _rows(base)


def test_pruning_sees_the_best_epoch_so_far_not_the_last() -> None:
    seen: list[tuple[int, float]] = []
    report = best_so_far(lambda step, value: seen.append((step, value)) or False)
    for step, value in enumerate([float("nan"), 0.61, 0.55, float("nan"), 0.70, 0.64], 1):
        report(step, value)
    assert seen[0][0] == 1 and math.isnan(seen[0][1])
    assert seen[1:] == [(2, 0.61), (3, 0.61), (4, 0.61), (5, 0.70), (6, 0.70)]


def test_another_study_under_the_same_name_is_refused(base: TrainConfig) -> None:
    space = parse_space({"lr": {"low": 1e-5, "high": 1e-2, "log": True}}, "test")
    run_study(base, StudySettings(2, space, pruner="none"), echo=lambda _m: None)
    other = parse_space({"lr": {"low": 1e-4, "high": 1e-2, "log": True}}, "test")
    with pytest.raises(StudyError, match="holds a study with other settings: space"):
        run_study(base, StudySettings(3, other, pruner="none"), echo=lambda _m: None)
    import dataclasses

    with pytest.raises(StudyError, match="holds a study with other settings: lr"):
        run_study(dataclasses.replace(base, lr=0.01), StudySettings(3, space, pruner="none"), echo=lambda _m: None)


def test_ctrl_c_stops_the_study_and_the_interrupted_trial_runs_again(base: TrainConfig,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from skinonnx.errors import RunInterrupted
    from skinonnx.tuning.study import StudyInterrupted

    space = parse_space({"lr": {"low": 1e-5, "high": 1e-3, "log": True}}, "test")
    calls: list[float] = []

    def interrupted_third(cfg: TrainConfig, folds, report, **kwargs) -> TrialOutcome:
        calls.append(cfg.lr)
        if len(calls) == 3:  # what fit raises on Ctrl-C
            raise RunInterrupted(cfg.run_dir, 1, cfg.epochs, True)
        return fake_trial(cfg, folds, report, **kwargs)

    monkeypatch.setattr(study_module, "run_trial", interrupted_third)
    with pytest.raises(StudyInterrupted, match="2 of 5 trials done") as caught:
        run_study(base, StudySettings(5, space, pruner="none"), echo=lambda _m: None)
    assert caught.value.exit_code == 130
    lines: list[str] = []
    run_study(base, StudySettings(5, space, pruner="none"), echo=lines.append)
    assert "trial 2 was interrupted: it runs again" in lines
    assert calls[3] == calls[2] and len(calls) == 6  # the interrupted settings first, then two new trials
    rows = _rows(base)
    assert [r["state"] for r in rows] == ["complete", "complete", "interrupted", "complete", "complete", "complete"]
