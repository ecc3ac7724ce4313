"""`tune` on Optuna: a TPE study stored in SQLite in the study's folder (kill it, run it again: it goes on),
pruned per epoch on validation AUC; one progress line per trial; the outputs of :mod:`~skinonnx.tuning.outputs`.

A study folder ``runs/<name>/`` holds study.db (Optuna), study.json (what the study is), trial-NNN/ (one run folder
per trial), logs/, trials.csv, best_config.json, importance.png and, with --track, tracking.json."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import write_json
from ..errors import RunInterrupted, SkinOnnxError
from ..training.config import TrainConfig
from ..training.cv_record import core_settings
from ..training.epoch_report import format_duration
from .outputs import StudyResult, counted
from .space import SearchSpace
from .trial import run_trial, trial_config, trial_name

STUDY_DB = "study.db"
STUDY_FILE = "study.json"
PRUNERS = ("median", "halving", "none")


class StudyError(SkinOnnxError):
    """A study folder holds another study, or the study cannot run."""


class StudyInterrupted(SkinOnnxError):
    """Ctrl-C (SIGINT): exit code 130, like a shell; the same command goes on."""

    exit_code = 130


@dataclass
class StudySettings:
    trials: int
    space: SearchSpace
    folds: int | None = None
    pruner: str = "median"
    engine: str = "optuna"

    def trial_steps(self, base: TrainConfig) -> int:
        """The epochs one trial trains in all (x folds with --folds): what pruning counts steps in."""
        return base.epochs * (self.folds or 1)


def _import_optuna():
    try:
        import optuna
    except ImportError:
        raise StudyError("tune needs Optuna: pip install 'skinonnx[tune]' (or pip install optuna)") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def study_record(base: TrainConfig, settings: StudySettings) -> dict[str, Any]:
    return {"settings": core_settings(base.to_dict()), "space": settings.space.to_dict(), "folds": settings.folds,
            "pruner": settings.pruner, "engine": settings.engine, "data": str(Path(base.data).resolve())}


def claim_study_dir(base: TrainConfig, settings: StudySettings, echo: Callable[[str], None]) -> Path:
    """The study's folder: new, or the same study again (resumed); another study under that name is refused."""
    study_dir = base.run_dir
    record = study_record(base, settings)
    path = study_dir / STUDY_FILE
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        keys = sorted(k for k in ("data", "space", "folds", "pruner", "engine") if saved.get(k) != record[k])
        keys += sorted(k for k in set(saved["settings"]) | set(record["settings"])
                       if saved["settings"].get(k) != record["settings"].get(k))
        if keys:
            shown = ", ".join(f"{k} (study: {saved.get(k, saved['settings'].get(k))!r}, given: "
                              f"{record.get(k, record['settings'].get(k))!r})" for k in keys[:4])
            raise StudyError(f"{study_dir} holds a study with other settings: {shown}; run it with the same ones to "
                             "go on, or choose another --name")
        echo(f"resuming study {study_dir}")
    elif study_dir.exists() and any(study_dir.iterdir()):
        raise StudyError(f"{study_dir} exists and is not a study; choose another --name")
    else:
        study_dir.mkdir(parents=True, exist_ok=True)
        write_json(path, record)
    return study_dir


def pruning_starts(steps: int) -> int:
    """The first epoch (step) at which a trial may be stopped: once a third of its epochs are done.

    Judged after one epoch, a small validation set's AUC is noise: a study on isic2017 (148 validation
    images) pruned 8 of 10 trials at epoch 1 on values of 0.31-0.59 while the defaults' first epoch gave
    0.60 and their best 0.73 (docs/TUNING.md). Both engines' pruners start here.
    """
    return max(1, math.ceil(steps / 3))


def _from_epoch(settings: StudySettings, base: TrainConfig) -> str:
    if settings.pruner == "none":
        return ""
    return f" (from epoch {pruning_starts(settings.trial_steps(base))})"


