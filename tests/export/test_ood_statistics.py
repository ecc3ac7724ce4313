"""The image-statistics part of ``ood_score`` (export/ood_statistics.py): it refuses what a colour-blind feature
distance accepts, and ONNX Runtime computes the statistics exactly as PyTorch does (docs/SAFETY.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from skinonnx.data.preprocessing import Preprocessing

PREP = Preprocessing.for_size(32)


class LuminanceNet(nn.Module):
    """A ResNet-shaped model (``avgpool`` feeding ``fc``) that sees only the grey level of the image: its
    pooled features of a greyscale copy equal those of the colour original, so a feature distance alone
    cannot tell them apart."""

    def __init__(self, prep: Preprocessing) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.register_buffer("std", torch.tensor(prep.std).reshape(1, 3, 1, 1))
        self.register_buffer("mean", torch.tensor(prep.mean).reshape(1, 3, 1, 1))
        self.register_buffer("grey", torch.tensor([0.299, 0.587, 0.114]).reshape(1, 3, 1, 1))
        self.conv = nn.Conv2d(1, 16, 5, padding=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grey = ((x * self.std + self.mean) * self.grey).sum(1, keepdim=True)
        return self.fc(self.avgpool(torch.relu(self.conv(grey))).flatten(1))


@pytest.fixture(scope="module")
def fitted(synthetic_data: Path):
    from skinonnx.data.layouts import discover
    from skinonnx.export.ood import fit_single

    found = discover(synthetic_data, write_split_file=False)
    model = LuminanceNet(PREP).eval()
    return model, fit_single(model, found.split("train"), found.split("val"), PREP), found


def _grey_and_flat(paths: list[Path], folder: Path) -> tuple[list[Path], list[Path]]:
    grey = []
    for p in paths:
        grey.append(folder / f"grey-{p.name}")
        Image.open(p).convert("L").convert("RGB").save(grey[-1])
    flat = folder / "flat-pink.png"
    Image.new("RGB", (64, 64), (240, 170, 180)).save(flat)
    return grey, [flat]


def _parts_and_scores(model: nn.Module, fit, paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    from skinonnx.export.ood import _parts, _PlainLogits, wrapper_scores

    parts = _parts(_PlainLogits(model), model, fit.score, [str(p) for p in paths], PREP, 10**8)
    base = _PlainLogits(model)
    hooks = fit.attach(base, [model])
    try:
        scores = wrapper_scores(base, [str(p) for p in paths], PREP)
    finally:
        hooks.remove()
    return parts, scores


def test_statistics_refuse_greyscale_and_flat_images_the_feature_distance_accepts(fitted, tmp_path: Path) -> None:
    model, fit, found = fitted
    originals = [Path(s.path) for s in found.split("test")]
    grey, flat = _grey_and_flat(originals, tmp_path)
    scales = fit.record["parts"]["scales"]
    parts, scores = _parts_and_scores(model, fit, originals + grey + flat)
    n = len(originals)
    feature_alone = parts[:, 0] / scales[0] <= fit.threshold
    # the model is blind to colour: the greyscale copies have (almost) the originals' features and feature part
    np.testing.assert_allclose(parts[n:2 * n, 0], parts[:n, 0], rtol=0.05, atol=0.05)
    accepted_by_features = feature_alone[n:2 * n]
    assert accepted_by_features.sum() >= n // 2, parts[:, 0] / scales[0]
    # ... yet every greyscale copy and the flat image are refused: the image statistics see them
    assert np.all(scores[n:] > fit.threshold), scores[n:]
    assert np.all(parts[n:, 1] / scales[1] > fit.threshold)
    # while most real (colour) test images pass, and the graph's score is the max of the scaled parts
    assert np.mean(scores[:n] <= fit.threshold) >= 0.75, scores[:n]
    np.testing.assert_allclose(scores, np.max(parts / np.asarray(scales), 1), rtol=1e-5)
    assert fit.record["image_statistics"]["n"] == len(found.split("train"))


def test_statistics_are_the_same_in_onnx_runtime_and_under_the_ood_node_names(fitted, tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort

    from skinonnx.deploy.contract import keeps_float32
    from skinonnx.export.ood import _PlainLogits, preprocessed_batches
    from skinonnx.export.ood_statistics import STATISTICS, ImageStatistics

    model, fit, found = fitted
    grey, flat = _grey_and_flat([Path(s.path) for s in found.split("val")][:4], tmp_path)
    paths = [str(s.path) for s in found.split("test")] + [str(p) for p in grey + flat]
    batch = np.concatenate([b for _, b in preprocessed_batches(paths, PREP)])

    stats_file = tmp_path / "statistics.onnx"
    module = ImageStatistics(PREP).eval()
    torch.onnx.export(module, (torch.zeros(2, 3, 32, 32),), str(stats_file), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["statistics"], dynamic_axes={"input": {0: "batch"}})
    got = ort.InferenceSession(str(stats_file), providers=["CPUExecutionProvider"]).run(None, {"input": batch})[0]
    with torch.no_grad():
        want = module(torch.from_numpy(batch)).numpy()
    assert got.shape == (len(paths), len(STATISTICS))
    # float32 round-off (ORT's mean of a flat image is ~1e-6 off zero) enters log(x + 1/255) magnified 255x
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(got[:-1], want[:-1], rtol=1e-5, atol=1e-5)  # all but the flat image: to round-off

    # the whole head in a traced model: same ood_score, every statistics node named ood/...
    base = _PlainLogits(model)
    hooks = fit.attach(base, [model])
    graph = tmp_path / "model.onnx"
    try:
        torch.onnx.export(base, (torch.zeros(2, 3, 32, 32),), str(graph), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits", "ood_score"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}, "ood_score": {0: "batch"}})
        with torch.no_grad():
            want = base(torch.from_numpy(batch))[-1].numpy()
    finally:
        hooks.remove()
    got = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"]).run(["ood_score"],
                                                                                  {"input": batch})[0]
    # (the feature part of this 16-feature toy network whitens near-singular directions: a looser tolerance)
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=1e-6)
    nodes = onnx.load(str(graph)).graph.node
    log_nodes = [n.name for n in nodes if n.op_type == "Log"]  # only the statistics take logarithms
    assert log_nodes and all(keeps_float32(n) and n.lstrip("/").startswith("ood/") for n in log_nodes), log_nodes


def test_near_ood_set_has_every_kind_from_the_given_lesions(synthetic_data: Path, tmp_path: Path) -> None:
    from skinonnx.data.near_ood import KINDS, write_near_ood_images

    sources = sorted((synthetic_data / "val").rglob("*.png"))[:2]
    paths = write_near_ood_images(tmp_path, sources, size=48)
    assert {p.name.split("-", 1)[0] for p in paths} == set(KINDS)
    grey = np.asarray(Image.open(tmp_path / f"greyscale-{sources[0].stem}.png"))
    assert grey.shape == (48, 48, 3) and np.all(grey[..., 0] == grey[..., 1]) and np.all(grey[..., 1] == grey[..., 2])
    original = np.asarray(Image.open(sources[0]).convert("RGB").resize((48, 48)), np.float64)
    blurred = np.asarray(Image.open(tmp_path / f"blurred-{sources[0].stem}.png"), np.float64)
    assert np.abs(np.diff(blurred, axis=1)).mean() < 0.5 * np.abs(np.diff(original, axis=1)).mean()
