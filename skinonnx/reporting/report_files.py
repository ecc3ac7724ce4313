"""The files of a `test` report folder (docs/REPORTS.md), summary.json last: predictions.csv, figures, cards."""

from __future__ import annotations

from pathlib import Path

from ..atomic import write_text
from ..deploy.journal import csv_text
from .model_card import render_model_card
from .model_run import EvalResult
from .multiclass_report import write_files as write_multiclass_files
from .provenance import dumps_strict
from .safety import write_image_statistics, write_safety_files


def write_report(result: EvalResult, *, plots: bool = True, model_card: bool = True, html: bool = True) -> None:
    """predictions.csv, classification_report.txt, PNGs, MODEL_CARD.md, report.html and last summary.json."""
    out = result.out_dir
    files = ["predictions.csv", "classification_report.txt"]
    write_text(out / "predictions.csv", csv_text(result.rows, list(result.rows[0]), "{:.6f}".format))
    write_text(out / "classification_report.txt", result.report_text)
    files += write_image_statistics(out, result.rows, max_pixels=result.max_pixels)  # monitor's reference
    if plots:
        from ..evaluation.plots import write_plots  # matplotlib loads only when figures are wanted

        assert result.evaluated is not None
        files += write_plots(result.summary, result.evaluated.y_true, result.evaluated.y_prob, out,
                             history=result.history)
        files += _write_cv_plot(result)
    files += write_multiclass_files(out, result.summary, plots=plots)
    files += write_safety_files(out, result.summary, plots=plots)
    if model_card:
        files.append("MODEL_CARD.md")
        result.summary["files"] = [*files, "summary.json"]
        write_text(out / "MODEL_CARD.md", render_model_card(result.summary))
    if html:
        from .html_report import HTML_NAME, write_html_report

        assert result.evaluated is not None
        result.summary["files"] = [*files, HTML_NAME, "summary.json"]  # what the page lists as figures
        files += write_html_report(out, result.summary, result.rows, result.evaluated.cams, result.preprocessing,
                                   max_pixels=result.max_pixels)
    result.summary["files"] = [*files, "summary.json"]
    result.files = result.summary["files"]
    write_text(out / "summary.json", dumps_strict(result.summary))


def _write_cv_plot(result: EvalResult) -> list[str]:
    """cv_roc_curves.png for a fold ensemble whose run folder (oof.csv) is at hand."""
    from ..atomic import write_bytes
    from .cv_report import FIGURE, plot_cv_roc, read_oof_csv

    cv = result.summary.get("cross_validation")
    if result.summary.get("multiclass"):  # oof.csv's labels are classes, not the malignancy group: not drawn yet
        return []
    if not cv or not cv.get("oof_file") or result.evaluated is None:
        return []
    folds = read_oof_csv(Path(cv["oof_file"]).parent, result.summary["positive_class"])
    if not folds:
        return []
    evaluated = (result.evaluated.y_true, result.evaluated.y_prob)
    write_bytes(result.out_dir / FIGURE, plot_cv_roc(folds, evaluated, result.evaluated.split))
    return [FIGURE]
