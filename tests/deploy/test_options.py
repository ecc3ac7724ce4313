"""Options of `test`, `predict` and `explain`: one name per meaning (old spellings warn and still work), the report
folder never replaces another model's report, and the run hint follows export's rule."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.badfiles import cli_error, cli_ok, tiny_onnx
from tests.conftest import run_cli


def _images(root: Path) -> list[Path]:
    return sorted((root / "test").rglob("*.png"))[:2]


def test_renamed_options_still_work_and_say_their_new_name(tmp_path: Path, synthetic_data: Path) -> None:
    model = tiny_onnx(tmp_path / "m.onnx")
    out = cli_ok("test", "--onnx", model, "--data", synthetic_data, "--out", tmp_path / "r", "--no-ci", "--quiet")
    assert "warning: --out is renamed --output" in out and (tmp_path / "r" / "summary.json").is_file()
    refused = run_cli("predict", "--onnx", model, *_images(synthetic_data), "--cam", tmp_path / "cams",
                      "--engine", "ray", expect=2).output
    assert "warning: --cam is renamed --cam-dir" in refused and "--cam-dir runs on the local engine only" in refused
    refused = run_cli("predict", "--onnx", model, *_images(synthetic_data), "--workers", "2", expect=2).output
    assert "warning: --workers is renamed --ray-workers" in refused
    assert "--ray-workers and --gpus-per-worker need --engine ray" in refused
    refused = run_cli("predict", "--onnx", model, *_images(synthetic_data), "--gpus-per-worker", "1", expect=2).output
    assert "need --engine ray" in refused  # accepted only where it does something
    cli_error("predict", "--onnx", model, *_images(synthetic_data), "-o", tmp_path / "p.csv", "--cam-dir",
              tmp_path / "cams", says=("has no 'cam' output",))
    help_text = run_cli("predict", "--help").output
    assert "--cam-dir" in help_text and "--ray-workers" in help_text
    assert "--cam " not in help_text and "--workers " not in help_text  # the old spellings are hidden


def test_two_models_of_one_name_get_two_report_folders(tmp_path: Path, synthetic_data: Path, monkeypatch) -> None:
    first, second = tmp_path / "a" / "model.onnx", tmp_path / "b" / "model.onnx"
    first.parent.mkdir()
    second.parent.mkdir()
    tiny_onnx(first)
    tiny_onnx(second, extra_meta={"note": "another model"})
    monkeypatch.chdir(tmp_path)
    for model in (first, second):
        cli_ok("test", "--onnx", model, "--data", synthetic_data, "--no-ci", "--no-plots", "--no-html", "--quiet")
    folders = sorted(p.name for p in (tmp_path / "reports").iterdir())
    assert len(folders) == 2 and all(f.startswith("model-") for f in folders)
    shas = {json.loads((tmp_path / "reports" / f / "summary.json").read_text())["model"]["sha256"][:8] for f in folders}
    assert {f.split("-")[1] for f in folders} == shas
    shared = tmp_path / "reports" / folders[0]
    other = second if json.loads((shared / "summary.json").read_text())["model"]["path"] == str(first) else first
    cli_error("test", "--onnx", other, "--data", synthetic_data, "-o", shared, "--no-ci", "--quiet", code=2,
              says=("holds the report of another model", "--overwrite"))
    cli_ok("test", "--onnx", other, "--data", synthetic_data, "-o", shared, "--overwrite", "--no-ci", "--no-plots",
           "--no-html", "--quiet")


def test_confidence_sets_the_level_of_every_interval(tmp_path: Path, synthetic_data: Path) -> None:
    model = tiny_onnx(tmp_path / "m.onnx")
    summaries = {}
    for level in ("0.8", "0.95"):
        out = cli_ok("test", "--onnx", model, "--data", synthetic_data, "-o", tmp_path / level, "--confidence", level,
                     "--bootstrap", "200", "--no-plots", "--no-html", "--quiet")
        assert f"{float(level):.0%} CI" in out
        summaries[level] = json.loads((tmp_path / level / "summary.json").read_text())
    assert summaries["0.8"]["bootstrap"]["confidence"] == 0.8
    narrow, wide = summaries["0.8"]["ci"]["roc_auc"], summaries["0.95"]["ci"]["roc_auc"]
    assert wide[0] <= narrow[0] <= narrow[1] <= wide[1] and wide[1] - wide[0] > narrow[1] - narrow[0]


def test_a_failed_test_leaves_no_report_folder(tmp_path: Path, synthetic_data: Path) -> None:
    model = tiny_onnx(tmp_path / "m.onnx", classes=("nevus", "melanoma"))  # the data's classes differ
    cli_error("test", "--onnx", model, "--data", synthetic_data, "-o", tmp_path / "r", "--quiet",
              says=("differ from the model's",))
    assert not (tmp_path / "r").exists()


def _run(runs: Path, name: str, *, cv: bool = False, when: float) -> Path:
    run = runs / name
    marker = run / "cv.json" if cv else run / "weights" / "best.pt"
    marker.parent.mkdir(parents=True)
    marker.write_text("{}")
    os.utime(marker, (when, when))
    return run


def test_the_run_hint_names_the_run_export_would_take(tmp_path: Path, synthetic_data: Path) -> None:
    """A CV run newer than the model's single run is what `export` takes, so the hint names it (and vice versa)."""
    runs = tmp_path / "my-runs"
    single = _run(runs, "single", when=1_000_000)
    cv = _run(runs, "cv", cv=True, when=2_000_000)
    model = tiny_onnx(tmp_path / "m.onnx", extra_meta={"training_run_dir": str(single)})
    out = cli_ok("test", "--onnx", model, "--data", synthetic_data, "--runs-dir", runs, "-o", tmp_path / "r",
                 "--no-ci", "--no-plots", "--no-html", "--quiet")
    assert f"note: the newest run is {cv};" in out
    os.utime(single / "weights" / "best.pt", (3_000_000, 3_000_000))
    model = tiny_onnx(tmp_path / "m2.onnx", extra_meta={"training_run_dir": str(cv)})
    out = cli_ok("test", "--onnx", model, "--data", synthetic_data, "--runs-dir", runs, "-o", tmp_path / "r2",
                 "--no-ci", "--no-plots", "--no-html", "--quiet")
    assert f"note: the newest run is {single};" in out
    assert "note:" not in cli_ok("test", "--onnx", model, "--data", synthetic_data, "-o", tmp_path / "r3",
                                 "--runs-dir", tmp_path / "empty", "--no-ci", "--quiet")


