"""The ``ood_score`` output: the Mahalanobis fit against a hand computation, the exported graph against PyTorch,
its variants, and refusals of far out-of-distribution images in predict and test (docs/SAFETY.md)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from skinonnx.deploy.contract import DECISION_OUTPUTS, OOD_OUTPUT, OOD_REFUSAL
from skinonnx.export.ood import fit_gaussians, fit_threshold
from tests.conftest import TrainedModel, run_cli
from tests.scratch import scratch_dir


def _explicit(features: np.ndarray, means: np.ndarray, precision: np.ndarray, k: int) -> np.ndarray:
    """min_c (f - mu_c)^T P (f - mu_c) / k, written out."""
    return np.min([[float((f - m) @ precision @ (f - m)) / k for m in means] for f in features], axis=1)


def test_mahalanobis_score_is_the_distance_under_the_shrunk_shared_covariance() -> None:
    from sklearn.covariance import LedoitWolf

    rng = np.random.default_rng(0)
    d = 40  # more dimensions than images per class: the sample covariance alone would be singular
    x = np.r_[rng.normal(0, 1, (15, d)), rng.normal(2, 1, (15, d))] * np.linspace(0.5, 3, d)
    y = np.r_[np.zeros(15, int), np.ones(15, int)]
    fit = fit_gaussians(x, y, "ledoit_wolf")
    means = np.stack([x[y == 0].mean(0), x[y == 1].mean(0)])
    cov = LedoitWolf(assume_centered=True).fit(x - means[y]).covariance_
    new = rng.normal(1, 2, (7, d))
    np.testing.assert_allclose(fit.score(new), _explicit(new, means, np.linalg.inv(cov), d), rtol=1e-8)
    assert 0 < fit.shrinkage < 1 and fit.components == d and fit.n_per_class == [15, 15]

    pca = fit_gaussians(x, y, "pca:5")  # only the 5 leading directions of the pooled within-class covariance
    values, vectors = np.linalg.eigh(np.cov((x - means[y]).T, ddof=2))
    top = vectors[:, -5:] / np.sqrt(values[-5:])
    np.testing.assert_allclose(pca.score(new), _explicit(new, means, top @ top.T, 5), rtol=1e-6)


def test_threshold_accepts_at_least_the_stated_share() -> None:
    scores = np.arange(1, 101, dtype=float)  # 100 validation images
    t = fit_threshold(scores, 0.95)
    assert t == pytest.approx(95.0, rel=1e-4) and np.mean(scores <= t) >= 0.95 and np.mean(scores <= t - 1) < 0.95
    with pytest.raises(Exception, match="--ood-accept"):
        fit_threshold(scores, 1.0)


def test_schema_keeps_the_output_and_its_threshold_together() -> None:
    from skinonnx.deploy.schema import validate

    base = {"skinonnx_schema_version": "1", "classes": '["benign", "malignant"]', "positive_class": "malignant",
            "positive_index": "1", "decision_threshold": "0.5", "temperature": "1.0", "input_name": "input",
            "input_layout": "NCHW", "image_size": "32", "resize_size": "37", "resize_policy":
            "shorter_side_then_center_crop", "interpolation": "bilinear", "mean": "[0.5, 0.5, 0.5]",
            "std": "[0.2, 0.2, 0.2]", "channel_order": "RGB", "pixel_scale": "1/255"}
    names = json.dumps(["logits", "probabilities", "cam", OOD_OUTPUT])
    assert validate({**base, "output_names": names, "ood_threshold": "3.5", "ood": "{}"}) == []
    assert any("go together" in p for p in validate({**base, "output_names": names}))
    assert any("go together" in p for p in validate({**base, "output_names": '["logits", "probabilities"]',
                                                     "ood_threshold": "3.5"}))
    assert validate({**base, "output_names": json.dumps(["logits", OOD_OUTPUT, "probabilities"]),
                     "ood_threshold": "1"})  # only last


def test_far_ood_set_has_photos_and_generated_images(tmp_path: Path) -> None:
    from PIL import Image

    from skinonnx.data.far_ood import write_far_ood_images

    paths = write_far_ood_images(tmp_path, size=32)
    kinds = {p.name.split("-", 1)[0] for p in paths}
    assert kinds == {"photo", "generated"} and {"photo-astronaut.png", "photo-coffee.png"} <= {p.name for p in paths}
    assert all(Image.open(p).mode == "RGB" for p in paths)  # grey photographs become RGB


# --------------------------------------------------------------------------- exported models (the session model)


@pytest.fixture(scope="module")
def far_ood(request: pytest.FixtureRequest) -> list[Path]:
    from skinonnx.data.far_ood import write_far_ood_images

    return write_far_ood_images(scratch_dir(request, "far_ood"), size=96, kinds=("photo",))


@pytest.mark.slow
def test_graph_score_is_the_pytorch_mahalanobis_score(trained: TrainedModel) -> None:
    """The session export carries ood_score by default; it equals the maximum of the feature distance computed
    from PyTorch's pooled features and of the image-statistics distance, each divided by the scale the metadata
    records, with the same fits (refitted here: the fits are deterministic)."""
    from skinonnx.data.layouts import discover
    from skinonnx.data.preprocessing import Preprocessing
    from skinonnx.deploy.runtime import OnnxClassifier
    from skinonnx.export.ood import data_splits, features_of, fit_gaussians, statistics_of
    from skinonnx.export.ood_statistics import fit_statistics
    from skinonnx.training.checkpoint import load_checkpoint, model_from_checkpoint

    clf = OnnxClassifier(trained.onnx, "cpu")
    assert clf.has_ood and clf.contract.output_names[-5:] == (OOD_OUTPUT, *DECISION_OUTPUTS)
    record = json.loads(clf.metadata["ood"])
    assert record["method"] == "mahalanobis" and record["fit"]["split"] == "train"
    state = load_checkpoint(trained.checkpoint)
    model = model_from_checkpoint(state).eval()
    prep = Preprocessing.from_dict(state["preprocessing"])
    train, val, _ = data_splits(trained.data, 0)
    kept, feats = features_of(model, [s.path for s in train], prep)
    label = {str(s.path): s.label for s in train}
    fit = fit_gaussians(feats, [label[p] for p in kept], record["covariance"])
    statistics = fit_statistics(statistics_of([s.path for s in train], prep)[1])
    scales = record["parts"]["scales"]

    def expected(paths: list) -> np.ndarray:
        parts = [fit.score(features_of(model, paths, prep)[1]), statistics.score(statistics_of(paths, prep)[1])]
        return np.max(np.stack(parts, 1) / np.asarray(scales), 1)

    test = [str(s.path) for s in discover(trained.data, write_split_file=False).split("test")]
    got = np.array([p.ood_score for p in clf.predict_files(test)])
    np.testing.assert_allclose(got, expected(test), rtol=1e-4, atol=1e-5)
    # the threshold accepts the stated share of validation images
    assert np.mean(expected([s.path for s in val]) <= clf.ood_threshold) >= record["threshold_fit"]["accept"]


@pytest.mark.slow
def test_photos_are_refused_far_more_often_than_lesions(trained: TrainedModel, far_ood: list[Path]) -> None:
    from skinonnx.data.layouts import discover
    from skinonnx.deploy.runtime import OnnxClassifier

    clf = OnnxClassifier(trained.onnx, "cpu")
    lesions = [s.path for s in discover(trained.data, write_split_file=False).split("test")]
    refused_photos = np.mean([not p.in_distribution for p in clf.predict_files(far_ood)])
    refused_lesions = np.mean([not p.in_distribution for p in clf.predict_files(lesions)])
    assert refused_photos >= 0.6 and refused_photos >= refused_lesions + 0.4, (refused_photos, refused_lesions)


@pytest.mark.slow
def test_predict_reports_refused_images_as_not_assessed(trained: TrainedModel, far_ood: list[Path],
                                                        tmp_path: Path) -> None:
    import csv

    from skinonnx.deploy.runtime import OnnxClassifier

    clf = OnnxClassifier(trained.onnx, "cpu")
    photo = next(p for p in far_ood if not next(clf.predict_files([p])).in_distribution)
    lesion = sorted((trained.data / "test").rglob("*.png"))[0]
    out = tmp_path / "pred.csv"
    result = run_cli("predict", "--onnx", trained.onnx, photo, lesion, "-o", out, "--quiet")
    assert f"1 {OOD_REFUSAL}" in result.output
    rows = {Path(r["path"]).name: r for r in csv.DictReader(out.open())}
    refused = rows[photo.name]
    assert refused["prediction"] == OOD_REFUSAL and refused["in_distribution"] == "False"
    assert float(refused["ood_score"]) > clf.ood_threshold  # probabilities stay for auditing, not as a label
    kept = rows[lesion.name]
    assert kept["prediction"] in ("benign", "malignant") or kept["in_distribution"] == "False"


@pytest.mark.slow
def test_variants_carry_the_score_and_no_ood_leaves_it_out(trained: TrainedModel, far_ood: list[Path]) -> None:
    from skinonnx.deploy.runtime import OnnxClassifier

    out = trained.workdir / "ood-variants" / "model.onnx"
    result = run_cli("export", "--checkpoint", trained.checkpoint, "-o", out, "--data", trained.data,
                     "--parity-images", "4", "--embed-preprocessing", "--fp16", "--ood-accept", "0.9")
    assert "✓ ood_score" in result.output
    fp32 = OnnxClassifier(out, "cpu")
    assert json.loads(fp32.metadata["ood"])["threshold_fit"]["accept"] == 0.9
    files = [*far_ood[:4], *sorted((trained.data / "val").rglob("*.png"))[:4]]
    want = np.array([p.ood_score for p in fp32.predict_files(files)])
    for variant in (out.with_name("model.uint8.onnx"), out.with_name("model.fp16.onnx")):
        clf = OnnxClassifier(variant, "cpu")
        assert clf.has_ood and clf.ood_threshold == fp32.ood_threshold
        got = np.array([p.ood_score for p in clf.predict_files(files)])
        assert np.all(np.isfinite(got))
        np.testing.assert_allclose(got, want, rtol=1e-2 if "fp16" in variant.name else 1e-4)
    plain = trained.workdir / "ood-variants" / "plain.onnx"
    run_cli("export", "--checkpoint", trained.checkpoint, "-o", plain, "--data", trained.data, "--parity-images",
            "2", "--no-ood")
    clf = OnnxClassifier(plain, "cpu")
    assert not clf.has_ood and clf.ood_threshold is None and "ood_threshold" not in clf.metadata
    assert next(clf.predict_files(files[:1])).in_distribution is True  # no score: every image is assessed


@pytest.mark.slow
def test_test_reports_refusals_beside_headline_metrics_on_all_images(trained: TrainedModel, far_ood: list[Path],
                                                                     tmp_path: Path) -> None:
    """Far-OOD photos added to the test split: the headline metrics stay on all images, summary.json's ``ood``
    counts the refusals and gives the metrics on the accepted ones."""
    import csv
    import shutil

    data = tmp_path / "data"
    shutil.copytree(trained.data, data)
    for i, photo in enumerate(far_ood[:6]):  # labelled as lesions, as a mixed-up upload would be
        shutil.copy(photo, data / "test" / ("benign" if i % 2 else "malignant") / photo.name)
    out = tmp_path / "report"
    result = run_cli("test", "--onnx", trained.onnx, "--data", data, "--output", out, "--quiet", "--bootstrap", "50",
                     "--no-plots", "--no-html")
    summary = json.loads((out / "summary.json").read_text())
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    refused = [r["path"] for r in rows if r["in_distribution"] == "False"]
    ood = summary["ood"]
    assert summary["metrics"]["n"] == len(rows) == 18 and ood["n"] == 18  # headline: all images
    assert ood["n_refused"] == len(refused) and sorted(ood["refused"]) == sorted(refused)
    assert sum(Path(p).name in {f.name for f in far_ood[:6]} for p in refused) >= 4  # the photos are refused
    assert ood["metrics_accepted"]["n"] == 18 - len(refused) and ood["expected_share_refused"] == 0.05
    assert f"{len(refused)} of 18 images refused" in result.output
