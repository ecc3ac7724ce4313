"""Pruning's saving (docs/TUNING.md): the same trials (same settings, same order) trained without pruning and
with the median and successive-halving pruners; epochs trained in all and the best validation AUC of each.

    python -m benchmarks.tune_pruning                  # 8 trials x 6 epochs at 32 px, ~4 min on 2 idle cores
    python -m benchmarks.tune_pruning --trials 6 --epochs 3

The goal (issue 28): at least 40 % fewer epochs than without pruning, at an equal best value within noise.
The first study draws its trials with TPE; the others replay exactly those settings, so only pruning differs.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def _study(base, settings, name: str, replay: list[dict] | None):
    import dataclasses

    from skinonnx.tuning.study import claim_study_dir, open_study, run_study

    cfg = dataclasses.replace(base, name=name)
    if replay is not None:  # the same settings in the same order
        study_dir = claim_study_dir(cfg, settings, lambda _m: None)
        study = open_study(study_dir, cfg, settings)
        for params in replay:
            study.enqueue_trial(params)
    t = time.perf_counter()
    lines: list[str] = []
    result = run_study(cfg, settings, echo=lines.append)
    seconds = time.perf_counter() - t
    import optuna

    study = optuna.load_study(study_name=name, storage=f"sqlite:///{cfg.run_dir / 'study.db'}")
    trials = [t for t in study.get_trials() if t.state.is_finished()]
    return {"best_value": result.best_value, "epochs": sum(int(t.user_attrs.get("epochs", 0)) for t in trials),
            "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in trials), "seconds": seconds,
            "params": [t.params for t in sorted(trials, key=lambda t: t.number)],
            "trials": [{"number": t.number, "state": t.state.name.lower(), "value": t.value,
                        "epochs": t.user_attrs.get("epochs")} for t in sorted(trials, key=lambda t: t.number)]}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.tune_pruning", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--out", type=Path,
                   default=Path("/tmp/skinonnx-bench") / f"tune-pruning-{time.strftime('%Y%m%d-%H%M%S')}.json")
    args = p.parse_args(argv)
    from skinonnx.data.synthetic import generate_dataset
    from skinonnx.training.config import TrainConfig
    from skinonnx.tuning.space import default_space
    from skinonnx.tuning.study import StudySettings

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        generate_dataset(data, counts={"train": 24, "val": 12, "test": 4}, size=40, seed=0, progress=False)
        base = TrainConfig(data=str(data), weights="none", image_size=32, batch_size=16, epochs=args.epochs,
                           threads=1, early_stop=0, runs_dir=str(Path(tmp) / "runs"), progress=False)
        space = default_space({"image_size"})
        results["none"] = _study(base, StudySettings(args.trials, space, pruner="none"), "none", None)
        for pruner in ("median", "halving"):
            results[pruner] = _study(base, StudySettings(args.trials, space, pruner=pruner), pruner,
                                     results["none"]["params"])
    full = results["none"]["epochs"]
    print(f"{'pruner':8s} {'epochs':>6s} {'saved':>6s} {'pruned':>6s} {'best AUC':>8s} {'seconds':>7s}")
    for name, r in results.items():
        r["saved_share"] = 1 - r["epochs"] / full if full else 0.0
        print(f"{name:8s} {r['epochs']:6d} {r['saved_share']:6.0%} {r['pruned']:6d} {r['best_value']:8.4f} "
              f"{r['seconds']:7.0f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"trials": args.trials, "epochs": args.epochs, **results}, indent=2, default=str))
    print(f"written {args.out}")
    return results


if __name__ == "__main__":
    main()
