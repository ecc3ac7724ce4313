"""`tune --engine ray`: the same trials on Ray Tune, Optuna's TPE as the search algorithm and ASHA as the
scheduler, one trial per worker CPU (a private local Ray bound to 127.0.0.1 by default, or ``--address``).

Each trial is the same :func:`~skinonnx.tuning.trial.run_trial` as the Optuna engine; it reports the best
validation AUC so far after every epoch, which ASHA compares at its rungs. When Ray is done the trials are
copied into the study's SQLite file, so the outputs (trials.csv, best_config.json, importance.png) are the
Optuna engine's. Workers must be able to import skinonnx and read the data path (a cluster: install it there)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import SkinOnnxError
from ..training.config import TrainConfig
from ..training.epoch_report import format_duration
from .outputs import StudyResult
from .study import StudySettings, claim_study_dir, open_study, pruning_starts
from .trial import run_trial, trial_config

METRIC = "val_auc"


def _trainable(params: dict[str, Any], base: TrainConfig, study_dir: str, folds: int | None,
               tracking_parent: str | None, tracking_uri: str | None) -> None:
    """One Ray Tune trial (runs in a Ray worker)."""
    from ray import tune

    trial_id = tune.get_context().get_trial_id()
    overrides: dict[str, Any] = {"threads": base.threads or 1}
    if tracking_uri:
        overrides["tracking_uri"] = tracking_uri
    cfg = trial_config(base, params, Path(study_dir), trial_id, **overrides)

    def report(step: int, best: float) -> bool:  # run_trial reports the best validation AUC so far
        tune.report({METRIC: best if best == best else 0.0, "epochs": step})
        return False  # ASHA stops the trial from outside

    run_trial(cfg, folds, report, log=Path(study_dir) / "logs" / f"{cfg.name}.log", tracking_parent=tracking_parent)


def run_ray_study(base: TrainConfig, settings: StudySettings, *, address: str | None, parallel: int,
                  echo: Callable[[str], None] = print) -> StudyResult:
    """Run the study's trials on Ray Tune (OptunaSearch + ASHA), then write the usual outputs."""
    try:
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler
        from ray.tune.search.optuna import OptunaSearch
    except ImportError:
        raise SkinOnnxError("--engine ray needs Ray Tune: pip install 'skinonnx[tune]' (or pip install 'ray[tune]' "
                            "optuna)") from None
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from ..deploy.ray_predict import start_ray
    from .outputs import write_outputs
    from .study import _study_tracker

    base = dataclasses.replace(base, data=str(Path(base.data).resolve()), runs_dir=str(Path(base.runs_dir).resolve()),
                               exclude_list=str(Path(base.exclude_list).resolve()) if base.exclude_list else "")
    study_dir = claim_study_dir(base, settings, echo)
    tracker, uri = _study_tracker(base, study_dir, settings, echo)
    parent_id = tracker.run_id() if tracker is not None else None
    ray, started = start_ray(address, num_cpus=parallel)
    max_t = settings.trial_steps(base)
    grace = pruning_starts(max_t)
    echo(f"study {study_dir} on Ray Tune ({'cluster ' + address if address else f'local, {parallel} workers'}): "
         f"{settings.trials} trials, Optuna TPE search, ASHA (max {max_t} epochs, grace {grace}, factor 3); searching "
         + "; ".join(d.describe() for d in settings.space.dimensions))
    progress = _progress(settings.trials, max_t, echo)
    try:
        searcher = OptunaSearch(space=settings.space.distributions(), metric=METRIC, mode="max",
                                sampler=optuna.samplers.TPESampler(seed=base.seed,
                                                                   n_startup_trials=max(2, settings.trials // 3)))
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=max_t, grace_period=grace, reduction_factor=3)
        trainable = tune.with_parameters(_trainable, base=base, study_dir=str(study_dir), folds=settings.folds,
                                         tracking_parent=parent_id, tracking_uri=uri)
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}),
            tune_config=tune.TuneConfig(metric=METRIC, mode="max", search_alg=searcher, scheduler=scheduler,
                                        num_samples=settings.trials, max_concurrent_trials=parallel),
            run_config=tune.RunConfig(name="ray", storage_path=str(study_dir), verbose=0, callbacks=[progress]))
        grid = tuner.fit()
    finally:
        if started:
            ray.shutdown()
    study = _as_optuna_study(grid, study_dir, base, settings, max_t)
    result = write_outputs(study, base, settings, study_dir, echo)
    if tracker is not None:
        if result.best_value is not None:
            tracker.log_metrics({"best_val_auc": result.best_value})
        tracker.log_files(result.files)
        tracker.finish("FINISHED")
    return result


def _progress(total: int, max_t: int, echo: Callable[[str], None]):
    from ray.tune import Callback

    class Progress(Callback):
        """One line per finished, stopped (pruned by ASHA) or failed trial, with the best so far and an ETA."""

        def __init__(self) -> None:
            self.done, self.best, self.start = 0, float("-inf"), time.perf_counter()

        def _line(self, trial, state: str) -> None:
            self.done += 1
            result = trial.last_result or {}
            value = result.get(METRIC)
            epochs = result.get("epochs", result.get("training_iteration", 0))
            if state == "complete" and epochs < max_t:
                state = f"pruned at epoch {epochs}"
            if isinstance(value, float) and state != "failed":
                self.best = max(self.best, value)
            pace = (time.perf_counter() - self.start) / self.done
            left = total - self.done
            params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in (trial.config or {}).items())
            shown = f"val AUC {value:.4f}" if isinstance(value, float) else "no value"
            echo(f"trial {self.done}/{total} {trial.trial_id} {state} ({shown}) [{epochs} epochs] {params} | best "
                 f"{self.best:.4f} | " + (f"ETA {format_duration(pace * left)} ({left} trials left)" if left
                                          else "done"))

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            self._line(trial, "complete")

        def on_trial_error(self, iteration, trials, trial, **info) -> None:
            self._line(trial, "failed")

    return Progress()


def _as_optuna_study(grid, study_dir: Path, base: TrainConfig, settings: StudySettings, max_t: int):
    """Ray's trials as Optuna trials in the study's SQLite file: complete, pruned (stopped by ASHA) or failed."""
    import optuna

    study = open_study(study_dir, base, settings)
    distributions = settings.space.distributions()
    for result in grid:
        metrics, params = result.metrics or {}, {k: v for k, v in (result.config or {}).items()
                                                 if k in distributions}
        epochs = int(metrics.get("epochs", metrics.get("training_iteration", 0)) or 0)
        value = metrics.get(METRIC)
        attrs = {"epochs": epochs, "run_dir": str(study_dir / f"trial-{metrics.get('trial_id', '')}"),
                 "seconds": float(metrics.get("time_total_s", 0.0) or 0.0)}
        if result.error is not None or value is None:
            state, value = optuna.trial.TrialState.FAIL, None
            attrs["error"] = str(result.error or "no result").strip().splitlines()[-1][:300]
        elif epochs < max_t:
            state = optuna.trial.TrialState.PRUNED
            attrs["last_value"] = float(value)
            value = None
        else:
            state = optuna.trial.TrialState.COMPLETE
        if len(params) != len(distributions):
            continue
        study.add_trial(optuna.trial.create_trial(state=state, value=value, params=params,
                                                  distributions=distributions, user_attrs=attrs,
                                                  intermediate_values={epochs: float(metrics.get(METRIC, 0.0))}))
    return study
