"""report.html: the `test` report a person opens first (one file, offline, no torch, no framework).

Layout, top to bottom: the headline (ROC AUC and sensitivity/specificity at the operating point with
their intervals, the threshold and where it came from, the model's provenance), the figures, every
misclassified image (false negatives, i.e. missed malignant lesions, before false positives; the most
confidently wrong first), the correct cases nearest the threshold, then every other image in a table
that sorts and filters with a few lines of plain JavaScript, and the skipped files with their reasons.

Each image is shown as one small JPEG, ``report_files/NNNNN.jpg``: the crop the model saw beside the
same crop under the heatmap of the model's own ``cam`` output (the crop alone for models without it),
loaded lazily so that a 5,000-image split still opens quickly (benchmarks/report_html.py). Figures are
the PNGs beside the report. Nothing is fetched from anywhere else: a Content-Security-Policy meta tag
(``default-src 'none'``; images from the report's own folder; the one inline style and script allowed
by their SHA-256) makes the browser refuse any other request, and the script writes every error and
refused request into the page (``#js-errors``), where tests look for them. The case images are made by
:mod:`.case_images`, the stylesheet, script and policy live in :mod:`.html_assets`.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_text
from ..data.images import DEFAULT_MAX_PIXELS
from ..data.preprocessing import Preprocessing
from ..evaluation.metrics import PARTIAL_AUC_LABELS, fmt, sci
from ..evaluation.verdict import verdict_of
from .case_images import FILES_DIR, write_case_images
from .html_assets import SCRIPT, STYLE, csp
from .model_card import FIGURE_TITLES
from .multiclass_report import html_section as multiclass_html_section
from .ood_summary import html_section as ood_html_section
from .safety import html_section

HTML_NAME = "report.html"
NEAR_CASES = 24  # correct cases nearest the threshold shown as cards
CARD_PAGE = 120  # cards shown per section before "show more" (a weak model on 5,000 images has 1,000+ errors)
TABLE_PAGE = 200  # table rows shown at a time (the rest stay display:none until asked for)


@dataclass(frozen=True)
class Case:
    """One evaluated image as the report shows it."""

    index: int
    path: str
    label: str
    probability: float  # calibrated, positive class
    prediction: str
    outcome: str  # TP, TN, FP, FN
    distance: float  # probability - threshold: < 0 predicted negative
    thumb: str | None  # relative path of the case image, None when it could not be made
    refused: bool = False  # out of distribution: the model would not have answered (reporting/ood_summary.py)


def cases_from_rows(rows: Sequence[dict[str, Any]], positive_class: str, threshold: float,
                    thumbs: Sequence[str | None], group: Sequence[str] = ()) -> list[Case]:
    """``group``: a K-class model's malignancy group; a case's outcome is then the group decision (the row's
    ``malignant``) against the true class being in the group."""
    out = []
    for i, (row, thumb) in enumerate(zip(rows, thumbs, strict=True)):
        if group:
            truth, predicted = row["label"] in group, bool(row["malignant"])
        else:
            truth, predicted = row["label"] == positive_class, row["prediction"] == positive_class
        outcome = ("T" if truth == predicted else "F") + ("P" if predicted else "N")
        out.append(Case(i, str(row["path"]), str(row["label"]), float(row["probability"]), str(row["prediction"]),
                        outcome, float(row["probability"]) - threshold, thumb,
                        refused=row.get("in_distribution") is False))
    return out


def order_cases(cases: Sequence[Case], near: int = NEAR_CASES) -> tuple[list[Case], list[Case], list[Case], list[Case]]:
    """(false negatives, false positives, near-threshold correct, the rest); errors most confidently wrong first,
    near cases nearest first, the rest by probability, highest first."""
    fn = sorted((c for c in cases if c.outcome == "FN"), key=lambda c: (c.distance, c.index))
    fp = sorted((c for c in cases if c.outcome == "FP"), key=lambda c: (-c.distance, c.index))
    correct = sorted((c for c in cases if c.outcome in ("TP", "TN")), key=lambda c: (abs(c.distance), c.index))
    near_cases = correct[:near]
    shown = {c.index for c in near_cases}
    rest = sorted((c for c in correct if c.index not in shown), key=lambda c: (-c.probability, c.index))
    return fn, fp, near_cases, rest


# --------------------------------------------------------------------------- HTML


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _signed(d: float) -> str:
    """Distance to the threshold: 4 decimals, or 2 significant digits when that would read 0.0000."""
    return f"{d:+.4f}" if abs(d) >= 5e-5 or d == 0 else f"{d:+.1e}"


def _ci(ci: dict[str, Any] | None, name: str) -> str:
    if not ci or ci.get(name) is None:
        return ""
    lo, hi = ci[name]
    return f" <span class=ci>[{fmt(lo)}, {fmt(hi)}]</span>"


def _case_card(c: Case, positive_class: str, threshold: float, cls: str, later: bool = False) -> str:
    """One case; ``later`` cards start hidden, their image added by the script when they are shown."""
    name = os.path.basename(c.path)
    if not c.thumb:
        img, extra = '<p class="muted">image unavailable</p>', ""
    elif later:
        img, extra = "", f' hidden data-thumb="{_e(c.thumb)}"'
    else:
        img, extra = (f'<img loading="lazy" decoding="async" width="226" height="112" src="{_e(c.thumb)}" '
                      f'alt="{_e(name)}: crop and heatmap">'), ""
    refused = ' data-refused="1"' if c.refused else ""
    tag = ' <span class="tag refused" title="out of distribution: the model refuses this image">refused</span>' \
        if c.refused else ""
    return (f'<figure class="case {cls}" data-outcome="{c.outcome}"{refused}{extra}>{img}<figcaption><span class=tag>'
            f"{c.outcome}</span>{tag} {_e(name)}<br>truth {_e(c.label)}, p({_e(positive_class)}) = {c.probability:.4f}"
            f"<br>threshold {threshold:.4f}, distance {_signed(c.distance)}</figcaption></figure>")


def _headline(s: dict[str, Any]) -> str:
    m, ci, conf = s["metrics"], s["ci"], s["metrics"]["confusion"]
    level = f"{s['bootstrap']['confidence']:.0%} CI" if s.get("bootstrap") else "no CI (--no-ci)"
    verdict = verdict_of(s)
    auc_tiles = [(f"ROC AUC, {e.name}", f"{fmt(e.auc)}{_ci({'roc_auc': e.ci}, 'roc_auc')}",
                  f"{e.n or '?'} images" + ("" if e.independent_of_selection else ", used for model selection"))
                 for e in verdict.estimates] if len(verdict.estimates) > 1 else [
        ("ROC AUC", f"{fmt(m['roc_auc'])}{_ci(ci, 'roc_auc')}", "threshold-free")]
    tiles = [
        *auc_tiles,
        ("Sensitivity", f"{fmt(m['sensitivity'])}{_ci(ci, 'sensitivity')}",
         f"{conf['tp']} of {conf['tp'] + conf['fn']} {s['positive_class']} found"),
        ("Specificity", f"{fmt(m['specificity'])}{_ci(ci, 'specificity')}",
         f"{conf['tn']} of {conf['tn'] + conf['fp']} others cleared"),
        ("Threshold", f"{s['threshold']:.4f}", _e(s["threshold_source"])),
        *((PARTIAL_AUC_LABELS[k], f"{fmt(m[k])}{_ci(ci, k)}", k) for k in ("pauc_80", "auc_sens_80")),
    ]
    said = "".join(f'<p class="verdict warn" data-verdict="warning">{_e(w)}</p>' for w in verdict.warnings)
    said += f'<p class="verdict" data-verdict="advice">{_e(verdict.advice)}</p>' if verdict.advice else ""
    d = s["data"]
    counts = (f'<p>{level}. Evaluated <b data-count="n_evaluated">{d["n_evaluated"]}</b> images of the '
              f'<code>{_e(d["split"])}</code> split (<b data-count="n_positive">{d["n_positive"]}</b> '
              f'{_e(s["positive_class"])}), skipped <b data-count="n_skipped">{d["n_skipped"]}</b>. At the operating '
              f'point: TP <b data-count="tp">{conf["tp"]}</b>, FN <b data-count="fn">{conf["fn"]}</b>, '
              f'TN <b data-count="tn">{conf["tn"]}</b>, FP <b data-count="fp">{conf["fp"]}</b>.</p>')
    return (said + '<div class="head">' + "".join(
        f'<div class="tile">{_e(t)}<b>{v}</b><span class=muted>{note}</span></div>' for t, v, note in tiles)
            + "</div>" + counts)


def _provenance(s: dict[str, Any]) -> str:
    model, training, parity = s["model"], s["training"], s.get("parity")
    config = training.get("config") or {}
    if parity:
        verdict = "passed" if parity.get("ok") else "FAILED"
        stale = "" if parity.get("matches_model") else " (record is for other bytes: stale)"
        parity_text = (f"{verdict} on {parity.get('n_images')} real images ({_e(parity.get('images'))}), max |Δp| "
                       f"{sci(parity.get('max_abs_diff_probabilities'))}{stale}")
    else:
        parity_text = "no parity record beside the ONNX file"
    rows = [("model file", f"<code>{_e(model['path'])}</code>"), ("SHA-256", f"<code>{_e(model['sha256'])}</code>"),
            ("exported", f"{_e(model.get('exported_at') or 'unknown')} by skinonnx "
                         f"{_e(model.get('exported_by') or '?')} from "
                         f"<code>{_e(model.get('source_checkpoint') or '?')}</code>, opset "
                         f"{_e(model.get('opset') or '?')}"),
            ("training data", f"<code>{_e(config.get('data') or 'unknown')}</code>"
                              + (f", best epoch {training['best_epoch']}" if training.get("best_epoch") else "")),
            ("evaluated data", f"<code>{_e(s['data']['root'])}</code> ({_e(s['data'].get('source') or 'no README')})"),
            ("export parity", parity_text),
            ("runtime", f"ONNX Runtime {_e(s['provider'])}, temperature {model['temperature']:.4f}, "
                        f"report {_e(s['created_at'])}")]
    return '<table class="prov">' + "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in rows) + "</table>"


def _figures(files: Sequence[str]) -> str:
    pngs = [f for f in files if f.endswith(".png")]
    if not pngs:
        return '<p class="muted">No figures (--no-plots).</p>'
    return '<div class="figs">' + "".join(
        f'<figure><a href="{_e(f)}"><img loading="lazy" src="{_e(f)}" alt="{_e(FIGURE_TITLES.get(f, f))}"></a>'
        f"<figcaption>{_e(FIGURE_TITLES.get(f, f))}</figcaption></figure>" for f in pngs) + "</div>"


def _rest_table(rest: Sequence[Case], positive_class: str, page: int = TABLE_PAGE) -> str:
    head = ('<div class="controls"><label>file name contains <input id="filter-text" type="search"></label>'
            '<label>outcome <select id="filter-outcome"><option value="">any</option><option>TP</option>'
            f'<option>TN</option></select></label><span>showing <b id="shown">{min(page, len(rest))} of '
            f'{len(rest)}</b> (<b data-count="rest">{len(rest)}</b> images)</span></div>')
    cols = [("image", None, False), ("file", "name", False), ("truth", "label", False),
            (f"p({positive_class})", "p", True), ("distance to threshold", "d", True), ("outcome", "outcome", False)]
    ths = "".join(f"<th>{_e(t)}</th>" if key is None else
                  f'<th><button type="button" data-key="{key}"{" data-numeric" if num else ""}>{_e(t)}</button></th>'
                  for t, key, num in cols)
    body = []
    for k, c in enumerate(rest):
        name = os.path.basename(c.path)
        thumb = f' data-thumb="{_e(c.thumb)}"' if c.thumb else ""  # the script adds the <img> when shown
        body.append(f'<tr data-name="{_e(name.lower())}" data-label="{_e(c.label)}"{thumb} '
                    f'data-p="{c.probability:.6f}" '
                    f'data-d="{c.distance:.6f}" data-outcome="{c.outcome}"{" data-refused" if c.refused else ""}'
                    f'{" hidden" if k >= page else ""}><td></td><td title="{_e(c.path)}">'
                    f"{_e(name)}</td><td>{_e(c.label)}</td><td>{c.probability:.4f}</td><td>{_signed(c.distance)}</td>"
                    f"<td>{c.outcome}{' (refused)' if c.refused else ''}</td></tr>")
    more = f'<button type="button" id="more"{"" if len(rest) > page else " hidden"}>show {page} more</button>'
    return (head + f'<table id="rest"><thead><tr>{ths}</tr></thead><tbody data-page="{page}">{"".join(body)}'
            f"</tbody></table>{more}")


def render_html(summary: dict[str, Any], cases: Sequence[Case], *, has_cam: bool) -> str:
    """The whole page, from the summary (same numbers as summary.json) and the evaluated cases."""
    s = summary
    pos, t = s["positive_class"], float(s["threshold"])
    fn, fp, near, rest = order_cases(cases)
    name = os.path.basename(s["model"]["path"])
    cam_note = ("Each image: the crop the model saw, and the same crop under the heatmap of the model's own "
                "<code>cam</code> output: where the image looks more " + _e(pos) + " than the threshold asks of an "
                "average region (drawn relative to the threshold, normalised per image; docs/EMBEDDING.md)."
                if has_cam else "This model has no <code>cam</code> output (exported with --no-cam or by an older "
                "skinonnx): the crops are shown without heatmaps.")

    def cards(items: Sequence[Case], cls: str) -> str:
        if not items:
            return '<p class="muted">None.</p>'
        body = "".join(_case_card(c, pos, t, cls, later=k >= CARD_PAGE) for k, c in enumerate(items))
        more = (f'<button type="button" class="more-cards">show {CARD_PAGE} more (of {len(items)})</button>'
                if len(items) > CARD_PAGE else "")
        return f'<div class="cases">{body}</div>{more}'

    skipped = s.get("skipped") or []
    skipped_html = ("<table><tr><th>file</th><th>reason</th></tr>" + "".join(
        f"<tr><td><code>{_e(x['path'])}</code></td><td>{_e(x['problem'])}</td></tr>" for x in skipped) + "</table>"
                    ) if skipped else '<p class="muted">None.</p>'
    parts = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{csp()}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>skinonnx test report: {_e(name)}</title><style>{STYLE}</style></head>",
        f'<body data-card-page="{CARD_PAGE}">',
        '<ul id="js-errors" hidden></ul>',
        f"<h1>Test report: {_e(name)} on {_e(s['data']['split'])}</h1>",
        '<p class="banner">Research software. Not a medical device; not for diagnosis.</p>',
        *([multiclass_html_section(s)] if s.get("multiclass") else []),  # K classes: their headline first
        '<section id="headline">', _headline(s), _provenance(s), "</section>",
        ood_html_section(s.get("ood"), s["metrics"], s.get("ci")),
        '<section id="figures"><h2>Figures</h2>', _figures(s.get("files") or []), "</section>", html_section(s),
        f'<section id="errors"><h2>Misclassified: <span data-count="errors">{len(fn) + len(fp)}</span></h2>'
        f'<p class="muted">{cam_note} Distance = probability − threshold; most confidently wrong first.'
        + (f' <span data-count="refused_errors">{sum(c.refused for c in (*fn, *fp))}</span> of them were refused as '
           "out of distribution (marked <span class=tag>refused</span>): in deployment the model would not have "
           "answered them." if s.get("ood") else "") + "</p>",
        f'<h3>Missed {_e(pos)} lesions (false negatives): <span data-count="fn_cards">{len(fn)}</span></h3>',
        cards(fn, "FN"),
        f'<h3>False positives: <span data-count="fp_cards">{len(fp)}</span></h3>', cards(fp, "FP"), "</section>",
        f'<section id="near"><h2>Correct, nearest the threshold: <span data-count="near_cards">{len(near)}</span>'
        f'</h2><p class="muted">The {NEAR_CASES} correct cases closest to the threshold: the uncertain ones.</p>',
        cards(near, "near"), "</section>",
        f'<section id="all"><h2>All other images: {len(rest)}</h2>', _rest_table(rest, pos), "</section>",
        f'<section id="skipped"><h2>Skipped files: <span data-count="skipped_rows">{len(skipped)}</span></h2>',
        skipped_html, "</section>",
        f'<p class="muted">Generated by skinonnx {_e(s["skinonnx_version"])} at {_e(s["created_at"])}; the numbers '
        'are those of <a href="summary.json">summary.json</a> in this folder (docs/REPORTS.md).</p>',
        f"<script>{SCRIPT}</script></body></html>",
    ]
    return "\n".join(parts) + "\n"


def write_html_report(out_dir: Path, summary: dict[str, Any], rows: Sequence[dict[str, Any]],
                      cams: Sequence[np.ndarray | None] | None, prep: Preprocessing | None, *,
                      max_pixels: int = DEFAULT_MAX_PIXELS) -> list[str]:
    """Write ``report_files/`` (case images) and ``report.html``; return the names for ``files``."""
    if prep is not None:
        thumbs = write_case_images([str(r["path"]) for r in rows], cams, prep, out_dir / FILES_DIR,
                                   max_pixels=max_pixels)
    else:
        thumbs = [None] * len(rows)
    group = (summary.get("multiclass") or {}).get("malignant_classes") or ()
    cases = cases_from_rows(rows, summary["positive_class"], float(summary["threshold"]), thumbs, group)
    has_cam = cams is not None and any(c is not None for c in cams)
    write_text(out_dir / HTML_NAME, render_html(summary, cases, has_cam=has_cam))
    return [HTML_NAME, FILES_DIR + "/"] if prep is not None else [HTML_NAME]
