"""End to end on the trained 32-px model: `test --by` subgroup and selective sections, `monitor` verdicts."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from tests.conftest import TrainedModel, run_cli
from tests.scratch import scratch_dir


@pytest.fixture(scope="module")
def reference(trained: TrainedModel, request: pytest.FixtureRequest) -> Path:
    """A `test` report with subgroups from an index CSV's extra columns and an attributes CSV, plus ITA."""
    work = scratch_dir(request, "safety")
    index = trained.data / "index_with_attributes.csv"  # inside the data root: paths may not escape it
    images = sorted((trained.data / "test").rglob("*.png")) + sorted((trained.data / "val").rglob("*.png"))
    lines = ["path,label,split,sex,age"]
    for i, path in enumerate(images):
        rel = path.relative_to(trained.data).as_posix()
        lines.append(f"{rel},{path.parent.name},{path.parts[-3]},{'male' if i % 2 else 'female'},{20 + 3 * i}")
    index.write_text("\n".join(lines) + "\n")
    attrs = work / "attributes.csv"
    attrs.write_text("path,site\n" + "".join(f"{p.as_posix()},{'back' if i % 3 else 'face'}\n"
                                              for i, p in enumerate(images)))
    out = work / "report"
    run_cli("test", "--onnx", trained.onnx, "--data", index, "--output", out, "--provider", "cpu", "--bootstrap", "50",
            "--quiet", "--by", "sex,age", "--by", "ita", "--by", "site", "--attributes", attrs)
    return out


@pytest.mark.slow
def test_report_has_selective_and_subgroup_sections(reference: Path) -> None:
    s = json.loads((reference / "summary.json").read_text())
    curve = s["selective"]["curves"]["threshold_distance"]
    n = s["metrics"]["n"]
    assert curve["n"] == n and curve["random_aurc"] == pytest.approx(1 - s["metrics"]["accuracy"])
    assert curve["oracle_aurc"] <= curve["aurc"]
    assert [b["column"] for b in s["subgroups"]] == ["sex", "age", "ita", "site"]
    sex = s["subgroups"][0]
    assert {g["group"] for g in sex["groups"]} == {"female", "male"} and sum(g["n"] for g in sex["groups"]) == n
    assert all(g["too_small"] for g in sex["groups"])  # 12 test images: every group is too small, and shown
    assert "quantile bins" in s["subgroups"][1]["grouping"] and s["subgroups"][2]["estimate"]
    assert sum(g["n"] for g in s["subgroups"][3]["groups"]) == n  # from --attributes, paths outside its folder
    for name in ("risk_coverage.png", "subgroups.csv", "image_statistics.csv"):
        assert (reference / name).is_file(), name
    card = (reference / "MODEL_CARD.md").read_text()
    assert "## Selective classification" in card and "### By estimated ita" in card
    assert 'id="safety"' in (reference / "report.html").read_text()


@pytest.mark.slow
def test_unknown_column_is_refused(trained: TrainedModel, tmp_path: Path) -> None:
    result = run_cli("test", "--onnx", trained.onnx, "--data", trained.data, "--output", tmp_path, "--by", "sex",
                     "--no-ci", "--quiet", expect=1)
    assert "Error: --by sex: no such column" in result.output and "Traceback" not in result.output
    attrs = tmp_path / "a.csv"
    attrs.write_text("path,sex\nx.png,male\n")
    result = run_cli("test", "--onnx", trained.onnx, "--data", trained.data, "--output", tmp_path / "r",
                     "--attributes", attrs, expect=2)
    assert "--attributes is read only for --by" in result.output


def _variants(trained: TrainedModel, folder: Path, change) -> Path:
    folder.mkdir()
    for path in sorted((trained.data / "val").rglob("*.png")):
        change(Image.open(path).convert("RGB")).save(folder / path.name)
    return folder


def _monitor(trained: TrainedModel, reference: Path, out: Path, *inputs: Path, exit_zero: bool = False) -> dict:
    """monitor.json; and, as a CI gate, the exit status: 1 on drift (issue 29 item 7), 0 without or --exit-zero."""
    result = run_cli("monitor", "--onnx", trained.onnx, "--reference", reference, "-o", out, "--json",
                     "--provider", "cpu", *(["--exit-zero"] if exit_zero else []), *inputs, expect=None)
    verdict = json.loads(result.stdout)
    assert result.exit_code == (1 if verdict["drift"] and not exit_zero else 0), result.output
    return verdict


def _cast(img: Image.Image) -> Image.Image:
    arr = np.asarray(img, np.float64) * np.array([1.3, 1.0, 0.7])
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


@pytest.mark.slow
def test_monitor_same_distribution_no_alarm_shifts_alarm(trained: TrainedModel, reference: Path,
                                                         tmp_path: Path) -> None:
    same = _monitor(trained, reference, tmp_path / "same", trained.data / "val")
    assert not same["drift"] and same["p_value"] > 0.05 and same["n_new"] == 12
    assert set(same["quantities"]) >= {"probability", "mean_red", "sharpness"}
    assert (tmp_path / "same" / "drift.png").read_bytes()[:4] == b"\x89PNG"
    cast = _monitor(trained, reference, tmp_path / "cast", _variants(trained, tmp_path / "c", _cast))
    assert cast["drift"] and cast["quantities"]["mean_blue"]["drift"]
    assert _monitor(trained, reference, tmp_path / "cast0", tmp_path / "c", exit_zero=True)["drift"]
    blurred = _variants(trained, tmp_path / "b", lambda im: im.filter(ImageFilter.GaussianBlur(3)))
    blur = _monitor(trained, reference, tmp_path / "blur", blurred)
    assert blur["drift"] and blur["quantities"]["sharpness"]["drift"]
    import skimage.data

    photos = tmp_path / "photos"
    photos.mkdir()
    for i, name in enumerate(("astronaut", "coffee", "chelsea", "rocket", "cat", "immunohistochemistry")):
        img = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        for j, box in enumerate(((0, 0, 200, 200), (100, 100, 300, 300))):
            img.crop(box).resize((64, 64)).save(photos / f"{i}_{j}.png")
    other = _monitor(trained, reference, tmp_path / "other", photos)
    assert other["drift"] and other["p_value"] < 0.01


@pytest.mark.slow
def test_monitor_reads_old_reports_and_refuses_wrong_ones(trained: TrainedModel, reference: Path,
                                                          tmp_path: Path) -> None:
    old = tmp_path / "old"
    old.mkdir()
    for name in ("predictions.csv", "summary.json"):
        (old / name).write_bytes((reference / name).read_bytes())
    verdict = _monitor(trained, old, tmp_path / "o", trained.data / "val")
    assert set(verdict["quantities"]) == {"probability", "ood_score"}  # no image statistics in an old report
    assert any("image_statistics.csv" in note for note in verdict["notes"])
    summary = json.loads((old / "summary.json").read_text())
    summary["model"]["sha256"] = "0" * 64
    (old / "summary.json").write_text(json.dumps(summary))
    result = run_cli("monitor", "--onnx", trained.onnx, "--reference", old, "-o", tmp_path / "x",
                     trained.data / "val", expect=1)
    assert "made with another model" in result.output
    result = run_cli("monitor", "--onnx", trained.onnx, "--reference", tmp_path / "x", "-o", tmp_path / "y",
                     trained.data / "val", expect=1)
    assert "no predictions.csv" in result.output
    with open(reference / "image_statistics.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == json.loads((reference / "summary.json").read_text())["metrics"]["n"]
