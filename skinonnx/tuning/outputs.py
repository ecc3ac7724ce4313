"""What a study leaves: trials.csv, the best settings as a `train --config` file, an importance plot (PNG), and
the table printed at the end. Written atomically after every session of the study (also an interrupted one)."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import write_bytes, write_json, write_text
from ..training.config import TrainConfig
from .trial import best_settings


@dataclass
class StudyResult:
    study_dir: Path
    best_value: float | None
    best_params: dict[str, Any]
    best_trial: int | None
    counts: dict[str, int]
    files: list[Path]


def counted(study) -> dict[str, int]:
    """Trials by state; interrupted ones are not counted (they run again)."""
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        if trial.user_attrs.get("interrupted") or not trial.state.is_finished():  # waiting (enqueued) or running
            continue
        counts[trial.state.name.lower()] = counts.get(trial.state.name.lower(), 0) + 1
    return counts


TRIALS_CSV = "trials.csv"
BEST_CONFIG = "best_config.json"
IMPORTANCE_PNG = "importance.png"


def trial_rows(study) -> list[dict[str, Any]]:
    rows = []
    for trial in study.get_trials(deepcopy=False):
        attrs = trial.user_attrs
        state = "interrupted" if attrs.get("interrupted") else trial.state.name.lower()
        rows.append({"number": trial.number, "state": state, "value": trial.value,
                     "epochs": attrs.get("epochs"), "seconds": round(float(attrs.get("seconds", 0.0)), 1),
                     **{f"param_{k}": v for k, v in trial.params.items()}, "run_dir": attrs.get("run_dir", ""),
                     "error": attrs.get("error", "")})
    return rows


def _csv_text(rows: list[dict[str, Any]]) -> str:
    names: list[str] = []
    for row in rows:
        names += [k for k in row if k not in names]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def importances(study) -> dict[str, float]:
    """Each searched setting's share of the objective's variance (Optuna's fANOVA); empty with < 3 finished
    trials or one setting."""
    import optuna

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) < 3 or len({k for t in complete for k in t.params}) < 2:
        return {}
    try:
        return dict(optuna.importance.get_param_importances(study))
    except (RuntimeError, ValueError, ZeroDivisionError):
        return {}


def importance_png(values: dict[str, float]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(values)[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.45 * len(names)))
    ax.barh(names, [values[n] for n in names], color="#3b6ea8")
    ax.set_xlabel("importance (fANOVA share of the validation AUC's variance)")
    ax.set_xlim(0, 1)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def write_outputs(study, base: TrainConfig, settings, study_dir: Path, echo: Callable[[str], None]):
    """Write the files and print the table; returns a :class:`~skinonnx.tuning.study.StudyResult`."""
    rows = trial_rows(study)
    files = []
    if rows:
        write_text(study_dir / TRIALS_CSV, _csv_text(rows))
        files.append(study_dir / TRIALS_CSV)
    counts = counted(study)
    try:
        best = study.best_trial
    except ValueError:
        echo(f"no trial finished yet ({', '.join(f'{v} {k}' for k, v in counts.items()) or 'none run'})")
        return StudyResult(study_dir, None, {}, None, counts, files)
    echo(_table(rows))
    config_path = study_dir / BEST_CONFIG
    write_json(config_path, best_settings(base, best.params))
    files.append(config_path)
    values = importances(study)
    if values:
        write_bytes(study_dir / IMPORTANCE_PNG, importance_png(values))
        files.append(study_dir / IMPORTANCE_PNG)
        echo("importance: " + ", ".join(f"{k} {v:.2f}" for k, v in values.items()) + f" ({IMPORTANCE_PNG})")
    echo(f"best: trial {best.number}, validation AUC {best.value:.4f} with "
         + ", ".join(f"{k}={v}" for k, v in best.params.items())
         + f" ({', '.join(f'{v} {k}' for k, v in counts.items())})")
    echo(f"best settings: {config_path}; reproduce with: skinonnx train --config {config_path}")
    return StudyResult(study_dir, float(best.value), dict(best.params), best.number, counts, files)


def _table(rows: list[dict[str, Any]]) -> str:
    params = sorted({k for row in rows for k in row if k.startswith("param_")})
    head = ["#", "state", "value", "epochs", "s", *[p[len("param_"):] for p in params]]
    lines = [head]
    for row in rows:
        value = row["value"]
        lines.append([str(row["number"]), row["state"], f"{value:.4f}" if isinstance(value, float) else "-",
                      str(row["epochs"] if row["epochs"] is not None else "-"), f"{row['seconds']:.0f}",
                      *[f"{row[p]:.3g}" if isinstance(row.get(p), float) else str(row.get(p, "-")) for p in params]])
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(line, widths, strict=True)) for line in lines)
