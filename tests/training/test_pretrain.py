"""`pretrain` -> backbone + card; `train --weights BACKBONE`: loading, the staged recipe, bad files, and the check of
the fine-tuning set against the backbone's pretraining images (issue 30)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torchvision

from skinonnx.audit.planted import alter
from skinonnx.data.synthetic import generate_dataset
from skinonnx.hashing import file_sha256
from skinonnx.training.fine_tune import LAYER_GROUPS, lr_factor
from tests.badfiles import cli_error
from tests.conftest import run_cli
from tests.scratch import scratch_dir

FAST = ("--image-size", "32", "--batch-size", "8", "--quiet", "--threads", "1", "--workers", "0", "--compile", "off")


@dataclass(frozen=True)
class Backbone:
    file: Path
    fine_tune_data: Path  # two classes; its test image `planted` is (rotated) among the pretraining images
    planted: Path
    pretraining_data: Path
    runs: Path


@pytest.fixture(scope="module")
def backbone(request: pytest.FixtureRequest) -> Backbone:
    root = scratch_dir(request, "pretrain")
    pre, fine = root / "pre", root / "fine"
    generate_dataset(pre, counts={"train": 9, "val": 4, "test": 2}, size=48, seed=1, progress=False, classes=3)
    generate_dataset(fine, counts={"train": 8, "val": 4, "test": 4}, size=48, seed=2, progress=False)
    planted = sorted((fine / "test" / "malignant").glob("*.png"))[0]
    raw, suffix = alter(planted, "rotated")  # a near copy, not the same bytes: found by the perceptual hash
    (pre / "train" / "benign_brown" / f"copy{suffix}").write_bytes(raw)
    out = root / "bb.pt"
    run_cli("pretrain", "--data", pre, "-o", out, "--epochs", "1", "--name", "pre", "--runs-dir", root / "runs",
            "--licence", "CC BY-NC 4.0", *FAST)
    return Backbone(out, fine, planted, pre, root / "runs")


def _exclude(data: Path, image: Path, where: Path) -> Path:
    where.write_text(f"{image.relative_to(data).as_posix()}\n")
    return where


@pytest.mark.slow
def test_pretrain_writes_the_backbone_and_its_card(backbone: Backbone) -> None:
    state = torch.load(backbone.file, map_location="cpu", weights_only=True)
    reference = torchvision.models.resnet50().state_dict()
    assert set(state) == {k for k in reference if not k.startswith("fc.")}  # the head is left out
    card = json.loads(backbone.file.with_suffix(".card.json").read_text())
    assert card["sha256"] == file_sha256(backbone.file)
    assert card["classes"] == ["benign_brown", "benign_red", "malignant_brown"]
    assert card["malignant"] == ["malignant_brown"]  # read off the class names
    assert card["settings"]["sampler"] == "balanced" and card["settings"]["weights"] == "none"  # the recipe
    assert (card["image_size"], card["epochs"]) == (32, 1)
    assert set(card["validation"]["per_class_auc"]) == set(card["classes"])
    assert 0 <= card["validation"]["balanced_accuracy"] <= 1
    assert card["licence"] == "CC BY-NC 4.0" and "non-commercial" in card["use"]
    images = json.loads(backbone.file.with_suffix(".images.json").read_text())
    assert card["images_sha256"] == file_sha256(backbone.file.with_suffix(".images.json"))
    assert {e["split"] for e in images["images"]} == {"train", "val"}
    assert len(images["images"]) == card["pretraining_images"] == 3 * (9 + 4) + 1  # + the planted copy
    best = torch.load(backbone.runs / "pre" / "weights" / "best.pt", map_location="cpu", weights_only=True)
    assert all(torch.equal(state[k], best["model"][k]) for k in state)


@pytest.mark.slow
def test_from_run_makes_the_same_backbone_without_training(backbone: Backbone, tmp_path: Path) -> None:
    out = tmp_path / "again.pt"
    run_cli("pretrain", "--from-run", backbone.runs / "pre", "-o", out, "--licence", "CC BY-NC 4.0", "--quiet")
    assert file_sha256(out) != "" and json.loads(out.with_suffix(".card.json").read_text())["validation"] == \
        json.loads(backbone.file.with_suffix(".card.json").read_text())["validation"]
    mine, theirs = (torch.load(p, weights_only=True) for p in (out, backbone.file))
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    cli_error("pretrain", "--from-run", backbone.runs / "pre", "-o", out, "--epochs", "3", code=2,
              says=("--epochs would do nothing",))


@pytest.mark.slow
def test_the_leakage_check_refuses_a_test_image_the_backbone_saw(backbone: Backbone, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    error = cli_error("train", "--data", backbone.fine_tune_data, "--weights", backbone.file, "--epochs", "2",
                      "--runs-dir", runs, "--name", "x", *FAST,
                      says=("1 validation/test image(s) are images the backbone bb.pt was pretrained on",
                            f"test/malignant/{backbone.planted.name} = pretraining train/benign_brown/copy",
                            "--allow-leakage"))
    assert "near copy" in error and not (runs / "x").exists()
    run_cli("train", "--data", backbone.fine_tune_data, "--weights", backbone.file, "--epochs", "2", "--runs-dir",
            runs, "--name", "y", "--allow-leakage", "--no-calibrate", *FAST)
    check = json.loads((runs / "y" / "config.json").read_text())["leakage_check"]["pretraining"]
    assert (check["pairs"], check["allowed"], check["by_split"]) == (1, True, {"val": 0, "test": 1})


@pytest.mark.slow
def test_staged_fine_tuning_loads_the_backbone_trains_the_head_then_everything(backbone: Backbone,
                                                                            tmp_path: Path) -> None:
    from skinonnx.training.config import TrainConfig
    from skinonnx.training.loop import fit

    bb = torch.load(backbone.file, map_location="cpu", weights_only=True)
    excluded = _exclude(backbone.fine_tune_data, backbone.planted, tmp_path / "exclude.txt")
    cfg = TrainConfig(data=str(backbone.fine_tune_data), weights=str(backbone.file), epochs=3, head_epochs=2,
                      image_size=32, batch_size=8, runs_dir=str(tmp_path / "runs"), name="ft", progress=False,
                      threads=1, workers=0, compile="off", calibrate=False, exclude_list=str(excluded), lr=1e-3)
    assert cfg.fine_tune == "staged"  # the default for pretrained weights
    fit(cfg, on_epoch=[lambda epoch, _row: epoch == 2])  # stop when the head phase ends
    after_head = torch.load(tmp_path / "runs" / "ft" / "weights" / "last.pt", map_location="cpu", weights_only=True)
    body = after_head["model"]
    assert all(torch.equal(body[k], bb[k]) for k in bb), "the frozen backbone (BatchNorm statistics too) changed"
    assert not torch.equal(body["fc.weight"], torch.zeros_like(body["fc.weight"]))
    lrs = [g["lr"] for g in after_head["optimizer"]["param_groups"]]
    assert max(lrs) / min(lrs) == pytest.approx(100)  # head at --lr, stem and layer1-2 at a hundredth

    fit(cfg, resume=str(tmp_path / "runs" / "ft"))  # epoch 3: everything trains
    last = torch.load(tmp_path / "runs" / "ft" / "weights" / "last.pt", map_location="cpu", weights_only=True)
    changed = {k for k in bb if bb[k].is_floating_point() and not torch.equal(last["model"][k], bb[k])}
    for prefixes, _ in LAYER_GROUPS[1:]:  # every layer group of the backbone moved
        assert any(k.startswith(prefixes) for k in changed), prefixes
    assert not torch.equal(last["model"]["fc.weight"], body["fc.weight"])
    config = json.loads((tmp_path / "runs" / "ft" / "config.json").read_text())
    assert config["backbone"]["sha256"] == file_sha256(backbone.file) and config["fine_tune"] == "staged"
    assert config["backbone"]["card"]["classes"] == ["benign_brown", "benign_red", "malignant_brown"]
    assert config["leakage_check"]["pretraining"]["pairs"] == 0  # the planted image is excluded


def test_layer_groups_cover_resnet50() -> None:
    names = [n for n, _ in torchvision.models.resnet50().named_parameters()]
    factors = {lr_factor(n) for n in names}
    assert factors == {1.0, 0.1, 0.01} and lr_factor("fc.weight") == 1.0 and lr_factor("conv1.weight") == 0.01


def test_staged_is_refused_with_random_init(synthetic_data: Path, tmp_path: Path) -> None:
    cli_error("train", "--data", synthetic_data, "--weights", "none", "--fine-tune", "staged", "--epochs", "2",
              "--runs-dir", tmp_path / "runs", *FAST, says=("--fine-tune staged", "--weights none"))
    cli_error("train", "--data", synthetic_data, "--weights", "none", "--head-epochs", "2", "--epochs", "3",
              "--runs-dir", tmp_path / "runs", *FAST, code=2, says=("--head-epochs is for --fine-tune staged",))


@pytest.mark.parametrize("kind", ["resnet18", "narrow head", "extra layer", "corrupt", "code", "stale card"])
def test_bad_backbone_files_are_refused_naming_the_file(kind: str, synthetic_data: Path, tmp_path: Path) -> None:
    path = tmp_path / "bad.pt"
    r50 = {k: v for k, v in torchvision.models.resnet50().state_dict().items() if not k.startswith("fc.")}
    expected = {
        "resnet18": (lambda: torch.save(torchvision.models.resnet18().state_dict(), path), "head fc.weight"),
        "narrow head": (lambda: torch.save({**r50, "fc.weight": torch.zeros(7, 512)}, path), "takes 2048 features"),
        "extra layer": (lambda: torch.save({**r50, "layer3.6.conv1.weight": torch.zeros(1)}, path),
                        "1 unexpected keys, e.g. layer3.6.conv1.weight"),
        "corrupt": (lambda: path.write_bytes(b"PK\x03\x04 truncated"), "not a weights file"),
        "code": (lambda: torch.save(torch.nn.Linear(2, 2), path), "refused: loading it would import"),
        "stale card": (lambda: (torch.save(r50, path), path.with_suffix(".card.json").write_text(
            json.dumps({"format": "skinonnx-backbone-card", "sha256": "0" * 64}))), "the card is not"),
    }
    write, says = expected[kind]
    write()
    cli_error("train", "--data", synthetic_data, "--weights", path, "--epochs", "2", "--runs-dir", tmp_path / "runs",
              *FAST, says=(str(path), says))
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_missing_keys_are_named(tmp_path: Path) -> None:
    from skinonnx.errors import CheckpointError
    from skinonnx.training.model import backbone_weights

    state = {k: v for k, v in torchvision.models.resnet50().state_dict().items() if not k.startswith("layer4.")}
    with pytest.raises(CheckpointError, match=r"missing keys, e\.g\. layer4\.0\.conv1\.weight"):
        backbone_weights(state, tmp_path / "x.pt")
    state = torchvision.models.resnet50().state_dict()
    state["layer1.0.conv1.weight"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError, match=r"layer1\.0\.conv1\.weight \[3, 3\], expected \[64, 64, 1, 1\]"):
        backbone_weights(state, tmp_path / "x.pt")


@pytest.mark.slow
def test_a_copied_backbone_keeps_its_card_checks(backbone: Backbone, tmp_path: Path) -> None:
    """The card travels with the file: both copied, the check still runs (and the images file is required)."""
    for suffix in (".pt", ".card.json"):
        shutil.copy(backbone.file.with_suffix(suffix), tmp_path / f"moved{suffix}")
    cli_error("train", "--data", backbone.fine_tune_data, "--weights", tmp_path / "moved.pt", "--epochs", "2",
              "--runs-dir", tmp_path / "runs", *FAST, says=("moved.images.json: missing",))


def test_the_model_card_names_the_backbone_and_the_check() -> None:
    from skinonnx.data.pretraining import backbone_card_lines

    assert backbone_card_lines(None, None) == []  # ImageNet or random init: nothing to say
    card = {"data": {"path": "/d/ham10000/index.csv"}, "classes": list("abcdefg"), "image_size": 64, "epochs_run": 6,
            "validation": {"macro_auc": 0.91}, "licence": "CC BY-NC 4.0"}
    lines = backbone_card_lines({"path": "/b/ham.pt", "sha256": "ab" * 32, "card": card, "fine_tune": "staged"},
                                {"checked": True, "pairs": 2, "examples": ["test/x.jpg = pretraining y.jpg"],
                                 "pretraining_images": 8546})
    assert "`/d/ham10000/index.csv` (7 classes, 64 px, 6 epochs, validation macro AUC 0.910)" in lines[0]
    assert "CC BY-NC 4.0" in lines[0] and "`staged` recipe" in lines[0]
    assert "2 validation/test image(s) were pretraining images" in lines[1] and "test/x.jpg" in lines[1]
    unchecked = backbone_card_lines({"path": "/b/x.pt", "sha256": "cd" * 32, "card": None, "fine_tune": "plain"},
                                    {"checked": False, "reason": "x.card.json not found"})
    assert "no card beside the file" in unchecked[0] and "not done (x.card.json not found)" in unchecked[1]
