"""`audit` end to end: planted problems in generated data, the report files, exclusions, errors, real data."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skinonnx.audit.planted import plant
from tests.audit.test_label_issues import write_cv_run
from tests.conftest import run_cli


def _planted(generated: Path, tmp_path: Path):
    return plant(generated, tmp_path / "planted", copies_per_alteration=1, flip_fraction=0.05, seed=4)


def test_audit_finds_the_planted_copies_first_and_writes_an_offline_report(generated: Path, tmp_path: Path) -> None:
    planted = _planted(generated, tmp_path)
    out = tmp_path / "report"
    result = run_cli("audit", "--data", planted.root, "-o", out, "--quiet", expect=1)  # a CI gate: leakage fails
    assert "LEAKAGE: 9 pair(s)" in result.output
    assert "found 9 leakage pair(s): exit status 1 (--exit-zero to report only)" in result.output
    assert "Error" not in result.output and "Traceback" not in result.output
    reported = run_cli("audit", "--data", planted.root, "-o", tmp_path / "again", "--quiet", "--exit-zero")
    assert "LEAKAGE: 9 pair(s)" in reported.output and "(--exit-zero: exit status 0)" in reported.output
    doc = json.loads((out / "audit.json").read_text())
    leaks = [p for p in doc["pairs"] if p["leakage"]]
    expected = {(src.relative_to(planted.root).as_posix(), copy.relative_to(planted.root).as_posix())
                for copy, src, _ in planted.copies}
    found = {(p["a"]["path"], p["b"]["path"]) for p in leaks}
    assert found == expected  # recall 1, precision 1 on this set
    assert doc["pairs"][:len(leaks)] == leaks  # leakage first
    assert doc["summary"]["leakage_by_split"] == {"val-train": 0, "test-train": 9}
    assert doc["label_issues"] is None
    # the suggestion drops the test copies (the training original is kept)
    assert sorted(doc["suggested_exclusions"]) == sorted(c for _, c in expected)
    assert (out / "exclude.txt").read_text().splitlines()[1:] == sorted(c for _, c in expected)
    page = (out / "audit.html").read_text()
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # nothing fetched from anywhere
    thumbs = re.findall(r'src="(audit_files/[0-9a-f]{16}\.jpg)"', page)
    flagged = [q["path"] for q in doc["quality"]]  # e.g. an upscaled copy may be blurrier than the rest
    assert len(thumbs) == 18 + len(flagged) and all((out / t).is_file() for t in thumbs)
    assert page.count('class="ex"') == 18 + len(flagged)
    assert set(re.findall(r'data-path="([^"]+)" checked>', page)) == {c for _, c in expected}  # pre-ticked


def test_a_conflicting_copy_and_label_issues_from_a_cv_run(generated: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(generated, data)
    source = sorted((data / "train" / "benign").glob("*.png"))[0]
    Image.open(source).transpose(Image.Transpose.ROTATE_270).save(data / "val" / "malignant" / "turned.png")
    pooled = sorted(p.relative_to(data).as_posix() for split in ("train", "val") for p in (data / split).glob("*/*"))
    rng = np.random.default_rng(0)
    rows = [(rel, rel.split("/")[1], float(np.clip(rng.beta(9, 2) if "malignant" in rel else rng.beta(2, 9), 0, 1)))
            for rel in pooled]
    suspicious = "train/benign/" + sorted((data / "train" / "benign").glob("*.png"))[5].name
    rows = [(r, lab, 0.99 if r == suspicious else p) for r, lab, p in rows]  # a benign label the model calls malignant
    run = write_cv_run(tmp_path / "runs" / "cv5", rows)
    out = tmp_path / "report"
    run_cli("audit", "--data", data, "--run", "cv5", "--runs-dir", tmp_path / "runs", "-o", out, "--quiet", expect=1)
    doc = json.loads((out / "audit.json").read_text())
    (pair,) = doc["pairs"]
    assert pair["leakage"] and pair["conflict"] and pair["b"]["path"] == "val/malignant/turned.png"
    labels = doc["label_issues"]
    assert labels["run"] == str(run) and labels["images"] == len(pooled)
    top = labels["ranked"][0]
    assert top["path"] == suspicious and top["flagged"] and top["suggested"] == "malignant"
    assert "labels differ" in (out / "audit.html").read_text()


def test_label_issues_of_a_k_class_run_find_a_planted_flip(tmp_path: Path) -> None:
    """Four synthetic classes, one label flipped by `plant`; out-of-fold probabilities of a model that knows the
    true classes (every class's column, as `train --folds` writes them), sure of the flipped image's true class:
    cleanlab flags it first and the audit suggests its true class."""
    from skinonnx.data.synthetic import generate_dataset
    from tests.audit.test_label_issues import write_k_class_run

    source = tmp_path / "source"
    generate_dataset(source, counts={"train": 6, "val": 2, "test": 1}, size=32, seed=5, progress=False, classes=4)
    planted = plant(source, tmp_path / "data", copies_per_alteration=0, flip_fraction=0.03, seed=1)
    (flipped,) = planted.flipped
    truth = {p.name: p.parent.name for p in source.rglob("*.png")}
    classes = sorted({*truth.values()})
    pooled = sorted(p.relative_to(planted.root).as_posix() for split in ("train", "val")
                    for p in (planted.root / split).glob("*/*.png"))
    rng = np.random.default_rng(3)
    rows = []
    for rel in pooled:
        p_true = 0.95 if rel == flipped.relative_to(planted.root).as_posix() else rng.beta(8, 2)  # sure of it
        probs = np.full(len(classes), (1 - p_true) / (len(classes) - 1))
        probs[classes.index(truth[Path(rel).name])] = p_true
        rows.append((rel, rel.split("/")[1], list(probs)))
    run = write_k_class_run(tmp_path / "runs" / "cv4", classes, rows)
    out = tmp_path / "report"
    run_cli("audit", "--data", planted.root, "--run", run, "-o", out, "--quiet")
    labels = json.loads((out / "audit.json").read_text())["label_issues"]
    assert labels["images"] == len(pooled) == 32
    top = labels["ranked"][0]
    assert top["path"] == flipped.relative_to(planted.root).as_posix() and top["flagged"]
    assert top["label"] == flipped.parent.name != truth[flipped.name] == top["suggested"]
    assert sum(r["flagged"] for r in labels["ranked"]) == labels["flagged"] >= 1


def test_the_exclusion_list_removes_what_the_audit_found(generated: Path, tmp_path: Path) -> None:
    planted = _planted(generated, tmp_path)
    out = tmp_path / "report"
    run_cli("audit", "--data", planted.root, "-o", out, "--quiet", expect=1)
    result = run_cli("audit", "--data", planted.root, "-o", tmp_path / "again", "--quiet",
                     "--exclude-list", out / "exclude.txt")  # exit 0: the leakage is excluded
    doc = json.loads((tmp_path / "again" / "audit.json").read_text())
    assert doc["summary"]["leakage_pairs"] == 0 and doc["summary"]["images"] == 52
    assert any("excluded 9 image(s)" in n for n in doc["data"]["notes"])
    assert "cache: " in result.output and doc["cache"]["misses"] == 0  # the first audit hashed everything


def test_bad_inputs_are_one_line_errors(generated: Path, tmp_path: Path) -> None:
    result = run_cli("audit", "--data", tmp_path / "nope", "-o", tmp_path / "r", expect=1)
    assert "Error: data path not found" in result.output
    result = run_cli("audit", "--data", generated, "--run", "nope", "--runs-dir", tmp_path, expect=1)
    assert "Error: no run 'nope'" in result.output
    (tmp_path / "single").mkdir()
    result = run_cli("audit", "--data", generated, "--run", tmp_path / "single", "-o", tmp_path / "r", expect=1)
    assert "not a cross-validation run" in result.output and not (tmp_path / "r").exists()
    result = run_cli("audit", "--data", generated, "--exclude-list", tmp_path / "none.txt", expect=1)
    assert "Error: exclusion list not found" in result.output
    assert "--data" in run_cli("audit", expect=2).output


def test_isic_bm_audit(real_data: Path, tmp_path: Path) -> None:
    """What the audit finds in the real set is reported as found (docs/audit.md), and a planted copy is caught."""
    out = tmp_path / "report"
    run_cli("audit", "--data", real_data, "-o", out, "--quiet")
    doc = json.loads((out / "audit.json").read_text())
    assert doc["summary"]["images"] == 564 and doc["summary"]["unreadable"] == 0
    assert doc["summary"]["duplicate_pairs"] == 0  # measured: no pair within 36 bits (the closest distinct: 52)
    planted = plant(real_data, tmp_path / "planted", copies_per_alteration=1, flip_fraction=0.0, seed=2)
    run_cli("audit", "--data", planted.root, "-o", tmp_path / "planted-report", "--quiet", "--exit-zero")  # cached
    doc = json.loads((tmp_path / "planted-report" / "audit.json").read_text())
    assert {(p["a"]["path"], p["b"]["path"]) for p in doc["pairs"]} == {
        (src.relative_to(planted.root).as_posix(), copy.relative_to(planted.root).as_posix())
        for copy, src, _ in planted.copies}
    assert doc["cache"]["misses"] <= 3 * len(planted.copies)  # per copy: its hash, quality record, pixel check


def test_audit_html_in_headless_chromium(generated: Path, tmp_path: Path) -> None:
    from benchmarks.chromium import dump_dom, find_chromium

    if find_chromium() is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium); audit.html not browser-tested")
    planted = _planted(generated, tmp_path)
    out = tmp_path / "report"
    run_cli("audit", "--data", planted.root, "-o", out, "--quiet", "--exit-zero")
    run = dump_dom(out / "audit.html")
    dom = run.stdout
    assert 'data-ready="1"' in dom, run.stderr[-2000:]
    assert "data-errors=" not in dom and run.console_lines() == []  # every thumbnail loaded, nothing refused
    assert re.search(r'<span id="exclude-count">9</span>', dom)  # the script counted the pre-ticked copies
