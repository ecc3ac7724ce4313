"""Bad model files: checkpoints that are not ours or carry code, corrupt or foreign ONNX files, mismatched classes."""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from skinonnx.errors import CheckpointError
from skinonnx.training.checkpoint import FORMAT, load_checkpoint

from ..badfiles import cli_error, cli_ok, make_imagefolder, rgb_pattern, tiny_onnx, write_tiny_pngs
from ..conftest import TrainedModel

# --- checkpoints ------------------------------------------------------------------------------


class CodeOnLoad:
    """Unpickling this runs ``os.mkdir(marker)``: a stand-in for any code a hostile .pt file could run."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def _text(p: Path) -> Path:
    p.write_text("this is a README, not a model\n")
    return p


def _random_bytes(p: Path) -> Path:
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return p


def _empty(p: Path) -> Path:
    p.write_bytes(b"")
    return p


def _plain_pickle(p: Path) -> Path:
    import pickle

    p.write_bytes(pickle.dumps({"weights": [1, 2, 3]}, protocol=4))  # pickle.dump, not torch.save
    return p


def _plain_zip(p: Path) -> Path:
    with zipfile.ZipFile(p, "w") as archive:
        archive.writestr("data.txt", "zip, but not a torch file")
    return p


def _bare_tensor(p: Path) -> Path:
    torch.save(torch.zeros(3), p)
    return p


def _foreign_state_dict(p: Path) -> Path:
    torch.save({"conv1.weight": torch.zeros(2, 3, 1, 1)}, p)  # a state dict from some other tool
    return p


def _marker_without_weights(p: Path) -> Path:
    torch.save({"format": FORMAT, "format_version": 1, "classes": ["benign", "malignant"]}, p)
    return p


def _future_format(p: Path) -> Path:
    torch.save({"format": FORMAT, "format_version": 99}, p)
    return p


NOT_CHECKPOINTS: list[tuple[str, Callable[[Path], Path], str]] = [
    ("text file", _text, "not a checkpoint"),
    ("random bytes", _random_bytes, "not a checkpoint"),
    ("empty file", _empty, "not a checkpoint"),
    ("zip that is not torch", _plain_zip, "not a checkpoint"),
    ("plain pickle", _plain_pickle, "not a checkpoint"),
    ("bare tensor", _bare_tensor, "not a skinonnx checkpoint"),
    ("foreign state dict", _foreign_state_dict, "not a skinonnx checkpoint"),
    ("marker but no weights", _marker_without_weights, "checkpoint lacks model, positive_index, preprocessing"),
    ("newer format", _future_format, "format 99 is not supported"),
]
CASES = [(b, w) for _, b, w in NOT_CHECKPOINTS]
IDS = [n for n, _, _ in NOT_CHECKPOINTS]


@pytest.mark.parametrize(("builder", "says"), CASES, ids=IDS)
def test_export_refuses_a_file_that_is_not_a_checkpoint(tmp_path: Path, builder, says) -> None:
    ckpt = builder(tmp_path / "model.pt")
    out = tmp_path / "out" / "model.onnx"
    cli_error("export", "--checkpoint", ckpt, "-o", out, says=(str(ckpt), says))
    assert not out.exists()


@pytest.mark.parametrize(("builder", "says"), CASES, ids=IDS)
def test_resume_refuses_a_last_pt_that_is_not_a_checkpoint(tmp_path: Path, builder, says) -> None:
    (tmp_path / "ck").mkdir()
    builder(tmp_path / "ck" / "last.pt")
    cli_error("train", "--resume", "--checkpoint-dir", tmp_path / "ck", "--quiet", says=("last.pt", says))


def test_parity_refuses_a_file_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    ckpt = _text(tmp_path / "notes.pt")
    cli_error("parity", "--checkpoint", ckpt, "--onnx", tiny_onnx(tmp_path / "m.onnx"), says=("not a checkpoint",))


def test_missing_checkpoint_says_how_to_get_one(tmp_path: Path) -> None:
    cli_error("export", "--checkpoint", tmp_path / "nope.pt", "-o", tmp_path / "m.onnx",
              says=("checkpoint not found", "skinonnx train"))
    cli_error("train", "--resume", "--checkpoint-dir", tmp_path / "empty", says=("checkpoint not found",))


@pytest.fixture
def code_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    """A .pt whose unpickling would create ``marker``; proven live by loading a copy unsafely."""
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "format_version": 1, "model": {}, "payload": CodeOnLoad(marker)}, evil)
    probe = tmp_path / "probe"
    torch.save({"payload": CodeOnLoad(probe)}, tmp_path / "probe.pt")
    torch.load(tmp_path / "probe.pt", weights_only=False)  # what an unsafe loader would do
    assert probe.is_dir(), "the payload must really run code when unpickled unsafely"
    return evil, marker


def test_checkpoint_with_pickled_code_is_refused_and_never_runs(code_checkpoint, tmp_path: Path) -> None:
    evil, marker = code_checkpoint
    with pytest.raises(CheckpointError, match=r"refused: loading it would import posix\.mkdir, which is code"):
        load_checkpoint(evil)
    message = cli_error("export", "--checkpoint", evil, "-o", tmp_path / "m.onnx",
                        says=("refused", "weights_only=True"))
    assert "weights_only=False" not in message  # never advise the unsafe way
    cli_error("parity", "--checkpoint", evil, "--onnx", tiny_onnx(tmp_path / "t.onnx"), says=("refused",))
    assert not marker.exists()


def test_resume_and_weights_refuse_pickled_code(code_checkpoint, tmp_path: Path) -> None:
    evil, marker = code_checkpoint
    (tmp_path / "ck").mkdir()
    shutil.copy(evil, tmp_path / "ck" / "last.pt")
    cli_error("train", "--resume", "--checkpoint-dir", tmp_path / "ck", "--quiet", says=("refused",))
    data = make_imagefolder(tmp_path / "d", {"train": {"benign": 2, "malignant": 2},
                                             "val": {"benign": 2, "malignant": 2}})
    cli_error("train", "--data", data, "--weights", evil, "--epochs", "1", "--image-size", "32",
              "--checkpoint-dir", tmp_path / "ck2", "--runs-dir", tmp_path / "runs", "--quiet",
              says=(str(evil), "refused: loading it would import posix.mkdir"))
    assert not marker.exists()


def test_whole_pickled_module_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "full_model.pt"
    torch.save(torch.nn.Linear(2, 2), path)  # "torch.save(model)": common, and a pickle of classes
    cli_error("export", "--checkpoint", path, "-o", tmp_path / "m.onnx",
              says=("refused", "torch.nn.modules.linear.Linear", "a whole pickled model is not accepted"))


# --- ONNX files ---------------------------------------------------------------------------------


def _truncated_onnx(p: Path) -> Path:
    data = tiny_onnx(p.with_name("full.onnx")).read_bytes()
    p.write_bytes(data[: len(data) // 2])
    return p


CORRUPT_ONNX: list[tuple[str, Callable[[Path], Path]]] = [
    ("text", _text), ("empty", _empty), ("random bytes", _random_bytes), ("truncated", _truncated_onnx),
    ("a checkpoint", _bare_tensor),
]


@pytest.mark.parametrize("builder", [b for _, b in CORRUPT_ONNX], ids=[n for n, _ in CORRUPT_ONNX])
def test_corrupt_onnx_is_refused_by_predict_and_test(tmp_path: Path, builder) -> None:
    model = builder(tmp_path / "model.onnx")
    images = tmp_path / "imgs"
    images.mkdir()
    rgb_pattern().save(images / "a.png")
    cli_error("predict", "--onnx", model, images, "-o", tmp_path / "p.csv", "--provider", "cpu",
              says=(str(model), "not a valid ONNX model"))
    assert not (tmp_path / "p.csv").exists()
    data = make_imagefolder(tmp_path / "d", {"test": {"benign": 1, "malignant": 1}})
    cli_error("test", "--onnx", model, "--data", data, "--output", tmp_path / "r", "--provider", "cpu",
              says=("not a valid ONNX model",))


def test_missing_onnx_file(tmp_path: Path) -> None:
    rgb_pattern().save(tmp_path / "a.png")
    cli_error("predict", "--onnx", tmp_path / "nope.onnx", tmp_path / "a.png", "-o", tmp_path / "p.csv",
              says=("ONNX model not found",))


def _predict(model: Path, folder: Path, out: Path, *extra: object) -> dict:
    cli_ok("predict", "--onnx", model, folder, "-o", out, "--provider", "cpu", "--quiet", *extra)
    return json.loads(out.read_text())


@pytest.fixture
def images(tmp_path: Path) -> Path:
    write_tiny_pngs(tmp_path / "imgs", 20, size=40)
    return tmp_path / "imgs"


def test_onnx_without_metadata_needs_explicit_preprocessing(tmp_path: Path, images: Path) -> None:
    bare = tiny_onnx(tmp_path / "bare.onnx", image_size=16, metadata=False)
    out = tmp_path / "p.json"
    cli_error("predict", "--onnx", bare, images, "-o", out, says=("no skinonnx metadata", "--image-size", "--mean"))
    cli_error("predict", "--onnx", bare, images, "-o", out, "--image-size", "16", code=2,
              says=("--image-size, --mean and --std must be given together",))
    cli_error("predict", "--onnx", bare, images, "-o", out, "--image-size", "16", "--mean", "0.5,0.5",
              "--std", "0.2,0.2,0.2", code=2, says=("expected three numbers",))
    cli_error("predict", "--onnx", bare, images, "-o", out, "--image-size", "16", "--mean", "0.5,0.5,0.5",
              "--std", "0.2,0.2,0.2", "--classes", "a,b,c", code=2, says=("expected two class names",))
    assert not out.exists()
    mean, std = "0.485,0.456,0.406", "0.229,0.224,0.225"
    explicit = _predict(bare, images, out, "--image-size", "16", "--mean", mean, "--std", std)
    described = _predict(tiny_onnx(tmp_path / "meta.onnx", image_size=16), images, tmp_path / "q.json")
    assert len(explicit["predictions"]) == 20
    assert [p["p_malignant"] for p in explicit["predictions"]] == [p["p_malignant"] for p in described["predictions"]]
    assert len({round(p["p_malignant"], 6) for p in explicit["predictions"]}) > 1  # the model does respond


def test_test_command_with_a_bare_onnx_and_explicit_classes(tmp_path: Path) -> None:
    data = make_imagefolder(tmp_path / "d", {"test": {"nevus": 2, "melanoma": 2}})
    bare = tiny_onnx(tmp_path / "bare.onnx", metadata=False)
    cli_error("test", "--onnx", bare, "--data", data, "--output", tmp_path / "r", says=("no skinonnx metadata",))
    cli_ok("test", "--onnx", bare, "--data", data, "--output", tmp_path / "r", "--image-size", "16",
           "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25", "--classes", "nevus,melanoma", "--quiet")
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["classes"] == ["nevus", "melanoma"]


BAD_METADATA: list[tuple[str, dict[str, str], str]] = [
    ("newer schema", {"skinonnx_schema_version": "7"}, "schema version 7 is not supported"),
    ("image size not a number", {"image_size": "large"}, "metadata is incomplete or malformed"),
    ("mean of two values", {"mean": "[0.5, 0.5]"}, "malformed"),
    ("three classes, group not among them", {"classes": '["a", "b", "c"]'}, "not in the classes ['a', 'b', 'c']"),
    ("one class", {"classes": '["a"]'}, "two or more distinct named classes"),
    ("threshold above 1", {"decision_threshold": "1.5"}, "threshold 1.5 is not in [0, 1]"),
    ("threshold NaN", {"decision_threshold": "nan"}, "is not in [0, 1]"),
    ("temperature zero", {"temperature": "0"}, "temperature 0.0 is not a positive number"),
]


@pytest.mark.parametrize(("meta", "says"), [(m, s) for _, m, s in BAD_METADATA], ids=[n for n, _, _ in BAD_METADATA])
def test_malformed_metadata_is_refused(tmp_path: Path, images: Path, meta: dict[str, str], says: str) -> None:
    model = tiny_onnx(tmp_path / "m.onnx", extra_meta=meta)
    cli_error("predict", "--onnx", model, images, "-o", tmp_path / "p.csv", says=(str(model), says))


MISMATCH_32 = "does not match [N, 3, H, W] with H = W = 32"
SHAPES: list[tuple[str, dict, str]] = [
    ("fixed 48 px, metadata 32", {"input_shape": [1, 3, 48, 48], "meta_size": 32}, MISMATCH_32),
    ("NHWC input", {"input_shape": ["batch", 32, 32, 3], "image_size": 32}, MISMATCH_32),
    ("one channel", {"input_shape": ["batch", 1, 32, 32], "image_size": 32}, MISMATCH_32),
    ("flat input", {"input_shape": ["batch", 3072], "image_size": 32}, "expected [N, 3, H, W]"),
    ("three outputs", {"n_outputs": 3}, "expected [N, 2]"),
]


@pytest.mark.parametrize(("kwargs", "says"), [(k, s) for _, k, s in SHAPES], ids=[n for n, _, _ in SHAPES])
def test_onnx_with_a_different_shape_is_refused(tmp_path: Path, images: Path, kwargs: dict, says: str) -> None:
    model = tiny_onnx(tmp_path / "m.onnx", **kwargs)
    cli_error("predict", "--onnx", model, images, "-o", tmp_path / "p.csv", says=(str(model), says))


def test_fixed_batch_onnx_runs_in_chunks(tmp_path: Path, images: Path) -> None:
    """An ONNX file exported with batch size 1 still serves --batch-size 16 (20 images: 16 + 4)."""
    fixed = tiny_onnx(tmp_path / "fixed.onnx", input_shape=[1, 3, 48, 48], image_size=48)
    dynamic = tiny_onnx(tmp_path / "dynamic.onnx", image_size=48)
    a = _predict(fixed, images, tmp_path / "a.json", "--batch-size", "16")
    b = _predict(dynamic, images, tmp_path / "b.json", "--batch-size", "16")
    assert len(a["predictions"]) == 20
    assert [p["p_malignant"] for p in a["predictions"]] == pytest.approx([p["p_malignant"] for p in b["predictions"]])


# --- classes: model vs data ----------------------------------------------------------------------


def test_test_command_refuses_data_with_other_class_names(tmp_path: Path) -> None:
    data = make_imagefolder(tmp_path / "d", {"test": {"nevus": 2, "melanoma": 2}})
    cli_error("test", "--onnx", tiny_onnx(tmp_path / "m.onnx"), "--data", data, "--output", tmp_path / "r",
              says=("['melanoma', 'nevus'] differ from the model's ['benign', 'malignant']",))
    assert not (tmp_path / "r" / "summary.json").exists()


@pytest.mark.slow
def test_resume_refuses_data_whose_class_folders_changed(trained: TrainedModel, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(trained.data, data, ignore=shutil.ignore_patterns("masks"))
    for split in ("train", "val", "test"):
        (data / split / "malignant").rename(data / split / "melanoma")
    ckpt = tmp_path / "ck"
    ckpt.mkdir()
    state = torch.load(trained.last, weights_only=True)
    state["config"].update(data=str(data), checkpoint_dir=str(ckpt), runs_dir=str(tmp_path / "runs"), epochs=3)
    torch.save(state, ckpt / "last.pt")
    before = (ckpt / "last.pt").read_bytes()
    cli_error("train", "--resume", "--checkpoint-dir", ckpt, "--quiet",
              says=("checkpoint classes ['benign', 'malignant'] differ from the data's ['benign', 'melanoma']",))
    assert (ckpt / "last.pt").read_bytes() == before


@pytest.mark.slow
def test_resume_refuses_a_best_pt_style_checkpoint_without_optimizer(trained: TrainedModel, tmp_path: Path) -> None:
    ckpt = tmp_path / "ck"
    ckpt.mkdir()
    shutil.copy(trained.checkpoint, ckpt / "last.pt")  # best.pt is slim: no optimizer state
    cli_error("train", "--resume", "--checkpoint-dir", ckpt, "--quiet",
              says=("lacks optimizer, scheduler, rng_state", "needed for --resume"))


@pytest.mark.slow
def test_parity_refuses_a_corrupt_onnx_with_a_real_checkpoint(trained: TrainedModel, tmp_path: Path) -> None:
    broken = _truncated_onnx(tmp_path / "broken.onnx")
    cli_error("parity", "--checkpoint", trained.checkpoint, "--onnx", broken, "--data", trained.data,
              says=("not a valid ONNX model",))


def test_model_failing_at_run_time_is_one_clear_error(tmp_path: Path, images: Path) -> None:
    """Declares a dynamic input but reshapes to a fixed 48x48 size inside: ONNX Runtime fails on 16 px."""
    from onnx import TensorProto, helper, numpy_helper

    from skinonnx.data.preprocessing import Preprocessing
    from skinonnx.deploy.contract import ModelContract

    graph = helper.make_graph(
        [helper.make_node("Reshape", ["input", "shape"], ["flat"]),
         helper.make_node("Gemm", ["flat", "W", "B"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)],
        "reshape", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, "h", "w"])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(np.array([-1, 3 * 48 * 48], np.int64), "shape"),
         numpy_helper.from_array(np.zeros((3 * 48 * 48, 2), np.float32), "W"),
         numpy_helper.from_array(np.zeros(2, np.float32), "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    contract = ModelContract(classes=("benign", "malignant"), positive_index=1,
                             preprocessing=Preprocessing.for_size(16))
    for key, value in contract.to_metadata().items():
        model.metadata_props.add(key=key, value=value)
    path = tmp_path / "reshape.onnx"
    onnx.save(model, str(path))
    cli_error("predict", "--onnx", path, images, "-o", tmp_path / "p.csv", "--batch-size", "3",
              says=(str(path), "ONNX Runtime could not run the model on a 3x3x16x16 input"))
