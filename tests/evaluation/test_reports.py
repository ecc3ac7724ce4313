"""Evaluation reports: CIs in the table, summary.json schema, plots, model card, calibration, thresholds."""

from __future__ import annotations

import csv
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image
from scipy.special import expit, logit
from sklearn.metrics import confusion_matrix, roc_auc_score

from skinonnx.evaluation import calibration_report, evaluate_predictions
from skinonnx.evaluation.calibration import brier_score, expected_calibration_error, fit_temperature
from skinonnx.evaluation.metrics import METRIC_NAMES
from skinonnx.reporting.model_card import SECTIONS, fmt, fmt_ci
from skinonnx.reporting.provenance import dumps_strict, json_ready
from skinonnx.softmax import softmax
from tests.scratch import scratch_dir
from tests.waits import WAIT_S

from ..conftest import TrainedModel, run_cli

ROOT = Path(__file__).resolve().parents[2]
PNGS = ("roc_curve.png", "pr_curve.png", "confusion_matrix.png", "reliability_diagram.png", "training_curves.png",
        "risk_coverage.png")


def _strict_loads(text: str):
    def refuse(token: str):
        raise AssertionError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


# --------------------------------------------------------------------------- library functions (fast)


def _scores(seed: int, n_pos: int = 30, n_neg: int = 50) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
    p = expit(rng.normal(0, 1, y.size) + 1.2 * y)
    return y, p


def test_evaluate_predictions_gives_every_metric_with_a_reproducible_interval() -> None:
    y, p = _scores(0)
    a = evaluate_predictions(y, p, 0.55, bootstrap=300, seed=7)
    assert a["threshold"] == 0.55 and a["metrics"]["threshold"] == 0.55
    tn, fp, fn, tp = confusion_matrix(y, (p >= 0.55).astype(int)).ravel()
    assert a["metrics"]["confusion"] == {"tn": tn, "fp": fp, "fn": fn, "tp": tp}
    assert a["metrics"]["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert set(a["ci"]) == set(METRIC_NAMES)
    for name in METRIC_NAMES:
        lo, hi = a["ci"][name]
        assert lo <= a["metrics"][name] <= hi and lo < hi, name
    assert evaluate_predictions(y, p, 0.55, bootstrap=300, seed=7)["ci"] == a["ci"]
    other = evaluate_predictions(y, p, 0.55, bootstrap=300, seed=8)["ci"]
    assert other != a["ci"]
    assert evaluate_predictions(y, p, 0.55, bootstrap=0)["ci"] is None


def test_calibration_report_matches_reference_functions_and_temperature_helps() -> None:
    rng = np.random.default_rng(4)
    z = rng.normal(0, 1.2, size=(400, 2))
    labels = (rng.random(400) < softmax(z)[:, 1]).astype(int)  # calibrated at T = 1 by construction
    overconfident = 3.0 * z
    t = fit_temperature(overconfident, labels)
    before, after = softmax(overconfident)[:, 1], softmax(overconfident, t)[:, 1]
    rep = calibration_report(labels, after, before)
    assert rep["n"] == 400 and rep["n_positive"] == int(labels.sum())
    assert rep["ece_before"] == pytest.approx(expected_calibration_error(labels, before))
    assert rep["brier_after"] == pytest.approx(brier_score(labels, after))
    assert rep["ece_after"] < rep["ece_before"] / 2 and rep["brier_after"] < rep["brier_before"]
    assert sum(rep["reliability_after"]["count"]) == 400
    only_after = calibration_report(labels, after)
    assert only_after["ece_before"] is None and only_after["reliability_before"] is None
    assert only_after["ece_after"] == rep["ece_after"]


def test_summary_json_never_contains_nan() -> None:
    text = dumps_strict({"a": float("nan"), "b": [np.float64(1.5), np.inf], "c": (np.int64(3),)})
    assert _strict_loads(text) == {"a": None, "b": [1.5, None], "c": [3]}
    assert json_ready({"x": np.float32(0.25)}) == {"x": 0.25}


@pytest.mark.slow
def test_whole_test_command_runs_without_torch(trained: TrainedModel, tmp_path: Path) -> None:
    code = ("import sys; from skinonnx.cli import main; "
            f"main(['test', '--onnx', {str(trained.onnx)!r}, '--data', {str(trained.data)!r}, '--out', "
            f"{str(tmp_path)!r}, '--bootstrap', '50', '--quiet'], standalone_mode=False); "
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]; "
            "print('TORCH', bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=WAIT_S)
    assert done.returncode == 0 and "TORCH []" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
    assert (tmp_path / "MODEL_CARD.md").is_file() and (tmp_path / "roc_curve.png").is_file()


# --------------------------------------------------------------------------- threshold policies into the model


def _val_logits() -> tuple[np.ndarray, np.ndarray]:
    """Validation logits whose positive-class probability is sigmoid(s) (T = 1, no calibration)."""
    s = np.array([2.0, 1.0, 0.5, -0.2, 0.9, -2.0, -1.0, 0.8, -0.5, -1.5, 0.1, -0.8])
    labels = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0])
    return np.stack([np.zeros_like(s), s], axis=1), labels


