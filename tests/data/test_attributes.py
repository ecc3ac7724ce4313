"""Attributes for subgroup reports: an index CSV's extra columns reach the samples; an attributes CSV by path."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from skinonnx.data.attributes import attribute_columns, attribute_table, path_key, read_attributes_csv
from skinonnx.data.layouts import discover
from skinonnx.errors import DataError


def _images(root: Path, n: int) -> list[str]:
    names = []
    for i in range(n):
        name = f"img/{i}.png"
        (root / "img").mkdir(exist_ok=True)
        Image.new("RGB", (16, 16), (i * 20, 100, 100)).save(root / name)
        names.append(name)
    return names


def test_index_csv_extra_columns_reach_the_samples(tmp_path: Path) -> None:
    names = _images(tmp_path, 4)
    (tmp_path / "index.csv").write_text("path,label,split,sex,age_approx\n" + "".join(
        f"{n},{'malignant' if i % 2 else 'benign'},test,{'male' if i < 2 else ''},{30 + i}\n"
        for i, n in enumerate(names)))
    data = discover(tmp_path / "index.csv")
    samples = data.split("test")
    assert dict(samples[0].attributes) == {"sex": "male", "age_approx": "30"}
    assert samples[2].attributes["sex"] == ""
    table = attribute_table(samples)
    assert attribute_columns([table]) == ["sex", "age_approx"]
    (tmp_path / "extra.csv").write_text(f"path,site,sex\n{names[0]},back,female\n")
    merged = attribute_table(samples, tmp_path / "extra.csv")
    assert merged[path_key(tmp_path / names[0])] == {"sex": "female", "age_approx": "30", "site": "back"}
    assert samples[0] == type(samples[0])(samples[0].path, samples[0].label)  # attributes don't change equality


def test_attributes_csv_errors(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("path,sex\nx.png,male\nx.png,female\n")
    with pytest.raises(DataError, match="duplicate path"):
        read_attributes_csv(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text("path,sex\n,male\n")
    with pytest.raises(DataError, match="empty path"):
        read_attributes_csv(tmp_path / "b.csv")
