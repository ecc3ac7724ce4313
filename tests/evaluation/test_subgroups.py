"""Subgroup tables: grouping rules, too-small groups, flags against the overall value (hand-built cases)."""

from __future__ import annotations

import pytest

from skinonnx.evaluation import subgroups as sg


def test_text_column_keeps_values_and_collects_missing() -> None:
    labels, how = sg.group_labels(["male", "female", "", "NA", " male "])
    assert labels == ["male", "female", "missing", "missing", "male"]
    assert how == "categories as written"


def test_few_numeric_levels_are_kept_many_are_binned() -> None:
    labels, how = sg.group_labels(["1", "2", "6", "2"])
    assert labels == ["1", "2", "6", "2"] and "numeric levels" in how
    ages = [str(a) for a in range(10, 90, 5)]  # 16 distinct ages 10..85
    labels, how = sg.group_labels([*ages, "unknown"])
    # quartile edges of 10..85 step 5: 10, 28.75, 47.5, 66.25, 85
    assert labels[0] == "[10, 28.75)" and labels[4] == "[28.75, 47.5)" and labels[15] == "[66.25, 85]"
    assert labels[-1] == "missing" and "4 quantile bins" in how
    assert sum(lab == "[10, 28.75)" for lab in labels) == 4


def _case():
    # group a: 10 positives found (p .9), 10 negatives right (p .1)
    # group b: 10 positives all missed (p .2), 10 negatives right
    # group c: 3 positives found, 15 negatives right: too small for sensitivity
    y = [1] * 10 + [0] * 10 + [1] * 10 + [0] * 10 + [1] * 3 + [0] * 15
    p = [0.9] * 10 + [0.1] * 10 + [0.2] * 10 + [0.1] * 10 + [0.9] * 3 + [0.1] * 15
    g = ["a"] * 20 + ["b"] * 20 + ["c"] * 18
    return y, p, g


def test_table_sizes_metrics_flags_and_too_small() -> None:
    y, p, g = _case()
    table = sg.subgroup_table(y, p, 0.5, g, column="site", bootstrap=200)
    assert table["overall"]["sensitivity"] == pytest.approx(13 / 23)
    rows = {r["group"]: r for r in table["groups"]}
    assert [r["group"] for r in table["groups"]] == ["a", "b", "c"]
    a, b, c = rows["a"], rows["b"], rows["c"]
    assert (a["n"], a["n_positive"], a["n_negative"], a["too_small"]) == (20, 10, 10, False)
    assert a["metrics"]["sensitivity"] == 1.0 and a["below_overall"] == []
    assert b["metrics"]["sensitivity"] == 0.0 and b["ci"]["sensitivity"] == [0.0, 0.0]
    assert "sensitivity" in b["below_overall"] and "specificity" not in b["below_overall"]
    assert c["too_small"] and c["metrics"]["sensitivity"] is None
    assert c["not_shown"]["sensitivity"] == "fewer than 10 positives"
    assert c["metrics"]["specificity"] == 1.0 and c["metrics"]["roc_auc"] is None  # 15 negatives: shown
    assert c["metrics"]["accuracy"] is None  # needs both classes: in one class it is sensitivity in disguise
    ordered = sg.subgroup_table(y, p, 0.5, g, column="site", bootstrap=0, order=("c", "a"))
    assert [r["group"] for r in ordered["groups"]] == ["c", "a", "b"]


def test_single_class_group_and_no_bootstrap() -> None:
    table = sg.subgroup_table([0] * 12 + [1] * 12, [0.1] * 12 + [0.8] * 12, 0.5, ["x"] * 12 + ["y"] * 12,
                              column="diagnosis", bootstrap=0)
    x = table["groups"][0]
    assert x["n_positive"] == 0 and x["too_small"]
    assert x["metrics"]["specificity"] == 1.0 and x["ci"]["specificity"] is None
    assert x["metrics"]["sensitivity"] is None


def test_length_mismatch() -> None:
    with pytest.raises(ValueError):
        sg.subgroup_table([0, 1], [0.1, 0.2], 0.5, ["a"], column="x")
