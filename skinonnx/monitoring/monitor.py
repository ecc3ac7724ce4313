"""`monitor`: does a new batch of images look, to the model, like the images it was tested on? No torch.

The reference is a `test` report folder: its ``predictions.csv`` (the model's probability per test image,
and ``ood_score`` when the model has one), its ``image_statistics.csv`` (see data/image_statistics.py;
report folders written before it existed are still read, with the image statistics left out and a note
saying so) and its ``summary.json`` (which model made it: a reference from another model is refused, since
its outputs are not comparable). The new batch goes through the same model, the quantities are compared
with a two-sample test (monitoring/drift.py) and the verdict, a plot and ``monitor.json`` are written.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..atomic import write_bytes, write_text
from ..data.image_statistics import FILE_NAME as STATISTICS_FILE
from ..data.image_statistics import STATISTICS, file_statistics, read_statistics_csv
from ..data.images import DEFAULT_MAX_PIXELS
from ..deploy.runtime import OnnxClassifier
from ..errors import DataError, SkinOnnxError
from ..reporting.provenance import dumps_strict, sha256_of
from .drift import DEFAULT_ALPHA, class_distribution_test, drift_test, with_class_distribution

SCHEMA = "skinonnx-monitor"
SCHEMA_VERSION = 1
PLOT_NAME = "drift.png"
JSON_NAME = "monitor.json"
MIN_BATCH = 10  # fewer new images: too few for a two-sample test to mean anything


@dataclass
class Batch:
    """Per-image quantities of one side of the comparison."""

    quantities: dict[str, np.ndarray]
    n: int
    notes: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    refused: int | None = None  # images with ood_score above the model's threshold (None: no ood_score)
    decided: list[str] | None = None  # K classes: each image's decided class (the graph's label output)


def _column(rows: list[dict[str, str]], name: str, source: Path) -> np.ndarray:
    try:
        return np.array([float(r[name]) for r in rows])
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{source}: column '{name}' is missing or not numeric") from None


def read_reference(report_dir: Path, model_sha256: str | None = None) -> Batch:
    """The reference quantities from a `test` report folder (clear errors for a folder that is not one)."""
    predictions = report_dir / "predictions.csv"
    if not predictions.is_file():
        raise DataError(f"{report_dir}: no predictions.csv; --reference takes a report folder written by "
                        "`test` (e.g. reports/model)")
    summary_path = report_dir / "summary.json"
    if model_sha256 is not None and summary_path.is_file():
        try:
            recorded = json.loads(summary_path.read_text(encoding="utf-8")).get("model", {}).get("sha256")
        except (OSError, ValueError, AttributeError):
            recorded = None
        if recorded and recorded != model_sha256:
            raise DataError(f"{report_dir} was made with another model (sha256 {recorded[:12]}..., this one "
                            f"{model_sha256[:12]}...); run `test` with this model to make its reference")
    try:
        with open(predictions, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{predictions}: cannot read ({exc})") from None
    if len(rows) < 2:
        raise DataError(f"{predictions}: {len(rows)} row(s); a reference needs at least 2 images")
    quantities = {"probability": _column(rows, "probability", predictions)}
    notes = []
    if "ood_score" in rows[0]:
        quantities["ood_score"] = _column(rows, "ood_score", predictions)
    stats_path = report_dir / STATISTICS_FILE
    if stats_path.is_file():
        stats = read_statistics_csv(stats_path)
        if len(next(iter(stats.values()))) != len(rows):
            raise DataError(f"{stats_path}: {len(next(iter(stats.values())))} rows but predictions.csv has "
                            f"{len(rows)}; the report folder is inconsistent, run `test` again")
        quantities.update(stats)
    else:
        notes.append(f"{report_dir} has no {STATISTICS_FILE} (older `test` reports lack it): image "
                     "statistics not compared; run `test` again to include them")
    decided = [r.get("prediction", "") for r in rows] if any(k.startswith("p_") for k in rows[0]) else None
    return Batch(quantities, len(rows), notes, decided=decided)


def measure_batch(classifier: OnnxClassifier, paths: list[Path], *, batch_size: int = 16,
                  max_pixels: int = DEFAULT_MAX_PIXELS, progress: bool = False,
                  with_statistics: bool = True) -> Batch:
    """Run the model on ``paths`` and compute the same quantities as the reference (bad files skipped)."""
    from ..data.images import ImageError

    contract = classifier.contract
    pos = contract.positive_index
    probs, ood, inside, stats, skipped, decided = [], [], [], [], [], []
    for pred in classifier.predict_files(paths, batch_size=batch_size, max_pixels=max_pixels, progress=progress):
        if not pred.ok:
            skipped.append({"path": pred.path, "problem": str(pred.error)})
            continue
        if with_statistics:
            try:
                stats.append(file_statistics(pred.path, max_pixels=max_pixels))
            except ImageError as exc:  # decoded once for the model: a second failure is unexpected but handled
                skipped.append({"path": pred.path, "problem": str(exc)})
                continue
        if contract.multiclass:  # the malignancy group's probability and the decided class, as `test` records them
            probs.append(float(pred.p_malignant))
            decided.append(contract.classes[int(pred.label)])
        else:
            probs.append(float(pred.probabilities[pos]))
        inside.append(bool(pred.in_distribution))  # the graph's decision
        score = getattr(pred, "ood_score", None)  # the ood_score output, on models that have one
        if score is not None:
            ood.append(float(score))
    quantities = {"probability": np.array(probs)}
    if stats:
        quantities.update({k: np.array([s[k] for s in stats]) for k in STATISTICS})
    refused = None
    if ood and len(ood) == len(probs):
        quantities["ood_score"] = np.array(ood)
        if getattr(contract, "ood_threshold", None) is not None:
            refused = len(inside) - sum(inside)
    return Batch(quantities, len(probs), skipped=skipped, refused=refused,
                 decided=decided if contract.multiclass else None)


def run_monitor(classifier: OnnxClassifier, reference_dir: Path, paths: list[Path], *, out_dir: Path,
                method: str = "ks", alpha: float = DEFAULT_ALPHA, batch_size: int = 16,
                max_pixels: int = DEFAULT_MAX_PIXELS, progress: bool = False, plot: bool = True,
                input_problems: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """Compare the new images with the reference; write ``monitor.json`` (and ``drift.png``); return the verdict."""
    model_sha = sha256_of(classifier.path)
    reference = read_reference(reference_dir, model_sha)
    with_statistics = any(k in reference.quantities for k in STATISTICS)
    new = measure_batch(classifier, paths, batch_size=batch_size, max_pixels=max_pixels, progress=progress,
                        with_statistics=with_statistics)
    new.skipped = [*(input_problems or []), *new.skipped]
    if new.n < MIN_BATCH:
        raise SkinOnnxError(f"only {new.n} readable new image(s) ({len(new.skipped)} skipped); the comparison "
                            f"needs at least {MIN_BATCH}")
    notes = list(reference.notes)
    if "ood_score" in new.quantities and "ood_score" not in reference.quantities:
        notes.append("the reference has no ood_score column: ood_score not compared; run `test` again")
    result = drift_test(reference.quantities, new.quantities, method=method, alpha=alpha)
    if classifier.contract.multiclass:  # K classes: p_malignant is "probability"; the decided classes are tested too
        if reference.decided is None:
            raise DataError(f"{reference_dir} is not the report of a K-class `test` (no p_<class> columns in its "
                            "predictions.csv); run `test` with this model to make its reference")
        result = with_class_distribution(result, class_distribution_test(reference.decided, new.decided or [],
                                                                         classifier.contract.classes))
        notes.append("K classes: 'probability' is p_malignant, the malignancy group's ("
                     + ", ".join(classifier.contract.malignant_classes) + "); the decided classes are tested as "
                     "'class_distribution' (the graph's label, refused images included)")
    ood_threshold = getattr(classifier.contract, "ood_threshold", None)
    verdict = {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "skinonnx_version": __version__,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": {"path": str(classifier.path), "sha256": model_sha},
        "reference": str(reference_dir), "n_reference": reference.n, "n_new": new.n,
        "n_skipped": len(new.skipped), **result,
        "out_of_distribution": None if new.refused is None else {
            "ood_threshold": ood_threshold, "n_refused": new.refused, "share_refused": new.refused / new.n},
        "notes": notes + ([] if new.refused is not None else
                          ["the model has no ood_score output: the share refused as out of distribution is "
                           "not available"]),
        "skipped": new.skipped, "files": [JSON_NAME],
    }
    if plot:
        from .drift_plots import plot_drift

        write_bytes(out_dir / PLOT_NAME, plot_drift(reference.quantities, new.quantities, verdict))
        verdict["files"] = [PLOT_NAME, JSON_NAME]
    write_text(out_dir / JSON_NAME, dumps_strict(verdict))
    return verdict


def format_verdict(verdict: dict[str, Any]) -> str:
    """Terminal text: the verdict first, then one line per quantity."""
    word = "DRIFT" if verdict["drift"] else "no drift detected"
    how = ("KS per quantity, Holm-corrected" if verdict["method"] == "ks"
           else f"MMD permutation test ({verdict['permutations']} permutations)")
    lines = [f"{word}: p = {verdict['p_value']:.3g} (alpha {verdict['alpha']}; {how}); "
             f"{verdict['n_new']} new images vs {verdict['n_reference']} reference images"]
    for name, q in verdict["quantities"].items():
        test = (f"KS {q['statistic']:.3f}  p {q['p_value']:.3g}  adjusted {q['p_adjusted']:.3g}"
                f"{'  <- moved' if q['drift'] else ''}") if "p_adjusted" in q else ""
        lines.append(f"  {name:<12} median {q['reference_median']:.4g} -> {q['new_median']:.4g}  {test}".rstrip())
    cd = verdict.get("class_distribution")
    if cd:
        shares = ", ".join(f"{name} {a:.0%} -> {b:.0%}" for name, a, b in zip(cd["classes"], cd["reference_share"],
                                                                            cd["new_share"], strict=True))
        lines.append(f"  {'classes':<12} {shares}  chi2 {cd['statistic']:.3f}  p {cd['p_value']:.3g}  adjusted "
                     f"{cd['p_adjusted']:.3g}{'  <- moved' if cd['drift'] else ''}")
    ood = verdict["out_of_distribution"]
    if ood is not None:
        lines.append(f"  refused as out of distribution: {ood['n_refused']} of {verdict['n_new']} "
                     f"({ood['share_refused']:.1%}; ood_score > {ood['ood_threshold']:.4g})")
    lines += [f"  note: {n}" for n in verdict["notes"]]
    return "\n".join(lines)
