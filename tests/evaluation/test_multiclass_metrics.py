"""K-class metrics against scikit-learn, their bootstrap intervals, and the confusion-matrix figure."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from scipy.special import softmax
from sklearn import metrics as skm

from skinonnx.evaluation.metrics import binary_metrics, bootstrap_ci
from skinonnx.evaluation.multiclass_metrics import (
    confusion_matrix,
    evaluate_multiclass,
    isic2017_indices,
    malignant_probability,
    multiclass_bootstrap_ci,
    multiclass_metrics,
)
from skinonnx.evaluation.plots import plot_confusion

ISIC2017 = ["melanoma", "nevus", "seborrheic_keratosis"]
HAM = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


def _case(n: int, k: int, seed: int, prior: list[float] | None = None):
    rng = np.random.default_rng(seed)
    y = rng.choice(k, size=n, p=prior)
    logits = 1.4 * np.eye(k)[y] + rng.normal(size=(n, k))
    logits[: n // 10] = np.round(logits[: n // 10], 1)  # some tied scores
    probs = softmax(logits, axis=1)
    return y, probs, probs.argmax(1)


@pytest.mark.parametrize(("classes", "seed"), [(ISIC2017, 0), (HAM, 1), (["a", "b"], 2)])
def test_k_class_metrics_equal_scikit_learn(classes: list[str], seed: int) -> None:
    k = len(classes)
    y, p, pred = _case(700, k, seed)
    m = multiclass_metrics(y, p, pred, classes)
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred), abs=1e-12)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
    assert m["macro_auc"] == pytest.approx(np.mean([skm.roc_auc_score(y == c, p[:, c]) for c in range(k)]), abs=1e-12)
    if k > 2:
        assert m["macro_auc"] == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr", average="macro"), abs=1e-12)
    recall = skm.recall_score(y, pred, average=None)
    cm = skm.confusion_matrix(y, pred)
    assert m["confusion"] == cm.tolist()
    np.testing.assert_allclose(m["confusion_normalised"], skm.confusion_matrix(y, pred, normalize="true"), atol=1e-12)
    for c, name in enumerate(classes):
        per = m["per_class"][name]
        assert per["n"] == int(np.sum(y == c))
        assert per["auc"] == pytest.approx(skm.roc_auc_score(y == c, p[:, c]), abs=1e-12)
        assert per["sensitivity"] == pytest.approx(recall[c], abs=1e-12)
        tn = cm.sum() - cm[c].sum() - cm[:, c].sum() + cm[c, c]
        assert per["specificity"] == pytest.approx(tn / (cm.sum() - cm[c].sum()), abs=1e-12)


def test_isic2017_part3_scores_exist_where_its_classes_do() -> None:
    y, p, pred = _case(400, 3, 3)
    m = multiclass_metrics(y, p, pred, ISIC2017)
    mel, sk = skm.roc_auc_score(y == 0, p[:, 0]), skm.roc_auc_score(y == 2, p[:, 2])
    assert m["isic2017"] == pytest.approx({"melanoma_auc": mel, "seborrheic_keratosis_auc": sk,
                                           "mean_auc": (mel + sk) / 2})
    assert isic2017_indices(["Melanoma", "nevus", "Seborrheic Keratosis"]) == (0, 2)
    assert isic2017_indices(["mel", "nv", "sk"]) == (0, 2)
    assert "isic2017" not in multiclass_metrics(y, p, pred, ["mel", "nv", "bkl"])  # no SK: no Part 3 score


def test_a_class_absent_from_the_truth_is_left_out_like_scikit_learn() -> None:
    y, p, pred = _case(300, 4, 4)
    keep = y != 3
    y, p, pred = y[keep], p[keep], pred[keep]
    m = multiclass_metrics(y, p, pred, list("abcd"))
    with pytest.warns(UserWarning):  # scikit-learn warns about the predicted class absent from y_true
        assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert np.isnan(m["per_class"]["d"]["auc"]) and np.isnan(m["per_class"]["d"]["sensitivity"])
    assert m["macro_auc"] == pytest.approx(np.mean([skm.roc_auc_score(y == c, p[:, c]) for c in range(3)]))
    assert m["confusion_normalised"][3] is None and m["per_class"]["d"]["n"] == 0


def test_the_malignancy_group_gets_every_binary_metric() -> None:
    y, p, pred = _case(500, 7, 5)
    group = [0, 1, 4]  # akiec, bcc, mel
    m = multiclass_metrics(y, p, pred, HAM, malignant=group, threshold=0.4)
    truth = np.isin(y, group).astype(int)
    score = p[:, group].sum(1)
    assert m["malignant"] == binary_metrics(truth, score, 0.4)
    assert m["malignant"]["roc_auc"] == pytest.approx(skm.roc_auc_score(truth, score))
    np.testing.assert_array_equal(malignant_probability(p, [1]), p[:, 1])  # two classes: the positive column


def test_bootstrap_intervals_bracket_the_estimate_and_are_deterministic() -> None:
    y, p, pred = _case(600, 3, 6)
    ci = multiclass_bootstrap_ci(y, p, pred, ISIC2017, n_resamples=300, seed=7, malignant=[0], threshold=0.3)
    again = multiclass_bootstrap_ci(y, p, pred, ISIC2017, n_resamples=300, seed=7, malignant=[0], threshold=0.3)
    assert ci == again
    m = multiclass_metrics(y, p, pred, ISIC2017)
    for name in ("accuracy", "balanced_accuracy", "macro_auc"):
        assert ci[name][0] < m[name] < ci[name][1]
    for cls in ISIC2017:
        for metric in ("auc", "sensitivity", "specificity"):
            lo, hi = ci["per_class"][cls][metric]
            assert lo < m["per_class"][cls][metric] < hi and hi - lo < 0.3
    assert ci["isic2017"]["mean_auc"][0] < m["isic2017"]["mean_auc"] < ci["isic2017"]["mean_auc"][1]
    binary = bootstrap_ci(np.isin(y, [0]).astype(int), p[:, 0], 0.3, n_resamples=300, seed=7)
    assert ci["malignant"]["roc_auc"] == list(binary["roc_auc"])


def test_bootstrap_resamples_keep_the_class_counts() -> None:
    """A stratified resample keeps every class's count, so a class's sensitivity interval is made of that class's
    own images: with every image of class 0 decided right, its sensitivity never moves."""
    y, p, pred = _case(200, 3, 8)
    pred = np.where(y == 0, 0, pred)
    ci = multiclass_bootstrap_ci(y, p, pred, ["x", "y", "z"], n_resamples=200, seed=0)
    assert ci["per_class"]["x"]["sensitivity"] == [1.0, 1.0]
    assert ci["per_class"]["y"]["sensitivity"][0] < ci["per_class"]["y"]["sensitivity"][1]


def test_evaluate_multiclass_without_bootstrap_and_bad_input() -> None:
    y, p, pred = _case(50, 3, 9)
    assert evaluate_multiclass(y, p, pred, ISIC2017, bootstrap=0)["ci"] is None
    with pytest.raises(ValueError, match=r"class indices 0\.\.2"):
        multiclass_metrics(np.append(y[:-1], 3), p, pred, ISIC2017)
    with pytest.raises(ValueError, match="columns for 4 classes"):
        multiclass_metrics(y, p, pred, list("abcd"))
    with pytest.raises(ValueError, match="need its threshold"):
        multiclass_metrics(y, p, pred, ISIC2017, malignant=[0])
    assert confusion_matrix([0, 1, 2, 2], [0, 2, 2, 1], 3).tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 1]]


def test_confusion_figure_draws_k_classes() -> None:
    y, _, pred = _case(300, 7, 10)
    png = plot_confusion([("test", confusion_matrix(y, pred, 7).tolist())], HAM)
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.width > 500 and image.height > 500
    two = Image.open(io.BytesIO(plot_confusion([("a", [[5, 1], [2, 4]]), ("b", [[6, 0], [1, 5]])], ["b", "m"])))
    assert two.width > 2 * two.height * 0.8  # two panels side by side
