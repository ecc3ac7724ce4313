"""The `test` report's safety sections: selective classification and subgroups (summary.json blocks, their
files, and their text in the terminal, the model card and report.html). No torch.

The numbers come from :mod:`.selective` and :mod:`.subgroups`; this module decides what is computed for a
report and how it is shown. It also writes ``image_statistics.csv``, the per-image reference `monitor` needs.
"""

from __future__ import annotations

import csv
import html
import io
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_bytes, write_text
from ..data.attributes import attribute_columns, attribute_table, path_key
from ..data.image_statistics import FILE_NAME as STATISTICS_FILE
from ..data.image_statistics import file_statistics, write_statistics_csv
from ..data.images import DEFAULT_MAX_PIXELS
from ..errors import SkinOnnxError
from ..evaluation.metrics import METRIC_NAMES, fmt
from ..evaluation.selective import selective_section
from ..evaluation.subgroups import ONE_CLASS, group_labels, subgroup_table

ITA_COLUMN = "ita"  # `test --by ita`: the estimated skin tone, not a column of the data
RISK_COVERAGE_PNG = "risk_coverage.png"
SUBGROUPS_CSV = "subgroups.csv"
#: K classes: a group's boolean mask -> what its subgroup row adds (``{"multiclass": {...}}``)
GroupScorer = Callable[[np.ndarray], dict[str, Any]]
MULTICLASS_METRIC = "multiclass_balanced_accuracy"  # its row in subgroups.csv
CARD_METRICS = ("sensitivity", "specificity", "roc_auc", "balanced_accuracy")  # per-group columns of the card
ITA_HOW = ("estimated ITA° of the skin around the lesion (border ring, lighter than Otsu's L* threshold; "
           "data/skin_tone.py), Chardon's six categories: very light > 55, light 41-55, intermediate 28-41, "
           "tan 10-28, brown -30-10, dark < -30. An estimate, not a Fitzpatrick type")