def _brute_force(labels: np.ndarray, prob: np.ndarray, kind: str, target: float = 0.0) -> float:
    """Reference: scan every observed probability, highest first."""
    best, best_j = None, -math.inf
    for t in sorted(set(prob), reverse=True):
        pred = prob >= t
        sens = pred[labels == 1].mean()
        spec = (~pred[labels == 0]).mean()
        if kind == "youden" and sens + spec - 1 > best_j + 1e-12:
            best, best_j = t, sens + spec - 1
        if kind == "sensitivity" and sens >= target:
            return t
    return best


@pytest.mark.parametrize("policy", ["youden", "sensitivity:0.95", "sensitivity:0.6", "fixed:0.3"])
def test_policy_chosen_on_validation_goes_into_checkpoint_and_onnx_metadata(policy: str) -> None:
    pytest.importorskip("torch")
    from skinonnx.export.onnx_export import contract_from_checkpoint
    from skinonnx.training.finalize import calibrate_and_choose

    logits, labels = _val_logits()
    extra = calibrate_and_choose(logits, labels, positive_index=1, policy_text=policy, calibrate=False)
    prob = expit(logits[:, 1])
    kind, _, value = policy.partition(":")
    expected = float(value) if kind == "fixed" else _brute_force(labels, prob, kind, float(value or 0))
    if kind != "fixed":  # the stored threshold lies halfway between that ROC point and the next score down
        assert extra["decision"]["roc_point"] == pytest.approx(expected)
        expected = (expected + prob[prob < expected].max()) / 2
    assert extra["decision"]["threshold"] == pytest.approx(expected)
    assert extra["decision"]["policy"] == policy and extra["calibration"]["temperature"] == 1.0
    if kind == "sensitivity":
        assert (prob[labels == 1] >= extra["decision"]["threshold"]).mean() >= float(value)
    state = {"classes": ["benign", "malignant"], "positive_index": 1,
             "preprocessing": {"image_size": 32, "resize_size": 37, "interpolation": "bilinear",
                               "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}, **extra}
    checkpoint = Path(__file__)  # any file: only its hash is recorded
    meta = contract_from_checkpoint(state, checkpoint, 17).to_metadata()
    assert float(meta["decision_threshold"]) == pytest.approx(expected) and meta["threshold_policy"] == policy


# --------------------------------------------------------------------------- end to end on the trained model


@pytest.fixture(scope="module")
def report(trained: TrainedModel, request: pytest.FixtureRequest):
    out = scratch_dir(request, "report")
    result = run_cli("test", "--onnx", trained.onnx, "--data", trained.data, "--output", out, "--provider", "cpu",
                     "--bootstrap", "200", "--quiet")
    return result.stdout, out, _strict_loads((out / "summary.json").read_text())


@pytest.mark.slow
def test_table_prints_every_metric_with_its_interval_at_both_thresholds(report) -> None:
    stdout, _, s = report
    number = r"(-?\d\.\d{4}|n/a)"
    pair = rf"\[\s*{number},\s*{number}\]"
    for name in METRIC_NAMES:
        line = next(x for x in stdout.splitlines() if x.split()[:1] == [name])
        found = re.fullmatch(rf"\s*{name}( \*)?\s+{number}\s+{pair}\s+{number}\s+{pair}\s*", line)
        assert found, line
        op, lo, hi, ref = found.group(2), found.group(3), found.group(4), found.group(5)
        assert op == _four(s["metrics"][name]) and ref == _four(s["reference"]["metrics"][name])
        assert [lo, hi] == [_four(v) for v in s["ci"][name]]
    assert f"threshold {s['threshold']:.4f}" in stdout and "ECE" in stdout


def _four(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


TYPES = {
    "schema": str, "schema_version": int, "skinonnx_version": str, "created_at": str, "model": dict,
    "provider": str, "data": dict, "classes": list, "positive_class": str, "threshold": float,
    "threshold_source": str, "metrics": dict, "ci": dict, "bootstrap": dict, "reference": dict,
    "validation": dict, "calibration": dict, "training": dict, "parity": dict, "skipped": list, "files": list,
    "verdict": dict,
}
NESTED = {
    "model": {"path": str, "sha256": str, "architecture": str, "classes": list, "positive_class": str,
              "image_size": int, "decision_threshold": float, "threshold_policy": str, "temperature": float,
              "source_checkpoint": str, "exported_at": str, "opset": str, "exported_by": str},
    "data": {"root": str, "layout": str, "source": str, "split": str, "counts": dict, "n_evaluated": int,
             "n_positive": int, "n_skipped": int},
    "bootstrap": {"method": str, "resamples": int, "confidence": float, "seed": int},
    "reference": {"threshold": float, "metrics": dict, "ci": dict},
    "validation": {"split": str, "threshold": float, "metrics": dict},
    "calibration": {"temperature": float, "n_bins": int, "at_training": dict, "fitted_on": str, "validation": dict,
                    "evaluated": dict},
    "training": {"run_dir": str, "config": dict, "epochs_run": int, "best_epoch": int, "best_val_auc": float,
                 "best_val_loss": float},
}
CAL_BLOCK = {"split": str, "n": int, "n_positive": int, "ece_before": float, "ece_after": float,
             "brier_before": float, "brier_after": float, "reliability_before": dict, "reliability_after": dict}


def _check_types(obj: dict, spec: dict, where: str) -> None:
    assert list(spec) == [k for k in obj if k in spec], f"{where}: key order changed"
    assert set(spec) <= set(obj), f"{where}: missing {set(spec) - set(obj)}"
    for key, kind in spec.items():
        value = obj[key]
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) if kind is float else \
            isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        assert ok, f"{where}.{key} is {type(value).__name__}, expected {kind.__name__}"


@pytest.mark.slow
def test_summary_json_schema_is_stable_and_documented(report) -> None:
    _, _, s = report
    assert s["schema"] == "skinonnx-evaluation-summary" and s["schema_version"] == 1
    _check_types(s, TYPES, "summary")
    for key, spec in NESTED.items():
        _check_types(s[key], spec, key)
    for block in (s["calibration"]["validation"], s["calibration"]["evaluated"]):
        _check_types(block, CAL_BLOCK, "calibration block")
        curve = block["reliability_after"]
        assert len(curve["bin_edges"]) == s["calibration"]["n_bins"] + 1 and sum(curve["count"]) == block["n"]
    for metrics in (s["metrics"], s["reference"]["metrics"], s["validation"]["metrics"]):
        assert set(METRIC_NAMES) | {"threshold", "n", "n_positive", "confusion"} == set(metrics)
    for ci in (s["ci"], s["reference"]["ci"]):
        assert set(ci) == set(METRIC_NAMES) and all(len(v) == 2 for v in ci.values())
    docs = (ROOT / "docs" / "REPORTS.md").read_text()
    documented = set(re.findall(r"^\| `([a-z_0-9]+)` \|", docs, flags=re.M))
    every_key = set(TYPES) | {k for spec in NESTED.values() for k in spec} | set(CAL_BLOCK) | set(METRIC_NAMES)
    assert every_key - documented == set(), "keys missing from docs/REPORTS.md"


@pytest.mark.slow
def test_json_flag_prints_exactly_the_summary(trained: TrainedModel, tmp_path: Path) -> None:
    result = run_cli("test", "--onnx", trained.onnx, "--data", trained.data, "--output", tmp_path, "--provider", "cpu",
                     "--json", "--no-ci", "--no-plots", "--quiet")
    printed = _strict_loads(result.stdout)
    assert printed == _strict_loads((tmp_path / "summary.json").read_text())
    assert printed["ci"] is None and printed["bootstrap"] is None and printed["reference"]["ci"] is None
    assert not list(tmp_path.glob("*.png")) and "MODEL_CARD.md" in printed["files"]


@pytest.mark.slow
def test_other_ci_seed_moves_only_the_intervals(trained: TrainedModel, report, tmp_path: Path) -> None:
    _, _, s = report
    result = run_cli("test", "--onnx", trained.onnx, "--data", trained.data, "--output", tmp_path, "--provider", "cpu",
                     "--json", "--bootstrap", "200", "--ci-seed", "1", "--no-plots", "--skip-val", "--quiet")
    other = _strict_loads(result.stdout)
    assert other["metrics"] == s["metrics"] and other["bootstrap"]["seed"] == 1
    assert other["ci"] != s["ci"]
    assert other["validation"] is None and other["calibration"]["validation"] is None


@pytest.mark.slow
def test_metrics_agree_with_a_recomputation_from_predictions_csv(report) -> None:
    _, out, s = report
    rows = list(csv.DictReader((out / "predictions.csv").read_text().splitlines()))
    y = np.array([r["label"] == s["positive_class"] for r in rows], dtype=int)
    p = np.array([float(r["probability"]) for r in rows])
    for block in (s, s["reference"]):
        t = block["threshold"]
        tn, fp, fn, tp = confusion_matrix(y, (p >= t).astype(int), labels=[0, 1]).ravel()
        assert block["metrics"]["confusion"] == {"tn": tn, "fp": fp, "fn": fn, "tp": tp}
        assert block["metrics"]["roc_auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-9)
    assert s["reference"]["threshold"] == 0.5
    meta = {m.key: m.value for m in onnx.load(s["model"]["path"], load_external_data=False).metadata_props}
    assert s["threshold"] == pytest.approx(float(meta["decision_threshold"]))
    assert s["threshold_source"] == f"model metadata ({meta['threshold_policy']})"


@pytest.mark.slow
def test_probabilities_are_temperature_scaled_logits(report) -> None:
    _, out, s = report
    rows = list(csv.DictReader((out / "predictions.csv").read_text().splitlines()))
    raw = np.array([float(r["probability_uncalibrated"]) for r in rows])
    cal = np.array([float(r["probability"]) for r in rows])
    # two classes: logit(p) is the logit difference, divided by T in the graph
    np.testing.assert_allclose(logit(cal) * s["calibration"]["temperature"], logit(raw), atol=2e-3)


@pytest.mark.slow
def test_validation_calibration_through_onnx_matches_training_time_values(report) -> None:
    _, _, s = report
    cal = s["calibration"]
    val, torch_side = cal["validation"], cal["at_training"]
    assert torch_side["temperature"] == pytest.approx(cal["temperature"])
    for key in ("ece_before", "ece_after", "brier_before", "brier_after"):
        assert val[key] == pytest.approx(torch_side[key], abs=1e-5), key
    # (temperature scaling minimises NLL, not ECE or Brier: neither is guaranteed to drop, so no such assert)


@pytest.mark.slow
def test_plots_are_real_non_blank_pngs(report) -> None:
    _, out, s = report
    assert [f for f in s["files"] if f.endswith(".png")] == list(PNGS)
    for name in PNGS:
        with Image.open(out / name) as img:
            assert img.format == "PNG"
            assert img.width >= 450 and img.height >= 350, (name, img.size)
            pixels = np.asarray(img.convert("RGB"), dtype=float)
        assert pixels.std() > 20, f"{name} looks blank"
        assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50, f"{name} has almost no content"
    with Image.open(out / "reliability_diagram.png") as one, Image.open(out / "roc_curve.png") as roc:
        assert one.width > roc.width  # two panels: validation and test


@pytest.mark.slow
def test_model_card_has_every_section_and_the_summary_numbers(report) -> None:
    _, out, s = report
    card = (out / "MODEL_CARD.md").read_text()
    headings = re.findall(r"^## (.+)$", card, flags=re.M)
    assert headings == list(SECTIONS)
    assert "**Leakage check:** no validation or test image duplicates a training image" in card  # train's check
    auc_row = next(line for line in card.splitlines() if line.startswith("| ROC AUC"))
    assert f"| {fmt(s['metrics']['roc_auc'])} | {fmt_ci(s['ci']['roc_auc'])} |" in auc_row
    for name in ("sensitivity", "specificity"):
        row = next(line for line in card.splitlines() if line.lower().startswith(f"| {name}"))
        assert f"| {fmt(s['metrics'][name])} | {fmt_ci(s['ci'][name])} | {fmt(s['reference']['metrics'][name])} |" \
            in row
    assert f"**{fmt(s['threshold'], 4)}**" in card and s["model"]["threshold_policy"] in card
    val = s["calibration"]["validation"]
    assert f"| {fmt(val['ece_before'])} | {fmt(val['ece_after'])} | {fmt(val['brier_before'])} |" in card
    assert f"T = {fmt(s['calibration']['temperature'], 4)}" in card
    counts = s["data"]["counts"]["test"]
    assert f"| test | {counts['benign']} | {counts['malignant']} | {sum(counts.values())} |" in card
    assert "**passed**" in card and s["model"]["sha256"] in card
    assert "Not a medical device" in card and "Skin type coverage unknown" in card
    for png in PNGS:
        assert f"]({png})" in card


@pytest.mark.slow
def test_threshold_override_is_used_everywhere(trained: TrainedModel, tmp_path: Path) -> None:
    result = run_cli("test", "--onnx", trained.onnx, "--data", trained.data, "--output", tmp_path, "--provider", "cpu",
                     "--threshold", "0", "--no-ci", "--no-plots", "--quiet")
    s = _strict_loads((tmp_path / "summary.json").read_text())
    assert s["threshold"] == 0.0 and s["threshold_source"] == "--threshold"
    assert s["metrics"]["sensitivity"] == 1.0 and s["metrics"]["specificity"] == 0.0
    assert s["validation"]["threshold"] == 0.0 and s["validation"]["metrics"]["sensitivity"] == 1.0
    assert s["model"]["decision_threshold"] != 0.0  # the model's own value is still reported
    assert "given with `--threshold`" in (tmp_path / "MODEL_CARD.md").read_text()
    assert "@0.0000" in result.stdout


@pytest.mark.slow
def test_report_without_run_folder_or_parity_record(trained: TrainedModel, tmp_path: Path) -> None:
    model = onnx.load(str(trained.onnx))
    for prop in model.metadata_props:
        if prop.key == "training_run_dir":
            prop.value = str(tmp_path / "moved-away")
    moved = tmp_path / "moved.onnx"
    onnx.save(model, str(moved))
    out = tmp_path / "r"
    run_cli("test", "--onnx", moved, "--data", trained.data, "--output", out, "--provider", "cpu", "--no-ci",
            "--skip-val", "--quiet")
    s = _strict_loads((out / "summary.json").read_text())
    assert s["training"]["run_dir"] is None and s["parity"] is None
    assert s["training"]["config"]["epochs"] == 2  # from the ONNX metadata copy
    assert "training_curves.png" not in s["files"] and not (out / "training_curves.png").exists()
    card = (out / "MODEL_CARD.md").read_text()
    assert "metrics.csv was not found" in card and "No parity record" in card
    # a parity record made for other bytes is flagged, and --run-dir brings the curves back
    (tmp_path / "moved.onnx.parity.json").write_text(trained.onnx.with_name("model.onnx.parity.json").read_text())
    run_cli("test", "--onnx", moved, "--data", trained.data, "--output", out, "--provider", "cpu", "--no-ci",
            "--skip-val", "--quiet", "--run-dir", trained.run_dir)
    s = _strict_loads((out / "summary.json").read_text())
    assert s["parity"]["matches_model"] is False and "training_curves.png" in s["files"]
    assert "different file" in (out / "MODEL_CARD.md").read_text()


@pytest.mark.slow
def test_export_records_parity_for_the_exact_file(trained: TrainedModel) -> None:
    from skinonnx.reporting.provenance import parity_record_path, sha256_of

    record = _strict_loads(parity_record_path(trained.onnx).read_text())
    assert record["ok"] is True and record["onnx_sha256"] == sha256_of(trained.onnx)
    assert record["max_abs_diff_probabilities"] <= record["checks"][0]["atol"]


@pytest.mark.slow
def test_model_card_warns_when_the_auc_interval_includes_chance(report) -> None:
    import copy

    from skinonnx.reporting.model_card import render_model_card

    _, _, s = report
    for interval, warned in (([0.41, 0.62], True), ([0.55, 0.8], False)):
        changed = copy.deepcopy(s)
        changed["ci"]["roc_auc"] = interval
        card = render_model_card(changed)
        assert ("does not separate the classes" in card) is warned
        assert f"| {fmt_ci(interval)} |" in card
