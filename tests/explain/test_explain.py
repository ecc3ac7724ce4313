"""Grad-CAM: the maths, the geometry back to the source image, and the pointing game on lesions
whose position the generator knows."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from skinonnx.data.preprocessing import Preprocessing
from skinonnx.data.synthetic import CLASSES, make_lesion
from skinonnx.explain.gradcam import CamBatch, GradCam
from skinonnx.explain.pointing_game import MaskIndex, PointingSummary, score_image
from tests.scratch import scratch_dir

from ..conftest import TrainedModel, run_cli

# --- Grad-CAM maths ------------------------------------------------------------------------------


def test_gradcam_equals_the_closed_form_for_a_pooled_linear_head() -> None:
    """With global average pooling and a linear head, d score / d A_k = (w_t,k - w_o,k) / (h w)."""
    from skinonnx.training.model import build_model

    torch.manual_seed(0)
    model = build_model(2, weights="none").eval()
    batch = torch.randn(2, 3, 96, 96)
    acts: list[torch.Tensor] = []
    handle = model.layer4.register_forward_hook(lambda _m, _i, out: acts.append(out.detach()))
    with torch.no_grad():
        logits = model(batch)
    handle.remove()
    a = acts[0]  # (2, 2048, 3, 3)
    for target in (0, 1):
        got = GradCam(model)(batch, target)
        w = model.fc.weight.detach()
        direction = w[target] - w[1 - target]
        expected = torch.relu((direction[None, :, None, None] * a).sum(1)) / (a.shape[2] * a.shape[3])
        np.testing.assert_allclose(got.cams, expected.numpy(), rtol=1e-4, atol=1e-6 * float(expected.abs().max()))
        np.testing.assert_allclose(got.logits, logits.double().numpy(), rtol=1e-5, atol=1e-6)
        assert got.cams.shape == (2, 3, 3)


def test_peaks_are_strongest_cell_centres_and_maps_normalise() -> None:
    cams = np.zeros((3, 2, 3), np.float32)
    cams[0, 0, 2] = 5.0  # row 0, col 2
    cams[1, 1, 0] = 2.0
    batch = CamBatch(cams, np.zeros((3, 2)))
    np.testing.assert_allclose(batch.peaks(96), [[80.0, 24.0], [16.0, 72.0], [16.0, 24.0]])
    norm = batch.normalized()
    assert norm[0].max() == 1.0 and norm[1].max() == 1.0 and not norm[2].any()  # all-zero map stays zero


@pytest.mark.parametrize("size", [(100, 80), (73, 73), (64, 64), (37, 61), (400, 300)])
def test_crop_points_map_back_to_the_source_image(size: tuple[int, int]) -> None:
    prep = Preprocessing.for_size(64)
    w, h = size
    x0, y0 = int(w * 0.55), int(h * 0.4)  # a bright 4x4 block, inside the crop for every size
    pixels = np.zeros((h, w, 3), np.uint8)
    pixels[y0:y0 + 4, x0:x0 + 4] = 255
    crop = np.asarray(prep.center_crop(prep.resize(Image.fromarray(pixels))), np.float64)[..., 0]
    ys, xs = np.nonzero(crop > 0)
    weights = crop[ys, xs]
    cx, cy = (xs + 0.5) @ weights / weights.sum(), (ys + 0.5) @ weights / weights.sum()
    sx, sy = prep.crop_point_to_source(cx, cy, size)
    assert abs(sx - (x0 + 2)) < 0.75 and abs(sy - (y0 + 2)) < 0.75


# --- pointing-game bookkeeping -------------------------------------------------------------------


def test_score_image_and_its_baselines_on_a_known_mask() -> None:
    prep = Preprocessing.for_size(64)  # a 73 x 73 image: no resize, crop at (4, 4)
    mask = np.zeros((73, 73), bool)
    mask[:, :20] = True  # lesion = the 20 left columns
    inside, outside = score_image(prep, (73, 73), mask, (10.0, 30.0)), score_image(prep, (73, 73), mask, (40.0, 30.0))
    assert inside.hit and not outside.hit and not inside.centre_hit
    assert inside.random_rate == pytest.approx(16 / 64)  # crop columns 4..67: 16 of them are lesion
    near = score_image(prep, (73, 73), mask, (23.5, 30.0), tolerance=4.0)
    assert near.hit and near.random_rate == pytest.approx(20 / 64)  # tolerance widens the lesion by 4 columns
    summary = PointingSummary.from_scores([inside, outside], 0.0)
    assert summary.rate == 0.5 and summary.n_images == 2


def test_mask_index_finds_masks_by_stem_and_refuses_ambiguity(tmp_path: Path) -> None:
    for rel in ("a/ISIC_1_segmentation.png", "b/case2.png", "c/dup.png", "d/dup.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (10, 10), 255).save(tmp_path / rel)
    index = MaskIndex(tmp_path)
    assert index.find(Path("x/ISIC_1.jpg")) == tmp_path / "a/ISIC_1_segmentation.png"
    assert index.load(Path("case2.jpg")).all()
    assert index.find(Path("nomask.jpg")) is None
    with pytest.raises(Exception, match=re.escape("2 masks match dup.jpg")):
        index.find(Path("dup.jpg"))


@pytest.mark.slow  # trains (conftest marks every test that needs a training fixture, too)
def test_explain_refuses_a_model_whose_map_is_one_cell(trained: TrainedModel, tmp_path: Path) -> None:
    image = next((trained.data / "test" / "malignant").glob("*.png"))
    out = run_cli("explain", "--checkpoint", trained.checkpoint, image, "-o", tmp_path, "--quiet", expect=1).output
    assert "1x1" in out and "image_size >= 64" in out and "Traceback" not in out


# --- a trained model and lesions away from the centre ---------------------------------------------

GC_SIZE = 80  # layer4 gives a 3 x 3 map (2 x 2 at 64 px cannot point at anything but a quadrant)
GC_COUNTS = {"train": 96, "val": 16, "test": 20}  # per class
GC_EPOCHS = 8
POINTING_TOLERANCE = GC_SIZE * 15 / 224  # the pointing game's usual 15 px at 224 px, scaled


def _has_vignette(pixels: np.ndarray) -> bool:
    corners = [pixels[:3, :3], pixels[:3, -3:], pixels[-3:, :3], pixels[-3:, -3:]]
    return max(float(c.mean()) for c in corners) < 100


def off_centre_lesion(label: str, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic lesion moved into a random quadrant (image and mask shifted together).

    The generator centres its lesions, so a heatmap fixed on the image centre would "point"
    at every one; here the crop centre is off the lesion and the pointing game means something.
    The vacated border is filled by mirroring (hairs and big lesions show mirrored copies, which
    the mirrored mask covers); images with a dark vignette are redrawn, as mirrored corners would
    make dark shapes unlike skin.
    """
    lesion = make_lesion(label, size, rng)
    while _has_vignette(np.asarray(lesion.image)):
        lesion = make_lesion(label, size, rng)
    pad = size // 2
    dx, dy = np.rint((rng.choice([-1, 1], 2) * 0.25 + rng.uniform(-1 / 16, 1 / 16, 2)) * size).astype(int)
    image = np.pad(np.asarray(lesion.image), ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    mask = np.pad(lesion.mask, pad, mode="reflect")
    y0, x0 = pad - dy, pad - dx
    return image[y0:y0 + size, x0:x0 + size], mask[y0:y0 + size, x0:x0 + size]


@pytest.fixture(scope="module")
def off_centre_model(request: pytest.FixtureRequest) -> tuple[Path, Path]:
    """(data root with masks/, best.pt): 80 px, 8 epochs, the `make demo` optimiser settings (~50 s on 2 cores)."""
    root = scratch_dir(request, "offcentre")
    for s, (split, n) in enumerate(GC_COUNTS.items()):
        for c, label in enumerate(CLASSES):
            for i in range(n):
                image, mask = off_centre_lesion(label, GC_SIZE, np.random.default_rng([7, s, c, i]))
                for base, array in ((root, image), (root / "masks", mask.astype(np.uint8) * 255)):
                    path = base / split / label / f"{split}_{label}_{i:04d}.png"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(array).save(path)
    work = scratch_dir(request, "offcentre_work")
    run_cli("train", "--data", root, "--weights", "none", "--epochs", str(GC_EPOCHS),
            "--batch-size", "16", "--lr", "5e-4", "--scheduler", "cosine", "--early-stop", "0",
            "--image-size", str(GC_SIZE), "--name", "gc", "--checkpoint-dir", work / "checkpoints",
            "--runs-dir", work / "runs", "--quiet")
    return root, work / "checkpoints" / "best.pt"


@pytest.mark.slow  # trains (conftest marks every test that needs a training fixture, too)
def test_explain_writes_overlays_that_point_at_the_lesions(off_centre_model: tuple[Path, Path], tmp_path: Path) -> None:
    from skinonnx.explain.run import explain_files
    from skinonnx.overlay import DISPLAY_MIN

    root, checkpoint = off_centre_model
    images = sorted((root / "test" / "malignant").glob("*.png"))
    out = run_cli("explain", "--checkpoint", checkpoint, *images, "-o", tmp_path / "cli", "--masks", root / "masks",
                  "--tolerance", str(POINTING_TOLERANCE), "--quiet").output
    assert f"{len(images)} Grad-CAM overlays for 'malignant'" in out and "pointing game on 20 images" in out
    rows = list(csv.DictReader((tmp_path / "cli" / "explanations.csv").read_text().splitlines()))
    assert [Path(r["path"]).name for r in rows] == [p.name for p in images]
    panel = GC_SIZE * -(-DISPLAY_MIN // GC_SIZE)  # the crop enlarged by a whole factor to >= 256 px
    for row in rows:
        with Image.open(row["overlay"]) as overlay:  # input | heatmap side by side, a caption below
            assert overlay.format == "PNG" and overlay.width == 2 * panel + 8 and overlay.height > panel
        assert row["grid"] == "3x3" and row["peak_on_lesion"] in ("0", "1")
    out = run_cli("explain", "--checkpoint", checkpoint, *images[:2], "-o", tmp_path / "benign", "--class", "benign",
                  "--quiet").output  # the other class: its own map, p(benign) = 1 - p(malignant)
    assert "2 Grad-CAM overlays for 'benign'" in out
    other = list(csv.DictReader((tmp_path / "benign" / "explanations.csv").read_text().splitlines()))
    assert [r["class"] for r in other] == ["benign", "benign"]
    for mine, theirs in zip(other, rows[:2], strict=True):
        assert abs(float(mine["probability"]) + float(theirs["probability"]) - 1) < 1e-5
    assert "is not one of the model's classes" in run_cli("explain", "--checkpoint", checkpoint, images[0], "-o",
                                                           tmp_path / "x", "--class", "nevus", expect=1).output

    strict = explain_files(checkpoint, images, tmp_path / "strict", masks=root / "masks", progress=False).pointing
    result = explain_files(checkpoint, images, tmp_path / "api", masks=root / "masks", tolerance=POINTING_TOLERANCE,
                           progress=False)
    summary = result.pointing
    assert strict is not None and summary is not None and summary.n_images == len(images)
    with_evidence = [e for e in result.explanations if not e.empty]
    rate_with_evidence = float(np.mean([e.hit for e in with_evidence]))
    print(f"\n{strict.text()}\n{summary.text()}\nof the {len(with_evidence)} maps with evidence for 'malignant', "
          f"{rate_with_evidence:.1%} peak on the lesion (tolerance {POINTING_TOLERANCE:.1f} px)")
    # lesions sit in a random quadrant: the crop centre is almost never on one, a random point sometimes
    assert summary.rate >= 0.6 and summary.rate >= max(summary.centre_rate, summary.random_rate) + 0.25
    assert strict.rate >= max(strict.centre_rate, strict.random_rate) + 0.15
    assert len(with_evidence) >= len(images) // 2 and rate_with_evidence >= 0.7


# --- more than two classes: the decided class by default, --class to choose --------------------------------------


def test_gradcam_takes_one_target_per_image_from_the_logits() -> None:
    """A function of the logits picks each image's class; each row is the map a fixed target gives that image."""
    from skinonnx.training.model import build_model

    torch.manual_seed(1)
    model = build_model(4, weights="none").eval()
    batch = torch.randn(3, 3, 64, 64)
    seen: list[np.ndarray] = []

    def pick(logits: np.ndarray) -> list[int]:
        seen.append(logits)
        return [2, 0, 3]

    got = GradCam(model)(batch, pick)
    assert got.targets.tolist() == [2, 0, 3] and np.array_equal(seen[0], got.logits)
    for row, target in enumerate((2, 0, 3)):
        alone = GradCam(model)(batch, target)
        assert alone.targets.tolist() == [target] * 3
        np.testing.assert_allclose(got.cams[row], alone.cams[row], rtol=1e-4, atol=1e-6 * float(alone.cams.max()))


@pytest.mark.slow
def test_explain_a_k_class_model_shows_the_decided_class_unless_told(tmp_path: Path) -> None:
    """Three classes at 64 px (a 2x2 map): with the ONNX export each map is of the file's own label; --class
    picks one class for all; an unknown class is one Error: line."""
    from skinonnx.data.synthetic import generate_dataset
    from skinonnx.deploy.runtime import OnnxClassifier

    data = tmp_path / "data"
    generate_dataset(data, counts={"train": 6, "val": 3, "test": 2}, size=64, seed=4, progress=False, classes=3)
    run_cli("train", "--data", data, "--weights", "none", "--epochs", "1", "--batch-size", "8", "--image-size", "64",
            "--compile", "off", "--workers", "0", "--quiet", "--name", "k3", "--runs-dir", tmp_path / "runs",
            "--malignant", "malignant_brown", "--class-bias", "val")
    checkpoint = tmp_path / "runs" / "k3" / "weights" / "best.pt"
    onnx_path = tmp_path / "k3.onnx"
    run_cli("export", "--checkpoint", checkpoint, "-o", onnx_path, "--no-ood", "--parity-images", "2")
    images = sorted((data / "test").rglob("*.png")) + sorted((data / "val").rglob("*.png"))
    out = run_cli("explain", "--checkpoint", checkpoint, "--onnx", onnx_path, *images, "-o", tmp_path / "decided",
                  "--quiet").output
    assert f"{len(images)} Grad-CAM overlays for each image's decided class" in out
    rows = list(csv.DictReader((tmp_path / "decided" / "explanations.csv").read_text().splitlines()))
    model = OnnxClassifier(onnx_path, "cpu")
    preds = {p.path: p for p in model.predict_files(images)}
    classes = model.contract.classes
    assert [r["class"] for r in rows] == [classes[preds[str(p)].label] for p in images]  # the file's label
    assert [r["prediction"] for r in rows] == [r["class"] for r in rows]  # no OOD head: every image assessed
    for row, path in zip(rows, images, strict=True):  # p(class) from the checkpoint = the file's probability
        assert abs(float(row["probability"]) - preds[str(path)].probabilities[classes.index(row["class"])]) < 1e-4
    alone = run_cli("explain", "--checkpoint", checkpoint, *images, "-o", tmp_path / "alone", "--quiet").output
    assert "predictions use the checkpoint's rule (threshold, class bias)" in alone  # no ONNX file: the same rule
    again = list(csv.DictReader((tmp_path / "alone" / "explanations.csv").read_text().splitlines()))
    assert [r["class"] for r in again] == [r["class"] for r in rows]
    chosen = run_cli("explain", "--checkpoint", checkpoint, "--onnx", onnx_path, *images[:3], "-o",
                     tmp_path / "chosen", "--class", "benign_red", "--quiet").output
    assert "3 Grad-CAM overlays for 'benign_red'" in chosen
    rows = list(csv.DictReader((tmp_path / "chosen" / "explanations.csv").read_text().splitlines()))
    assert [r["class"] for r in rows] == ["benign_red"] * 3
    bad = run_cli("explain", "--checkpoint", checkpoint, images[0], "-o", tmp_path / "x", "--class", "mel",
                  expect=1).output
    assert bad.strip().splitlines()[-1].startswith("Error: --class 'mel' is not one of the model's classes")
    assert "Traceback" not in bad and not (tmp_path / "x" / "explanations.csv").exists()
