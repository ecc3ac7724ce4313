"""The safety sections of the `test` report: attributes looked up by path, ITA groups, the card, HTML and CSV."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from PIL import Image

from skinonnx.data.attributes import path_key, read_attributes_csv
from skinonnx.errors import DataError, SkinOnnxError
from skinonnx.reporting import safety


def _rows(tmp_path, n: int) -> list[dict]:
    rows = []
    for i in range(n):
        path = tmp_path / "img" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        # light skin (L* ~ 80, yellowish) for the first half, tan-ish for the rest; a dark lesion in the middle
        skin = (235, 205, 180) if i < n // 2 else (170, 120, 80)
        arr = np.full((48, 48, 3), skin, np.uint8)
        arr[16:32, 16:32] = (60, 40, 30)
        Image.fromarray(arr).save(path)
        rows.append({"path": str(path)})
    return rows


def test_attributes_csv_groups_and_missing(tmp_path) -> None:
    rows = _rows(tmp_path, 4)
    (tmp_path / "attrs.csv").write_text("path,sex,age\nimg/0.png,male,30\nimg/1.png,female,\nimg/2.png,male,55\n")
    table = read_attributes_csv(tmp_path / "attrs.csv")
    values, _, order = safety.group_values(rows, "sex", table)
    assert values == ["male", "female", "male", "missing"] and order is None  # img/3 has no row
    safety.check_columns(["sex", "ita"], ["sex", "age"])
    with pytest.raises(SkinOnnxError, match=r"no such column.*sex, age"):
        safety.check_columns(["site"], ["sex", "age"])
    (tmp_path / "bad.csv").write_text("file,sex\na.png,male\n")
    with pytest.raises(DataError, match="'path' column"):
        read_attributes_csv(tmp_path / "bad.csv")


def test_ita_groups_are_estimates(tmp_path) -> None:
    rows = _rows(tmp_path, 4)
    values, how, order = safety.group_values(rows, "ita", {})
    assert order[:2] == ("very light", "light") and "estimate" in how
    assert values[0] == values[1] != values[2] == values[3]
    assert values[0] in ("very light", "light") and values[2] in ("tan", "brown", "intermediate")


def _summary(tmp_path) -> dict:
    y = np.array([1] * 12 + [0] * 12 + [1] * 3 + [0] * 12)
    p = np.array([0.9] * 12 + [0.1] * 12 + [0.2] * 3 + [0.6] * 12)
    rows = [{"path": f"/x/{i}.png"} for i in range(len(y))]
    groups = {path_key(r["path"]): {"site": "back" if i < 24 else "face"} for i, r in enumerate(rows)}
    return {"selective": safety.selective_block(y, p, 0.5, rows, None),
            "subgroups": safety.subgroup_blocks(y, p, 0.5, rows, ["site"], groups, bootstrap=100, seed=0,
                                                confidence=0.95),
            "bootstrap": {"resamples": 100}}


def test_card_html_csv_and_terminal_show_every_group(tmp_path) -> None:
    s = _summary(tmp_path)
    face = s["subgroups"][0]["groups"][1]
    assert face["group"] == "face" and face["too_small"]  # 3 positives
    assert "specificity" in face["below_overall"]  # all 12 negatives wrong there
    card = "\n".join(safety.model_card_lines(s))
    assert "## Selective classification" in card and "## Subgroups" in card
    assert "| \\|p - threshold\\| | " in card  # a pipe inside a cell is escaped
    assert "| face (too small) | 15 (3 / 12) | too small | 0.000 [0.000, 0.000] ▼" in card
    page = safety.html_section(s)
    assert page.startswith('<section id="safety">') and 'class="below"' in page and "face" in page
    table = list(csv.DictReader(io.StringIO(safety.subgroups_csv(s["subgroups"]))))
    spec_face = next(r for r in table if r["group"] == "face" and r["metric"] == "specificity")
    assert spec_face["below_overall"] == "1" and spec_face["value"] == "0.000000"
    sens_face = next(r for r in table if r["group"] == "face" and r["metric"] == "sensitivity")
    assert sens_face["value"] == "" and sens_face["not_shown_because"] == "fewer than 10 positives"
    lines = "\n".join(safety.terminal_lines(s))
    assert "AURC" in lines and "BELOW OVERALL: " in lines and "(too small)" in lines


def test_files_written(tmp_path) -> None:
    s = _summary(tmp_path)
    files = safety.write_safety_files(tmp_path, s)
    assert files == [safety.RISK_COVERAGE_PNG, safety.SUBGROUPS_CSV]
    assert (tmp_path / safety.RISK_COVERAGE_PNG).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = _rows(tmp_path, 3)
    assert safety.write_image_statistics(tmp_path, rows) == ["image_statistics.csv"]
    assert (tmp_path / "image_statistics.csv").read_text().count("\n") == 4


def test_safety_summary_and_by_parsing(tmp_path) -> None:
    assert safety.parse_by(["sex,age", "ita", " sex "]) == ["sex", "age", "ita"]
    y, p = np.array([1, 0, 1, 0]), np.array([0.9, 0.2, 0.3, 0.6])
    rows = [{"path": f"/x/{i}.png"} for i in range(4)]
    plain = safety.safety_summary(y, p, 0.5, rows)
    assert plain["subgroups"] is None and plain["selective"]["deployed"]["coverage"] == 1.0
    table = {path_key(r["path"]): {"sex": "f" if i < 2 else "m"} for i, r in enumerate(rows)}
    by_sex = safety.safety_summary(y, p, 0.5, rows, by=["sex"], attributes=table, bootstrap=0)
    assert [g["group"] for g in by_sex["subgroups"][0]["groups"]] == ["f", "m"]
    with pytest.raises(SkinOnnxError, match="no such column"):
        safety.safety_summary(y, p, 0.5, rows, by=["age"], attributes=table)


def test_missing_ood_scores_count_as_refused() -> None:
    y, p = np.array([1, 0, 1, 0]), np.array([0.9, 0.2, 0.3, 0.6])
    rows = [{"path": f"/x/{i}.png", "ood_score": s} for i, s in enumerate([0.1, 0.2, float("nan"), 0.3])]
    block = safety.selective_block(y, p, 0.5, rows, ood_threshold=1.0)
    assert block["deployed"]["n_accepted"] == 3 and "ood_score" in block["curves"]


def test_model_card_states_measured_skin_type_coverage(tmp_path) -> None:
    """With `--by ita` the card's skin-type limitation lists the groups it measured and those too small,
    and says the tone is estimated; without it, the card says coverage is unknown."""
    from skinonnx.reporting.model_card import _skin_type_coverage

    rows = _rows(tmp_path, 24)
    y = np.array([1, 0] * 12)
    p = np.where(y == 1, 0.8, 0.3)
    blocks = safety.subgroup_blocks(y, p, 0.5, rows, ["ita"], {}, bootstrap=50, seed=0, confidence=0.95)
    line = _skin_type_coverage({"subgroups": blocks})
    groups = blocks[0]["groups"]
    assert "estimated from the image" in line and "coverage unknown" not in line
    assert all(f"{g['group']} {g['n']}" in line for g in groups) and sum(g["n"] for g in groups) == 24
    assert "Skin type coverage unknown" in _skin_type_coverage({"subgroups": []})


def test_a_one_class_group_says_so_and_the_gain_ci_shows_its_sign() -> None:
    # issue 29 item 12: a group of 56 images without negatives read "too small"; the gain CI printed
    # [0.000, 0.149] beside "better than random"
    y = np.array([1] * 20 + [0] * 20 + [1] * 56)
    p = np.array([0.9] * 20 + [0.1] * 20 + [0.7] * 56)
    rows = [{"path": f"/x/{i}.png"} for i in range(len(y))]
    groups = {path_key(r["path"]): {"site": "back" if i < 40 else "nail"} for i, r in enumerate(rows)}
    s = {"subgroups": safety.subgroup_blocks(y, p, 0.5, rows, ["site"], groups, bootstrap=0, seed=0,
                                             confidence=0.95), "bootstrap": None}
    nail = s["subgroups"][0]["groups"][1]
    assert nail["n"] == 56 and nail["one_class"] and nail["not_shown"]["specificity"] == "one class only: no negatives"
    card = "\n".join(safety.model_card_lines(s))
    assert "| nail (one class only) | 56 (56 / 0) | 1.000 | one class only | one class only |" in card
    assert "(too small)" not in card
    assert "(one class only)" in "\n".join(safety.terminal_lines(s)) and "(one class only)" in safety.html_section(s)
    curve = {"aurc": 0.1, "aurc_ci": [0.05, 0.15], "e_aurc": 0.05, "random_aurc": 0.2, "oracle_aurc": 0.01,
             "gain_over_random_ci": [0.00021, 0.149]}
    sel = {"curves": {"threshold_distance": curve}, "deployed": {"rule": "r", "coverage": 1.0, "sensitivity": 1.0,
                                                                 "specificity": 1.0}}
    line = next(x for x in safety.terminal_lines({"selective": sel}) if "AURC" in x)
    assert "better than random abstention (gain CI [0.00021, 0.149])" in line