def test_explain_looks_for_the_newest_run_under_runs_dir(tmp_path: Path, synthetic_data: Path) -> None:
    runs = tmp_path / "elsewhere"
    (runs / "r1" / "weights").mkdir(parents=True)
    (runs / "r1" / "config.json").write_text("{}")
    cli_error("explain", *_images(synthetic_data), "--runs-dir", runs, "--quiet",
              says=(f"no run with weights/best.pt under {runs}",))
    cli_error("explain", *_images(synthetic_data), "--checkpoint", "r1", "--runs-dir", runs, "--quiet",
              says=(f"checkpoint not found: {runs / 'r1' / 'weights' / 'best.pt'}",))


def test_the_layout_chosen_is_printed(tmp_path: Path, synthetic_data: Path) -> None:
    out = cli_ok("test", "--onnx", tiny_onnx(tmp_path / "m.onnx"), "--data", synthetic_data, "-o", tmp_path / "r",
                 "--no-ci", "--no-plots", "--no-html", "--quiet")
    assert f"data {synthetic_data}: split-imagefolder layout" in out


def test_interval_options_are_refused_without_intervals(tmp_path: Path, synthetic_data: Path) -> None:
    """--confidence, --ci-seed and --bootstrap tune the intervals that --no-ci turns off: refused, not ignored."""
    model = tiny_onnx(tmp_path / "m.onnx")
    for command in ("test", "compare"):
        models = [model] if command == "test" else [model, model]
        onnx_args = ["--onnx", model] if command == "test" else [str(m) for m in models]
        for option, value in (("--confidence", "0.9"), ("--ci-seed", "3"), ("--bootstrap", "50")):
            refused = run_cli(command, *onnx_args, "--data", synthetic_data, "--no-ci", option, value,
                              expect=2).output
            assert f"{option} tune the confidence intervals, which --no-ci turns off" in refused, refused


def test_test_finds_the_model_run_under_runs_dir_when_the_recorded_folder_moved(tmp_path: Path) -> None:
    from skinonnx.reporting.provenance import find_run_dir

    moved = tmp_path / "elsewhere" / "runs" / "r1"
    moved.mkdir(parents=True)
    meta = {"training_run_dir": str(tmp_path / "gone" / "runs" / "r1")}
    assert find_run_dir(meta) is None
    assert find_run_dir(meta, runs_dir=moved.parent) == moved
    assert find_run_dir(meta, explicit=tmp_path) == tmp_path
