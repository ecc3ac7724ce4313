"""`train` checks its splits for leakage first; exclusions (list or index-CSV column) act on the audit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from skinonnx.audit.planted import alter
from skinonnx.data.layouts import discover
from skinonnx.deploy.info import read_header
from tests.conftest import run_cli

TRAIN = ("--weights", "none", "--epochs", "1", "--batch-size", "8", "--image-size", "32", "--quiet", "--threads", "1",
         "--workers", "0", "--compile", "off", "--no-calibrate")


def _leaky(generated: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    data = tmp_path / "data"
    shutil.copytree(generated, data)
    source = sorted((data / "train" / "benign").glob("*.png"))[2]
    raw, suffix = alter(source, "rotated")
    copy = data / "test" / "benign" / f"turned{suffix}"
    copy.write_bytes(raw)
    return data, source, copy


def test_train_refuses_leakage_naming_the_pair(generated: Path, tmp_path: Path) -> None:
    data, source, copy = _leaky(generated, tmp_path)
    result = run_cli("train", "--data", data, "--name", "x", "--runs-dir", tmp_path / "runs", *TRAIN, expect=1)
    assert "Error: 1 validation/test image(s) duplicate training images" in result.output
    assert f"test/benign/{copy.name} = train/benign/{source.name}" in result.output
    assert "--allow-leakage" in result.output
    assert not (tmp_path / "runs" / "x").exists()  # nothing left behind


def test_allow_leakage_trains_and_records_the_pairs(generated: Path, tmp_path: Path) -> None:
    data, _, _ = _leaky(generated, tmp_path)
    result = run_cli("train", "--data", data, "--name", "x", "--runs-dir", tmp_path / "runs", "--allow-leakage",
                     *TRAIN)
    assert "warning: training despite leakage" in result.output
    config = json.loads((tmp_path / "runs" / "x" / "config.json").read_text())
    assert config["allow_leakage"] is True
    assert config["leakage_check"]["pairs"] == 1 and config["leakage_check"]["allowed"] is True


def test_the_audits_exclusion_list_lets_train_go_on(generated: Path, tmp_path: Path) -> None:
    data, _, copy = _leaky(generated, tmp_path)
    run_cli("audit", "--data", data, "-o", tmp_path / "audit", "--quiet", "--exit-zero")
    assert (tmp_path / "audit" / "exclude.txt").read_text().splitlines()[1:] == [f"test/benign/{copy.name}"]
    run_cli("train", "--data", data, "--name", "x", "--runs-dir", tmp_path / "runs", "--exclude-list",
            tmp_path / "audit" / "exclude.txt", *TRAIN)
    config = json.loads((tmp_path / "runs" / "x" / "config.json").read_text())
    assert config["leakage_check"]["pairs"] == 0 and config["counts"]["test"] == {"benign": 6, "malignant": 6}


def test_an_index_csv_exclude_column(generated: Path, tmp_path: Path) -> None:
    data, _, copy = _leaky(generated, tmp_path)
    rows = ["path,label,split,exclude"]
    for split in ("train", "val", "test"):
        for p in sorted((data / split).glob("*/*")):
            rows.append(f"{p.relative_to(data).as_posix()},{p.parent.name},{split},{'yes' if p == copy else ''}")
    (data / "index.csv").write_text("\n".join(rows) + "\n")
    found = discover(data / "index.csv")
    assert copy not in {s.path for s in found.split("test")} and len(found.split("test")) == 12
    assert any("1 row(s) with exclude set" in note for note in found.notes)
    (data / "index.csv").write_text("\n".join(rows).replace(",yes", ",maybe") + "\n")
    result = run_cli("audit", "--data", data / "index.csv", "-o", tmp_path / "r", expect=1)
    assert "exclude value 'maybe'" in result.output


@pytest.mark.slow
def test_the_runs_exclusions_follow_the_model_into_export_test_and_the_card(generated: Path, tmp_path: Path) -> None:
    # issue 29 item 2: export fitted the OOD threshold on the excluded images and `test` evaluated them
    data, _, copy = _leaky(generated, tmp_path)
    run_cli("audit", "--data", data, "-o", tmp_path / "audit", "--quiet", "--exit-zero")
    listing = tmp_path / "audit" / "exclude.txt"
    val_image = sorted((data / "val" / "malignant").glob("*.png"))[0]
    listing.write_text(listing.read_text() + f"val/malignant/{val_image.name}\n")
    run_cli("train", "--data", data, "--name", "x", "--runs-dir", tmp_path / "runs", "--exclude-list", listing, *TRAIN)
    excluded = {"test": [f"test/benign/{copy.name}"], "val": [f"val/malignant/{val_image.name}"]}
    config = json.loads((tmp_path / "runs" / "x" / "config.json").read_text())
    assert config["exclusions"]["paths"] == excluded and "suggested by `audit`" in config["exclusions"]["lists"][0][
        "reason"]
    onnx_path = tmp_path / "model.onnx"
    out = run_cli("export", "--checkpoint", tmp_path / "runs" / "x" / "weights" / "best.pt", "--output", onnx_path,
                  "--parity-images", "40").output
    assert "parity images" in out
    meta = read_header(onnx_path).metadata
    assert json.loads(meta["training_config"])["exclusions"]["paths"] == excluded
    val_count = len(discover(data).split("val"))
    assert json.loads(meta["ood"])["threshold_fit"]["n"] == val_count - 1  # the excluded val image is not fitted on
    parity = json.loads(onnx_path.with_name("model.onnx.parity.json").read_text())
    assert parity["n_images"] == val_count - 1, parity  # nor checked for parity
    report = tmp_path / "r"
    run_cli("test", "--onnx", onnx_path, "--output", report, "--no-ci", "--no-plots", "--no-html", "--quiet")
    summary = json.loads((report / "summary.json").read_text())
    assert summary["data"]["n_evaluated"] == 12 and summary["data"]["excluded"]["paths"] == excluded
    card = (report / "MODEL_CARD.md").read_text()
    assert "**Excluded from the run:** 2 image(s) left out (1 test, 1 val)" in card and "exclude.txt" in card
    assert "(after the exclusions above)" in card
    # `test --exclude-list` leaves out more on top of the run's own
    extra = tmp_path / "more.txt"
    extra.write_text("# blurry\n" + sorted(p.relative_to(data).as_posix() for p in (data / "test").glob("*/*.png")
                                           if p != copy)[0] + "\n")
    run_cli("test", "--onnx", onnx_path, "--output", tmp_path / "r2", "--exclude-list", extra, "--no-ci",
            "--no-plots", "--no-html", "--quiet")
    summary = json.loads((tmp_path / "r2" / "summary.json").read_text())
    assert summary["data"]["n_evaluated"] == 11 and summary["data"]["excluded"]["n"] == 3
    assert "blurry" in (tmp_path / "r2" / "MODEL_CARD.md").read_text()


def test_files_an_index_csv_does_not_list_are_counted(generated: Path, tmp_path: Path) -> None:
    # issue 29 item 5: `audit` on a folder with index.csv silently ignored images absent from the CSV
    data, _, copy = _leaky(generated, tmp_path)
    files = sorted(p for split in ("train", "val", "test") for p in (data / split).glob("*/*"))
    unlisted = [p for p in files if p.parent.name == "malignant" and p.parent.parent.name == "val"][:2]
    rows = ["path,label,split,exclude"] + [f"{p.relative_to(data).as_posix()},{p.parent.name},"
                                           f"{p.parent.parent.name},{'x' if p == copy else ''}"
                                           for p in files if p not in unlisted]
    (data / "index.csv").write_text("\n".join(rows) + "\n")
    note = ("2 image file(s) in the split folders train/, val/, test/ are not listed in index.csv and are not used: "
            f"{unlisted[0].relative_to(data).as_posix()}, {unlisted[1].relative_to(data).as_posix()}")
    assert any(note in n for n in discover(data).notes)  # the excluded copy is listed, not "unlisted"
    result = run_cli("audit", "--data", data, "-o", tmp_path / "r", "--quiet")
    assert "note: " in result.output and note in result.output
    doc = json.loads((tmp_path / "r" / "audit.json").read_text())
    assert doc["summary"]["images"] == len(files) - 3 and any(note in n for n in doc["data"]["notes"])