def make_pruner(optuna, kind: str, steps: int):
    """``steps``: the epochs a trial trains in all (x folds with --folds)."""
    if kind == "median":  # below the median of earlier trials at the same epoch, once two trials finished
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=pruning_starts(steps))
    if kind == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=pruning_starts(steps), reduction_factor=3)
    return optuna.pruners.NopPruner()


def open_study(study_dir: Path, base: TrainConfig, settings: StudySettings, seed_offset: int = 0):
    optuna = _import_optuna()
    sampler = optuna.samplers.TPESampler(seed=base.seed + seed_offset,
                                         n_startup_trials=max(2, min(10, settings.trials // 3)))
    return optuna.create_study(study_name=study_dir.name, storage=f"sqlite:///{(study_dir / STUDY_DB).resolve()}",
                               load_if_exists=True, direction="maximize", sampler=sampler,
                               pruner=make_pruner(optuna, settings.pruner, settings.trial_steps(base)))


def _recover(study, echo: Callable[[str], None]) -> None:
    """Trials a killed study left RUNNING (or stopped by Ctrl-C) are marked failed and run again with the
    same settings; finished, pruned and crashed trials are never repeated."""
    optuna = _import_optuna()
    state = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    rerun = {t.user_attrs.get("rerun_of") for t in trials}
    for trial in trials:
        if trial.number in rerun:
            continue
        if trial.state == state.RUNNING:  # killed with it (SIGKILL, SIGTERM, a crash of the machine)
            study._storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
            study._storage.set_trial_state_values(trial._trial_id, state=state.FAIL)
        elif not (trial.state == state.FAIL and trial.user_attrs.get("interrupted")):  # Ctrl-C marks it itself
            continue
        study.enqueue_trial(trial.params, user_attrs={"rerun_of": trial.number})
        echo(f"trial {trial.number} was interrupted: it runs again")


def progress_line(trial, study, total: int, done: int, seconds: list[float]) -> str:
    """One line per finished, pruned or failed trial: value, best so far, ETA."""
    state = trial.state.name.lower()
    value = trial.value if trial.value is not None else trial.user_attrs.get("last_value")
    epochs = trial.user_attrs.get("epochs", "?")
    shown = f"val AUC {value:.4f}" if isinstance(value, float) else "no value"
    if state == "fail":
        shown = f"failed: {trial.user_attrs.get('error', 'see its log')}"
    elif state == "pruned":
        shown = f"pruned at epoch {epochs} ({shown})"
    try:
        best = f"best {study.best_value:.4f} (trial {study.best_trial.number})"
    except ValueError:
        best = "best -"
    left = max(0, total - done)
    pace = sum(seconds) / len(seconds) if seconds else 0.0
    eta = f"ETA {format_duration(pace * left)} ({left} trials left)" if left else "done"
    params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
    return f"trial {done}/{total} #{trial.number} {shown} [{epochs} epochs, {seconds[-1] if seconds else 0:.0f} s] " \
           f"{params} | {best} | {eta}"


def run_study(base: TrainConfig, settings: StudySettings, *, echo: Callable[[str], None] = print) -> StudyResult:
    """Run (or continue) the study until ``settings.trials`` trials are finished, pruned or failed."""
    from .outputs import write_outputs

    optuna = _import_optuna()
    study_dir = claim_study_dir(base, settings, echo)
    probe = open_study(study_dir, base, settings)
    _recover(probe, echo)
    done = sum(counted(probe).values())
    study = open_study(study_dir, base, settings, seed_offset=len(probe.trials))  # a resumed study draws anew
    if not probe.trials:  # trial 0 trains `train`'s own settings: the study is measured against them
        study.enqueue_trial(settings.space.defaults(base))
    tracker, uri = _study_tracker(base, study_dir, settings, echo)
    left = settings.trials - done
    echo(f"study {study_dir}: {settings.trials} trials ({done} done), objective "
         f"{'OOF AUC over ' + str(settings.folds) + ' folds' if settings.folds else 'validation AUC'}, TPE sampler, "
         f"{settings.pruner} pruning{_from_epoch(settings, base)}; searching "
         f"{'; '.join(d.describe() for d in settings.space.dimensions)}")
    seconds: list[float] = []
    finished = [done]

    def objective(trial) -> float:
        params = settings.space.suggest(trial)
        cfg = trial_config(base, params, study_dir, trial.number, **({"tracking_uri": uri} if uri else {}))
        trial.set_user_attr("run_dir", str(cfg.run_dir))

        def report(step: int, value: float) -> bool:
            trial.report(value, step)
            trial.set_user_attr("epochs", step)
            trial.set_user_attr("last_value", value)
            return trial.should_prune()

        start = time.perf_counter()
        try:
            outcome = run_trial(cfg, settings.folds, report, log=study_dir / "logs" / f"{trial_name(trial.number)}.log",
                                tracking_parent=tracker)
        except (KeyboardInterrupt, RunInterrupted):  # fit turns Ctrl-C into RunInterrupted: the study stops too
            trial.set_user_attr("interrupted", True)
            raise KeyboardInterrupt from None  # not an Exception: Optuna's catch= must not swallow it
        except Exception as exc:  # a crashed trial (NaN loss, out of memory...) is recorded and the study goes on
            trial.set_user_attr("error", (getattr(exc, "message", None) or str(exc) or type(exc).__name__)[:300])
            raise
        finally:
            trial.set_user_attr("seconds", time.perf_counter() - start)
        if outcome.stopped:
            raise optuna.TrialPruned()
        if outcome.value is None or outcome.value != outcome.value:
            trial.set_user_attr("error", "no validation AUC")
            raise StudyError(f"trial {trial.number}: no validation AUC")
        return outcome.value

    def on_trial(study_, trial) -> None:
        if trial.user_attrs.get("interrupted"):
            return
        finished[0] += 1
        seconds.append(float(trial.user_attrs.get("seconds", 0.0)))
        echo(progress_line(trial, study_, settings.trials, finished[0], seconds))

    status = "FINISHED"
    try:
        if left > 0:
            study.optimize(objective, n_trials=left, catch=(Exception,), callbacks=[on_trial],
                           gc_after_trial=True)
    except KeyboardInterrupt:
        status = "KILLED"
        raise StudyInterrupted(f"interrupted; {sum(counted(study).values())} of {settings.trials} trials done, the "
                               f"one running will run again. Go on with the same command (study {study_dir})"
                               ) from None
    finally:
        result = write_outputs(study, base, settings, study_dir, echo)
        if tracker is not None:
            if result.best_value is not None:
                tracker.log_metrics({"best_val_auc": result.best_value})
            tracker.log_files(result.files)
            tracker.finish(status)
    return result


def _study_tracker(base: TrainConfig, study_dir: Path, settings: StudySettings, echo):
    """With --track: the study's MLflow run (each trial a child run), resumed with the study."""
    if not base.tracked:
        return None, None
    from ..tracking.run_record import open_training_run
    from ..tracking.store import resolve_uri, ui_command

    uri = resolve_uri(base.tracking_uri, base.runs_dir)
    params = {**{f"space.{k}": json.dumps(v) for k, v in settings.space.to_dict().items()},
              "trials": settings.trials, "folds": settings.folds, "pruner": settings.pruner,
              "engine": settings.engine,
              **{k: v for k, v in dataclasses.asdict(base).items() if k not in ("progress", "track", "tracking_uri")}}
    tracker = open_training_run(study_dir, uri, run_name=study_dir.name, params=params,
                                tags={"skinonnx.kind": "study"}, warn=echo)
    echo(f"tracking the study in MLflow: {ui_command(uri)}")
    return tracker, uri
