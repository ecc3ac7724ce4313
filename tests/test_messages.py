"""Messages that tell the truth (issue: what a new user hit). Fast: tiny ONNX models, no training."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from .badfiles import cli_error, cli_ok, tiny_onnx
from .conftest import run_cli


@pytest.fixture
def images(tmp_path: Path, synthetic_data: Path) -> Path:
    return synthetic_data / "test" / "benign"


def test_test_before_export_names_the_command_that_creates_the_model(tmp_path: Path, monkeypatch,
                                                                     synthetic_data: Path) -> None:
    monkeypatch.chdir(tmp_path)
    cli_error("test", "--data", synthetic_data, says=("ONNX model not found: exports/model.onnx",
                                                     "Create it with: ", " export (exports the newest run)"))
    cli_error("test", "--onnx", tmp_path / "m.onnx", "--data", synthetic_data,
              says=(f"export --output {tmp_path / 'm.onnx'}",))
    cli_error("quantize", "--onnx", tmp_path / "m.onnx", says=("ONNX model not found", "export --output"))


def test_export_without_any_run_says_to_train_first(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cli_error("export", says=("no run with weights/best.pt under runs/", "train one first"))
    cli_error("explain", str(tmp_path), says=("no images found",))


def test_mean_on_the_0_255_scale_is_refused(tmp_path: Path, images: Path) -> None:
    bare = tiny_onnx(tmp_path / "bare.onnx", metadata=False)
    cli_error("predict", "--onnx", bare, images, "-o", tmp_path / "p.csv", "--image-size", "16",
              "--mean", "123.7,116.3,103.5", "--std", "0.229,0.224,0.225", code=2,
              says=("'123.7,116.3,103.5' is on the 0-255 scale", "--mean 0.485,0.456,0.406"))
    cli_error("predict", "--onnx", bare, images, "-o", tmp_path / "p.csv", "--image-size", "16",
              "--mean", "0.485,0.456,0.406", "--std", "58.4,57.1,57.4", code=2, says=("--std 0.229,0.224,0.225",))


def test_mistyped_weights_fail_before_any_image_is_decoded(tmp_path: Path, synthetic_data: Path,
                                                         monkeypatch) -> None:
    import skinonnx.training.data_checks as data_checks

    def no_decoding(*_args, **_kwargs):
        raise AssertionError("data was read before --weights was checked")

    monkeypatch.setattr(data_checks, "discover", no_decoding)
    cli_error("train", "--data", synthetic_data, "--weights", "non", "--runs-dir", tmp_path / "runs", "--quiet",
              says=("--weights non: file not found", "'imagenet', 'none'"))


def test_quantize_takes_the_data_recorded_in_the_model_and_refuses_without(tmp_path: Path, synthetic_data: Path,
                                                                          monkeypatch) -> None:
    import skinonnx.export.pipeline as pipeline

    seen = {}
    monkeypatch.setattr(pipeline, "quantize_line", lambda onnx, out, data, opts, **kw: seen.setdefault("data", data))
    recorded = tiny_onnx(tmp_path / "m.onnx", extra_meta={"training_data": str(synthetic_data)})
    cli_ok("quantize", "--onnx", recorded)
    assert seen["data"] == str(synthetic_data)
    cli_error("quantize", "--onnx", tiny_onnx(tmp_path / "plain.onnx"),
              says=("`quantize` needs the model's data: pass --data DIR; the model records no training data",))
    monkeypatch.chdir(tmp_path)  # where the default report folder would go
    cli_error("test", "--onnx", tiny_onnx(tmp_path / "gone.onnx", extra_meta={"training_data": str(tmp_path / "x")}),
              says=("`test` needs the model's data: pass --data DIR", f"it names {tmp_path / 'x'}, which is not here"))
    assert not (tmp_path / "reports").exists()


def test_int8_gate_failure_suggests_a_command_that_runs() -> None:
    from skinonnx.export.quantize import GateReport, _gate_failure

    gate = GateReport(split="val", n_images=90, label_agreement=0.944, auc_fp32=0.75, auc_int8=0.751,
                      max_prob_diff=0.05, mean_prob_diff=0.002, min_agreement=0.98, max_auc_change=0.01,
                      threshold=0.5, median_margin=0.1, noise_agreement=1.0)
    retry = "skinonnx quantize --onnx exports/model.onnx --data DIR"
    first = _gate_failure(gate, Path("exports/model.int8.onnx"), (), retry=retry)
    assert f"Try: {retry} --keep-fp32 layer4 " in first
    again = _gate_failure(gate, Path("exports/model.int8.onnx"), ("layer4",), retry=retry)
    assert f"Try: {retry} --keep-fp32 layer4 --keep-fp32 layer3 " in again
    # and the options it names exist on that command
    from skinonnx.cli.export_commands import quantize

    names = {opt for p in quantize.params for opt in p.opts}
    assert {"--onnx", "--data", "--keep-fp32"} <= names


def test_int8_gate_failure_on_refusals_names_it_and_advises_what_helps() -> None:
    # issue 29 item 11: "INT8 accuracy gate failed on 90 val images ();" and advice (--keep-fp32 layer4) that made
    # the out-of-distribution agreement worse
    from skinonnx.export.quantize import GateReport, _gate_failure

    gate = GateReport(split="val", n_images=90, label_agreement=0.99, auc_fp32=0.75, auc_int8=0.751,
                      max_prob_diff=0.05, mean_prob_diff=0.002, min_agreement=0.98, max_auc_change=0.01,
                      threshold=0.5, median_margin=0.1, noise_agreement=1.0, ood_agreement=0.967,
                      ood_noise_agreement=1.0)
    said = _gate_failure(gate, Path("exports/model.int8.onnx"), (), retry="skinonnx quantize --onnx M --data D")
    assert "()" not in said and "(out-of-distribution decisions agree on 96.7% < 98.0%)" in said
    assert "--keep-fp32" not in said.split("Deploy")[-1] and "Try:" not in said and said.endswith("Deploy the fp32 "
                                                                                                  "model.")
    unstable = _gate_failure(dataclasses.replace(gate, ood_noise_agreement=0.95), Path("m.int8.onnx"))
    assert "changes 5.0% of its out-of-distribution decisions under invisible pixel noise" in unstable
    both = _gate_failure(dataclasses.replace(gate, label_agreement=0.9), Path("m.int8.onnx"))
    assert "labels agree on 90.0% < 98.0%; out-of-distribution decisions agree on 96.7%" in both
    assert "reference" not in both and "Try:" not in both  # a stage in fp32 is not known to fix the refusals
    assert "and 100.0% of its out-of-distribution decisions" in gate.text()


def test_explain_warns_about_a_coarse_grid() -> None:
    from skinonnx.explain.run import grid_note

    assert "2x2 grid" in grid_note(64) and ">= 224 px" in grid_note(64)
    assert grid_note(224) is None


def test_training_curves_have_whole_epoch_ticks_and_legends_off_the_data() -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from skinonnx.evaluation.plots import training_curves_figure

    history = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.1 / e, "val_auc": 0.5 + 0.1 * e, "val_acc": 0.6,
                "train_acc": 0.6, "lr": 1e-3} for e in (1, 2, 3)]
    fig = training_curves_figure(history, best_epoch=3)
    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
        legend = ax.get_legend().get_window_extent(renderer)
        assert not legend.overlaps(ax.get_window_extent(renderer))  # below the plot area, never over a curve


def test_model_card_of_a_foreign_onnx_file_claims_only_what_is_true(tmp_path: Path, synthetic_data: Path) -> None:
    bare = tiny_onnx(tmp_path / "bare.onnx", metadata=False)
    out = tmp_path / "report"
    run_cli("test", "--onnx", bare, "--data", synthetic_data, "--output", out, "--image-size", "16", "--mean",
            "0.5,0.5,0.5", "--std", "0.25,0.25,0.25", "--provider", "cpu", "--no-plots", "--bootstrap", "50",
            "--quiet")
    card = (out / "MODEL_CARD.md").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"]["skinonnx_metadata"] is False and summary["model"]["opset"] == "17"
    for claim in ("calibration inside the graph", "preprocessing in the ONNX metadata", "opset ?",
                  "fitted on the validation split", "skinonnx parity --checkpoint"):
        assert claim not in card, claim
    assert "preprocessing given on the command line" in card and "not a skinonnx export; opset 17" in card
    assert "The file records no temperature scaling" in card


def test_zero_width_auc_interval_is_explained_not_reported_as_a_span(tmp_path: Path, synthetic_data: Path) -> None:
    from skinonnx.reporting.model_card import render_model_card

    model = tiny_onnx(tmp_path / "m.onnx")
    run_cli("test", "--onnx", model, "--data", synthetic_data, "--output", tmp_path / "r", "--provider", "cpu",
            "--no-plots", "--bootstrap", "50", "--quiet")
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    summary["ci"]["roc_auc"] = [1.0, 1.0]  # what a perfect demo model gets
    card = render_model_card(summary)
    assert "spans 0.000" not in card and "interval of zero width" in card
    summary["ci"]["roc_auc"] = [0.61, 0.9]
    assert "the ROC AUC interval alone spans 0.290" in render_model_card(summary)
    # class-imbalance handling, as a run's config.json records it, is in the training set-up
    summary["training"]["config"] = {"class_weights": "auto", "class_loss_weights": [0.625, 2.5],
                                     "sampler": "balanced"}
    assert ("| Class imbalance | loss weighted per class (`--class-weights auto`: 0.625, 2.500); class-balanced "
            "sampling (`--sampler balanced`) |") in render_model_card(summary)


def test_refused_calibration_is_in_the_model_card(tmp_path: Path, synthetic_data: Path) -> None:
    from skinonnx.reporting.model_card import render_model_card

    refused = {"temperature": 1.0, "fitted_temperature": 0.06, "refused": "hit its bound (0.05 .. 20.0): ..."}
    model = tiny_onnx(tmp_path / "m.onnx", extra_meta={"calibration": json.dumps(refused)})
    run_cli("test", "--onnx", model, "--data", synthetic_data, "--output", tmp_path / "r", "--provider", "cpu",
            "--no-plots", "--no-ci", "--quiet")
    card = render_model_card(json.loads((tmp_path / "r" / "summary.json").read_text()))
    assert "Temperature scaling was **refused** at training: the fitted T = 0.0600 hit its bound" in card


def test_collect_inputs_refuses_missing_paths_but_skips_empty_globs(tmp_path: Path, images: Path) -> None:
    from skinonnx.data.inputs import collect_inputs
    from skinonnx.errors import SkinOnnxError

    paths, problems = collect_inputs([str(images), str(tmp_path / "*.jpg")])
    assert len(paths) == len(list(images.glob("*.png"))) and problems[0]["problem"] == "glob matched no images"
    with pytest.raises(SkinOnnxError, match=r"not found: .*nope\.jpg"):
        collect_inputs([str(images), str(tmp_path / "nope.jpg")])
    assert np.all([p.exists() for p in paths])


@pytest.mark.parametrize("command, extra, module", [
    (("serve",), "serve", "fastapi"),
    (("audit", "--data", "."), "audit", "cleanvision"),
])
def test_a_missing_optional_part_names_the_extra_to_install(command: tuple[str, ...], extra: str, module: str,
                                                            tmp_path: Path, monkeypatch) -> None:
    """A deployment-only install (`pip install .`) lacks FastAPI and CleanVision: one line, no ImportError."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == module else real(name, *a))
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"not checked before the extra")
    args = (*command, "--onnx", onnx) if command[0] == "serve" else command
    cli_error(*args, says=(f"needs {module}", f"pip install 'skinonnx[{extra}]'"))
