"""monitor's reference reading and verdict text, without a model (the end-to-end runs are in test_safety_cli.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from skinonnx.data.image_statistics import STATISTICS, write_statistics_csv
from skinonnx.errors import DataError
from skinonnx.monitoring.drift import ks_test
from skinonnx.monitoring.monitor import format_verdict, read_reference


def _report(folder: Path, n: int = 5, *, stats: bool = True, ood: bool = False) -> Path:
    folder.mkdir()
    header = "path,label,probability,prediction,correct" + (",ood_score" if ood else "")
    rows = [f"/x/{i}.png,benign,{0.1 * i:.6f},benign,1" + (f",{i}.0" if ood else "") for i in range(n)]
    (folder / "predictions.csv").write_text("\n".join([header, *rows]) + "\n")
    (folder / "summary.json").write_text(json.dumps({"model": {"sha256": "ab" * 32}}))
    if stats:
        write_statistics_csv(folder / "image_statistics.csv", [f"/x/{i}.png" for i in range(n)],
                             [dict.fromkeys(STATISTICS, float(i)) for i in range(n)])
    return folder


def test_reference_with_and_without_image_statistics(tmp_path: Path) -> None:
    full = read_reference(_report(tmp_path / "a", ood=True), "ab" * 32)
    assert list(full.quantities) == ["probability", "ood_score", *STATISTICS] and full.n == 5
    assert full.quantities["probability"].tolist() == pytest.approx([0, 0.1, 0.2, 0.3, 0.4])
    old = read_reference(_report(tmp_path / "b", stats=False))
    assert list(old.quantities) == ["probability"] and "image_statistics.csv" in old.notes[0]


def test_reference_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no predictions\.csv"):
        read_reference(tmp_path)
    with pytest.raises(DataError, match="another model"):
        read_reference(_report(tmp_path / "a"), "cd" * 32)
    short = _report(tmp_path / "b")
    write_statistics_csv(short / "image_statistics.csv", ["/x/0.png"], [dict.fromkeys(STATISTICS, 1.0)])
    with pytest.raises(DataError, match="inconsistent"):
        read_reference(short)


def test_verdict_text_names_what_moved() -> None:
    rng = np.random.default_rng(0)
    result = ks_test({"probability": rng.random(50), "sharpness": rng.normal(10, 1, 50)},
                     {"probability": rng.random(30), "sharpness": rng.normal(5, 1, 30)})
    verdict = {**result, "n_new": 30, "n_reference": 50, "out_of_distribution": {"n_refused": 3, "share_refused": 0.1,
                                                                                  "ood_threshold": 2.5},
               "notes": ["a note"]}
    text = format_verdict(verdict)
    assert text.startswith("DRIFT: p = ") and "sharpness" in text and "<- moved" in text
    assert "refused as out of distribution: 3 of 30 (10.0%" in text and "note: a note" in text