def _nan(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


# --------------------------------------------------------------------------- computing


def ood_scores(rows: Sequence[Mapping[str, Any]]) -> np.ndarray | None:
    """Per-image ``ood_score`` from the evaluated rows, when the model has that output."""
    if rows and all(r.get("ood_score") is not None for r in rows):
        return np.array([float(r["ood_score"]) for r in rows])
    return None


def selective_block(y_true: np.ndarray, y_prob: np.ndarray, threshold: float, rows: Sequence[Mapping[str, Any]],
                    ood_threshold: float | None, *, bootstrap: int = 0, seed: int = 0,
                    confidence: float = 0.95) -> dict[str, Any]:
    scores = ood_scores(rows)
    if scores is not None and not np.isfinite(scores).all():  # no score = outside, as the runtime counts it
        finite = scores[np.isfinite(scores)]
        top = max([*finite.tolist(), *([ood_threshold] if ood_threshold is not None else [])], default=0.0)
        scores = np.where(np.isfinite(scores), scores, top + 1.0)
    return selective_section(y_true, y_prob, threshold, ood_score=scores,
                             ood_threshold=ood_threshold if scores is not None else None, bootstrap=bootstrap,
                             seed=seed, confidence=confidence)


def parse_by(values: Sequence[str]) -> list[str]:
    """``--by a,b --by c`` -> ``[a, b, c]`` (order kept, repeats dropped)."""
    return list(dict.fromkeys(c.strip() for v in values for c in v.split(",") if c.strip()))


def attribute_table_for(data: Any, split: str, by: Sequence[str], csv_path: str | os.PathLike[str] | None
                        ) -> dict[str, dict[str, str]]:
    """The attributes of ``data``'s ``split`` (a layouts.LabeledData) for ``--by``, its columns checked."""
    if not by:
        return {}
    table = attribute_table(data.split(split), csv_path)
    check_columns(by, attribute_columns([table]))
    return table


def safety_summary(y_true: np.ndarray, y_prob: np.ndarray, threshold: float, rows: Sequence[Mapping[str, Any]], *,
                   ood_threshold: float | None = None, by: Sequence[str] = (),
                   attributes: Mapping[str, Mapping[str, str]] | None = None, bootstrap: int = 1000, seed: int = 0,
                   confidence: float = 0.95, max_pixels: int = DEFAULT_MAX_PIXELS,
                   progress: bool = False, per_group: GroupScorer | None = None) -> dict[str, Any]:
    """The ``selective`` and ``subgroups`` blocks of summary.json (``subgroups`` None without ``by``);
    ``per_group`` adds its scores of a group's mask to that group's row (K classes: balanced accuracy)."""
    table = attributes or {}
    if by:
        check_columns(by, attribute_columns([table]))
    return {"selective": selective_block(y_true, y_prob, threshold, rows, ood_threshold, bootstrap=bootstrap,
                                         seed=seed, confidence=confidence),
            "subgroups": subgroup_blocks(y_true, y_prob, threshold, rows, by, table, bootstrap=bootstrap, seed=seed,
                                         confidence=confidence, max_pixels=max_pixels, progress=progress,
                                         per_group=per_group)
            if by else None}


def check_columns(columns: Sequence[str], available: Sequence[str]) -> None:
    """Refuse a ``--by`` column the data does not have (listing those it has)."""
    unknown = [c for c in columns if c != ITA_COLUMN and c not in available]
    if unknown:
        have = ", ".join(available) if available else "none"
        raise SkinOnnxError(f"--by {', '.join(unknown)}: no such column; the data's attribute columns: {have} "
                            f"(from extra index-CSV columns or --attributes FILE), and '{ITA_COLUMN}' (estimated "
                            "skin tone)")
    if ITA_COLUMN in columns and ITA_COLUMN in available:
        raise SkinOnnxError(f"--by {ITA_COLUMN}: the data has a column named '{ITA_COLUMN}', which clashes with "
                            "the estimated ITA; rename the column")


def group_values(rows: Sequence[Mapping[str, Any]], column: str, attributes: Mapping[str, Mapping[str, str]], *,
                 max_pixels: int = DEFAULT_MAX_PIXELS, progress: bool = False
                 ) -> tuple[list[str], str, tuple[str, ...] | None]:
    """Each evaluated image's group for ``column``, how it was grouped, and for an estimate (ITA) the order of
    its categories (None for a column of the data)."""
    if column == ITA_COLUMN:
        from tqdm import tqdm

        from ..data.skin_tone import ITA_CATEGORIES, UNKNOWN, estimate_ita_file, ita_category

        values = []
        for row in tqdm(rows, desc="estimated ITA", unit="img", disable=not progress, leave=False):
            try:
                values.append(ita_category(estimate_ita_file(row["path"], max_pixels=max_pixels)))
            except SkinOnnxError:
                values.append(UNKNOWN)
        return values, ITA_HOW, (*(name for name, _, _ in ITA_CATEGORIES), UNKNOWN)
    raw = [attributes.get(path_key(row["path"]), {}).get(column, "") for row in rows]
    labels, how = group_labels(raw)
    return labels, how, None


def subgroup_blocks(y_true: np.ndarray, y_prob: np.ndarray, threshold: float, rows: Sequence[Mapping[str, Any]],
                    columns: Sequence[str], attributes: Mapping[str, Mapping[str, str]], *, bootstrap: int,
                    seed: int, confidence: float, max_pixels: int = DEFAULT_MAX_PIXELS,
                    progress: bool = False, per_group: GroupScorer | None = None) -> list[dict[str, Any]]:
    """One :func:`.subgroups.subgroup_table` per ``--by`` column (each group's row extended by ``per_group``)."""
    blocks = []
    for column in columns:
        values, how, order = group_values(rows, column, attributes, max_pixels=max_pixels, progress=progress)
        block = subgroup_table(y_true, y_prob, threshold, values, column=column, how=how, bootstrap=bootstrap,
                               seed=seed, confidence=confidence, estimate=order is not None, order=order or ())
        if per_group is not None:
            labels = np.asarray(values, dtype=object)
            for g in block["groups"]:
                g.update(per_group(labels == g["group"]))
        blocks.append(block)
    return blocks


# --------------------------------------------------------------------------- files


def write_image_statistics(out_dir: Path, rows: Sequence[Mapping[str, Any]], *,
                           max_pixels: int = DEFAULT_MAX_PIXELS) -> list[str]:
    """``image_statistics.csv`` in predictions.csv's row order (monitor's reference); [] if an image fails."""
    stats = []
    for row in rows:
        try:
            stats.append(file_statistics(row["path"], max_pixels=max_pixels))
        except SkinOnnxError:  # read once already for the model: a file changed since; no partial reference
            return []
    write_statistics_csv(out_dir / STATISTICS_FILE, [str(r["path"]) for r in rows], stats)
    return [STATISTICS_FILE]


def write_safety_files(out_dir: Path, summary: Mapping[str, Any], *, plots: bool = True) -> list[str]:
    """risk_coverage.png (with plots) and subgroups.csv (with --by); returns the names written."""
    files = []
    if plots and summary.get("selective"):
        from ..evaluation.plots import plot_risk_coverage

        write_bytes(out_dir / RISK_COVERAGE_PNG, plot_risk_coverage(summary["selective"]))
        files.append(RISK_COVERAGE_PNG)
    if summary.get("subgroups"):
        write_text(out_dir / SUBGROUPS_CSV, subgroups_csv(summary["subgroups"]))
        files.append(SUBGROUPS_CSV)
    return files


def subgroups_csv(blocks: Sequence[Mapping[str, Any]]) -> str:
    """One row per column x group x metric (value, CI, too small, below the overall value)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["column", "estimate", "group", "n", "n_positive", "n_negative", "too_small", "metric",
                     "value", "ci_low", "ci_high", "overall", "below_overall", "not_shown_because"])
    for block in blocks:
        for g in block["groups"]:
            for m in METRIC_NAMES:
                ci = g["ci"][m] or [None, None]
                writer.writerow([block["column"], int(block["estimate"]), g["group"], g["n"], g["n_positive"],
                                 g["n_negative"], int(g["too_small"]), m, _csv_num(g["metrics"][m]),
                                 _csv_num(ci[0]), _csv_num(ci[1]), _csv_num(block["overall"][m]),
                                 int(m in g["below_overall"]), g["not_shown"].get(m, "")])
            if g.get("multiclass"):
                k = g["multiclass"]
                ci = k["balanced_accuracy_ci"] or [None, None]
                writer.writerow([block["column"], int(block["estimate"]), g["group"], g["n"], g["n_positive"],
                                 g["n_negative"], int(g["too_small"]), MULTICLASS_METRIC,
                                 _csv_num(k["balanced_accuracy"]), _csv_num(ci[0]), _csv_num(ci[1]), "", "", ""])
    return buf.getvalue()


def _csv_num(value: Any) -> str:
    return "" if _nan(value) else f"{value:.6f}"


# --------------------------------------------------------------------------- text


def _rankings_rows(sel: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    names = {"threshold_distance": "|p - threshold|", "ood_score": "ood_score"}
    return [(names.get(k, k), v) for k, v in sel["curves"].items()]


def _ci(ci: Sequence[float] | None) -> str:
    return "" if not ci else f" [{fmt(ci[0])}, {fmt(ci[1])}]"


def _bound(value: float) -> str:
    """A CI bound with enough digits that one on the other side of 0 never reads 0.000."""
    return fmt(value) if value == 0 or abs(value) >= 5e-4 else f"{value:.2g}"


def _gain(ci: Sequence[float] | None) -> str:
    """Whether the ranking beats random abstention, from the CI of random_aurc - aurc (its sign decides, so the
    bounds are printed with the digits that show it)."""
    if not ci:
        return ""
    word = "better than" if ci[0] > 0 else "worse than" if ci[1] < 0 else "not distinguishable from"
    return f"; {word} random abstention (gain CI [{_bound(ci[0])}, {_bound(ci[1])}])"


def terminal_lines(summary: Mapping[str, Any]) -> list[str]:
    out = []
    sel = summary.get("selective")
    if sel:
        out.append("  selective classification (risk = error rate among answered images):")
        for name, c in _rankings_rows(sel):
            out.append(f"    by {name:<16} AURC {fmt(c['aurc'], 4)}{_ci(c.get('aurc_ci'))}  E-AURC "
                       f"{fmt(c['e_aurc'], 4)}  (random abstention {fmt(c['random_aurc'], 4)}, oracle "
                       f"{fmt(c['oracle_aurc'], 4)}){_gain(c.get('gain_over_random_ci'))}")
        d = sel["deployed"]
        out.append(f"    deployed ({d['rule']}): coverage {fmt(d['coverage'])}, sensitivity {fmt(d['sensitivity'])}, "
                   f"specificity {fmt(d['specificity'])}")
    for block in summary.get("subgroups") or []:
        out.append(f"  subgroups by {'estimated ' if block['estimate'] else ''}{block['column']} "
                   f"({len(block['groups'])} groups; full table in {SUBGROUPS_CSV}):")
        for g in block["groups"]:
            m = g["metrics"]
            flag = f"  BELOW OVERALL: {', '.join(g['below_overall'])}" if g["below_overall"] else ""
            small = f"  ({_size_note(g)})" if _size_note(g) else ""
            k = g.get("multiclass")
            classes = "" if not k else f"  balanced acc. {fmt(k['balanced_accuracy'])}{_ci(k['balanced_accuracy_ci'])}"
            out.append(f"    {g['group'][:22]:<22} n {g['n']:>4} ({g['n_positive']} pos)  sens {fmt(m['sensitivity'])}"
                       f"  spec {fmt(m['specificity'])}  AUC {fmt(m['roc_auc'])}{classes}{small}{flag}")
    return out


def _size_note(g: Mapping[str, Any]) -> str:
    """A group's size note: "one class only" (no images of one class, however many of the other), "too small"."""
    return ONE_CLASS if g.get("one_class") else "too small" if g["too_small"] else ""


def _card_ci(g: Mapping[str, Any], m: str) -> str:
    value = g["metrics"][m]
    if value is None:
        return ONE_CLASS if str(g.get("not_shown", {}).get(m, "")).startswith(ONE_CLASS) else "too small"
    ci = g["ci"][m]
    return fmt(value) + ("" if ci is None else f" [{fmt(ci[0])}, {fmt(ci[1])}]")


CLASSES_HEADER = "balanced accuracy over the classes"  # K classes: the column the subgroup tables add


def _classes_cells(summary: Mapping[str, Any], g: Mapping[str, Any] | None) -> list[str]:
    """K classes: the group's (None: all images') balanced accuracy over the classes; [] for two classes."""
    k = summary.get("multiclass")
    if not k:
        return []
    if g is None:
        return [fmt(k["metrics"]["balanced_accuracy"])]
    mc = g.get("multiclass") or {}
    return [fmt(mc.get("balanced_accuracy")) + _ci(mc.get("balanced_accuracy_ci"))]


def model_card_lines(summary: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    sel = summary.get("selective")
    if sel:
        rows = ["| " + " | ".join([name.replace("|", "\\|"), fmt(c["aurc"]) + _ci(c.get("aurc_ci")), fmt(c["e_aurc"]),
                                  fmt(c["random_aurc"]), fmt(c["oracle_aurc"]),
                                  _gain(c.get("gain_over_random_ci")).removeprefix("; ") or "—"]) + " |"
                for name, c in _rankings_rows(sel)]
        d = sel["deployed"]
        out += ["## Selective classification", "",
                "Risk = error rate among the images the model answers; coverage = the share it answers. AURC = the "
                "area under the risk-coverage curve (lower is better); random abstention scores the overall error "
                "rate, the oracle (every error refused first) the lowest possible.", "",
                "| images refused first by | AURC | E-AURC | random abstention | oracle | vs random |",
                "|---|---|---|---|---|---|",
                *rows, "",
                f"Deployed ({d['rule']}): coverage {fmt(d['coverage'])}, error rate {fmt(d['error_rate'])}, "
                f"sensitivity {fmt(d['sensitivity'])}, specificity {fmt(d['specificity'])} "
                f"({d['n_positive_accepted']} positives and {d['n_negative_accepted']} negatives answered).", ""]
    blocks = summary.get("subgroups") or []
    if blocks:
        out += ["## Subgroups", "",
                "Every metric per group is in `subgroups.csv`; below, the main ones with "
                f"{'their bootstrap CIs' if summary.get('bootstrap') else 'no CIs (--no-ci)'}. A value reads "
                f"\"too small\" when the classes it needs have fewer than {blocks[0]['min_per_class']} images in the "
                "group, \"one class only\" when the group has none of a class it needs. ▼ marks a metric whose "
                "whole CI lies below the overall value; with many groups some marks "
                "are expected by chance.", ""]
        for block in blocks:
            title = f"estimated {block['column']}" if block["estimate"] else block["column"]
            extra = [CLASSES_HEADER] if summary.get("multiclass") else []
            out += [f"### By {title}", "", f"Grouping: {block['grouping']}.", "",
                    "| group | n (pos / neg) | " + " | ".join([*CARD_METRICS, *extra]) + " |",
                    "|---|---|" + "---|" * (len(CARD_METRICS) + len(extra))]
            out.append("| **all** | " + f"{block['n']} | " + " | ".join(
                [*(fmt(block["overall"][m]) for m in CARD_METRICS), *_classes_cells(summary, None)]) + " |")
            for g in block["groups"]:
                cells = [_card_ci(g, m) + (" ▼" if m in g["below_overall"] else "") for m in CARD_METRICS]
                cells += _classes_cells(summary, g)
                out.append(f"| {g['group']}{f' ({_size_note(g)})' if _size_note(g) else ''} | {g['n']} "
                           f"({g['n_positive']} / {g['n_negative']}) | " + " | ".join(cells) + " |")
            out.append("")
    return out


def html_section(summary: Mapping[str, Any]) -> str:
    """``<section id="safety">``: the selective-classification table and one table per subgroup column."""
    sel = summary.get("selective")
    blocks = summary.get("subgroups") or []
    if not sel and not blocks:
        return ""
    e = html.escape
    parts = ['<section id="safety">']
    if sel:
        d = sel["deployed"]
        rows = "".join(f"<tr><td>{e(name)}</td><td>{fmt(c['aurc'])}{e(_ci(c.get('aurc_ci')))}</td>"
                       f"<td>{fmt(c['e_aurc'])}</td><td>{fmt(c['random_aurc'])}</td><td>{fmt(c['oracle_aurc'])}</td>"
                       f"<td>{e(_gain(c.get('gain_over_random_ci')).removeprefix('; ')) or '—'}</td></tr>"
                       for name, c in _rankings_rows(sel))
        parts += ["<h2>Selective classification</h2>",
                  "<p>Error rate among answered images vs share answered; lower AURC is better.</p>",
                  "<table><thead><tr><th>refused first by</th><th>AURC</th><th>E-AURC</th><th>random abstention</th>"
                  f"<th>oracle</th><th>vs random</th></tr></thead><tbody>{rows}</tbody></table>",
                  f"<p>Deployed ({e(d['rule'])}): coverage {fmt(d['coverage'])}, sensitivity {fmt(d['sensitivity'])}, "
                  f"specificity {fmt(d['specificity'])}.</p>"]
    for block in blocks:
        title = f"estimated {block['column']}" if block["estimate"] else block["column"]
        extra = [CLASSES_HEADER] if summary.get("multiclass") else []
        head = "".join(f"<th>{e(m)}</th>" for m in [*CARD_METRICS, *extra])
        body = []
        for g in block["groups"]:
            cells = "".join(f'<td class="below">{e(_card_ci(g, m))} ▼</td>' if m in g["below_overall"]
                            else f"<td>{e(_card_ci(g, m))}</td>" for m in CARD_METRICS)
            cells += "".join(f"<td>{e(c)}</td>" for c in _classes_cells(summary, g))
            body.append(f"<tr><td>{e(g['group'])}{f' <em>({_size_note(g)})</em>' if _size_note(g) else ''}</td>"
                        f"<td>{g['n']} ({g['n_positive']} / {g['n_negative']})</td>{cells}</tr>")
        overall = "".join(f"<td>{fmt(block['overall'][m])}</td>" for m in CARD_METRICS)
        overall += "".join(f"<td>{e(c)}</td>" for c in _classes_cells(summary, None))
        parts += [f"<h2>Subgroups by {e(title)}</h2>", f"<p>Grouping: {e(block['grouping'])}. ▼: the whole CI lies "
                  f"below the overall value. Too small: fewer than {block['min_per_class']} images of a needed "
                  f"class. All metrics: {SUBGROUPS_CSV}.</p>",
                  f"<table class=\"subgroups\"><thead><tr><th>group</th><th>n (pos / neg)</th>{head}</tr></thead>"
                  f"<tbody><tr><td><strong>all</strong></td><td>{block['n']}</td>{overall}</tr>{''.join(body)}"
                  "</tbody></table>"]
    parts.append("</section>")
    return "".join(parts)
