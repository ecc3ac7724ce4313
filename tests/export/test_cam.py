"""The `cam` output inside the ONNX file: parity with PyTorch, its exact relation to the log-odds and to
`explain`'s Grad-CAM, the uint8 variant, the runtime, `predict --cam`, and files without it."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from skinonnx.data.preprocessing import Preprocessing
from skinonnx.deploy.contract import CAM_OUTPUT, DECISION_OUTPUTS, INPUT_NAME, OUTPUT_NAMES, ModelContract
from skinonnx.deploy.runtime import OnnxClassifier, create_session
from skinonnx.export.cam import logits_and_cam, mean_cam
from skinonnx.export.onnx_export import to_onnx
from skinonnx.export.parity import check_parity, load_parity_images
from skinonnx.export.uint8_input import check_uint8_parity, embed_preprocessing
from skinonnx.overlay import normalize_map
from tests.scratch import scratch_dir

from ..conftest import run_cli

pytestmark = pytest.mark.slow  # exports a ResNet50 (~10 s on 2 cores)
SIZE = 96  # a 3 x 3 map


@pytest.fixture(scope="module")
def cam_model(request: pytest.FixtureRequest):
    """A random-init ResNet50 whose blocks are not identities (so the maps are not trivial), exported with and
    without the cam output, plus the uint8-input variant."""
    from skinonnx.training.model import build_model

    torch.manual_seed(0)
    model = build_model(2, weights="none").eval()
    with torch.no_grad():  # undo zero_init_residual: every block contributes, maps differ between images
        for name, module in model.named_modules():
            if name.endswith("bn3"):
                module.weight.uniform_(0, 0.3)
        model.fc.weight.normal_(0, 0.5)
        model.fc.bias.copy_(torch.tensor([0.3, -0.2]))
    folder = scratch_dir(request, "cam")
    base = ModelContract(classes=("benign", "malignant"), positive_index=1, preprocessing=Preprocessing.for_size(SIZE),
                         temperature=1.7)
    with_cam = ModelContract(**{**base.__dict__, "output_names": (*OUTPUT_NAMES, CAM_OUTPUT)})
    paths = {"cam": folder / "model.onnx", "plain": folder / "plain.onnx", "uint8": folder / "model.uint8.onnx"}
    proto = to_onnx(model, with_cam, paths["cam"], 17)
    onnx.save(embed_preprocessing(proto, with_cam), str(paths["uint8"]))
    # a file as exported before the output existed (or with --no-cam): the same graph without the map's branch
    onnx.utils.extract_model(str(paths["cam"]), str(paths["plain"]), [INPUT_NAME], list(OUTPUT_NAMES))
    plain = onnx.load(str(paths["plain"]))
    del plain.metadata_props[:]
    for key, value in base.to_metadata().items():
        plain.metadata_props.add(key=key, value=value)
    onnx.save(plain, str(paths["plain"]))
    return model, with_cam, paths


def _images(root: Path, prep: Preprocessing, n: int = 8) -> tuple[list[Path], np.ndarray]:
    paths = sorted(root.rglob("*.jpg"))[:n] + sorted(root.rglob("*.png"))[:n]
    return paths[:n], load_parity_images(paths[:n], prep, n)


def _check_on(model, contract, paths: dict[str, Path], files: list[Path], batch: np.ndarray) -> dict[str, float]:
    """Every property of the map on one set of images; returns the measured figures."""
    report = check_parity(model, paths["cam"], batch, temperature=contract.temperature)
    cam_checks = [c for c in report.checks if c.output == CAM_OUTPUT]
    assert cam_checks and all(c.ok for c in cam_checks) and report.ok  # batch 1 and 7, atol 1e-4

    session, _ = create_session(paths["cam"], "cpu")
    logits, cam = session.run(["logits", CAM_OUTPUT], {"input": batch})
    assert cam.shape == (len(batch), SIZE // 32, SIZE // 32)
    # cells add up to the log-odds minus the classifier's bias difference, a constant of the model
    b = model.fc.bias.detach().double().numpy()
    remainder = (logits[:, 1] - logits[:, 0]) - cam.sum(axis=(1, 2))
    np.testing.assert_allclose(remainder, b[1] - b[0], atol=1e-4)

    # explain's Grad-CAM of the log-odds on layer4 is exactly ReLU(cam) for this head
    from skinonnx.explain.gradcam import GradCam

    grad = GradCam(model)(torch.from_numpy(batch), 1).cams
    scale = float(np.abs(cam).max())
    np.testing.assert_allclose(np.maximum(cam, 0), grad, atol=1e-4 * scale)
    shown_onnx = np.stack([normalize_map(c) for c in cam]).ravel()
    shown_grad = np.stack([normalize_map(g) for g in grad]).ravel()
    r = float(np.corrcoef(shown_onnx, shown_grad)[0, 1])
    assert r > 0.9999

    # the uint8 variant carries the same map (resized-uncropped and cropped inputs, batch 1 and N)
    u8 = check_uint8_parity(paths["cam"], paths["uint8"], files, contract.preprocessing)
    assert u8.max_diff(CAM_OUTPUT) <= 1e-5 * max(1.0, scale)
    print(f"\ncam on {len(batch)} images: parity max |Δ| {max(c.max_abs_diff for c in cam_checks):.2e}; "
          f"Grad-CAM vs ONNX cam after ReLU/normalisation: r = {r:.6f}, max |Δ| "
          f"{float(np.abs(np.maximum(cam, 0) - grad).max()):.2e} (map scale {scale:.3g}); uint8 max |Δ| "
          f"{u8.max_diff(CAM_OUTPUT):.2e}")
    return {"r": r}


def test_cam_parity_sum_and_gradcam_on_generated_images(cam_model, synthetic_data: Path) -> None:
    model, contract, paths = cam_model
    files, batch = _images(synthetic_data, contract.preprocessing)
    _check_on(model, contract, paths, files, batch)


@pytest.mark.realdata
def test_cam_parity_sum_and_gradcam_on_real_images(cam_model, real_data: Path) -> None:
    model, contract, paths = cam_model
    files, batch = _images(real_data / "test", contract.preprocessing, 16)
    _check_on(model, contract, paths, files, batch)


def test_the_map_branch_is_two_small_nodes_on_layer4(cam_model) -> None:
    """ONNX Runtime runs every node whatever run() names (its profiler shows it), so what an app that never
    asks for the map pays is this branch: one Mul and one ReduceSum over layer4's [N, 2048, h, w] maps."""
    _, _, paths = cam_model
    graph = onnx.load(str(paths["cam"])).graph
    producer = {out: node for node in graph.node for out in node.output}

    def ancestors(name: str) -> set[str]:
        seen, todo = set(), [name]
        while todo:
            node = producer.get(todo.pop())
            if node is not None and node.name not in seen:
                seen.add(node.name)
                todo.extend(node.input)
        return seen

    only_cam = ancestors(CAM_OUTPUT) - ancestors("probabilities") - ancestors("logits")
    ops = sorted(n.op_type for n in graph.node if n.name in only_cam)
    assert [op for op in ops if op != "Constant"] == ["Mul", "ReduceSum"]
    plain = onnx.load(str(paths["plain"])).graph
    assert [o.name for o in plain.output] == list(OUTPUT_NAMES)


def test_runtime_returns_the_map_only_when_asked_and_files_without_it_work(cam_model, synthetic_data: Path,
                                                                           tmp_path: Path) -> None:
    _, contract, paths = cam_model
    files = [*sorted(synthetic_data.rglob("*.png"))[:5], tmp_path / "missing.png"]
    with_cam = OnnxClassifier(paths["cam"], "cpu")
    assert with_cam.has_cam and with_cam.contract.output_names == (*OUTPUT_NAMES, CAM_OUTPUT, *DECISION_OUTPUTS)
    asked = list(with_cam.predict_files(files, batch_size=4, with_cam=True))
    assert [p.ok for p in asked] == [True] * 5 + [False]
    assert all(p.cam is not None and p.cam.shape == (3, 3) for p in asked[:5]) and asked[5].cam is None
    session, _ = create_session(paths["cam"], "cpu")
    direct = session.run([CAM_OUTPUT], {"input": np.stack([contract.preprocessing.from_file(f) for f in files[:5]])})[0]
    np.testing.assert_allclose(np.stack([p.cam for p in asked[:5]]), direct, rtol=1e-6, atol=1e-6)
    not_asked = list(with_cam.predict_files(files[:5]))
    assert all(p.cam is None for p in not_asked)
    np.testing.assert_array_equal([p.probabilities for p in not_asked], [p.probabilities for p in asked[:5]])

    plain = OnnxClassifier(paths["plain"], "cpu")
    assert not plain.has_cam and plain.contract.output_names == OUTPUT_NAMES
    old = list(plain.predict_files(files[:5], with_cam=True))
    assert all(p.cam is None for p in old)
    np.testing.assert_allclose([p.probabilities for p in old], [p.probabilities for p in asked[:5]], atol=1e-6)
    uint8 = OnnxClassifier(paths["uint8"], "cpu")
    np.testing.assert_allclose(np.stack([p.cam for p in uint8.predict_files(files[:5], with_cam=True)]), direct,
                               atol=1e-5)


def test_predict_cam_writes_overlays_and_refuses_files_without_the_output(cam_model, synthetic_data: Path,
                                                                          tmp_path: Path) -> None:
    _, _, paths = cam_model
    images = sorted((synthetic_data / "test").rglob("*.png"))[:3]
    out = run_cli("predict", "--onnx", paths["uint8"], *images, "-o", tmp_path / "p.csv", "--cam", tmp_path / "cams",
                  "--quiet").output
    assert f"heatmaps in {tmp_path / 'cams'}/" in out
    rows = list(csv.DictReader((tmp_path / "p.csv").read_text().splitlines()))
    assert [Path(r["cam_overlay"]).name for r in rows] == [f"{p.stem}.cam.png" for p in images]
    for row in rows:
        with Image.open(row["cam_overlay"]) as panel:  # [crop | crop + heat] of 96 px enlarged x3, caption below
            assert panel.format == "PNG" and panel.width == 2 * 288 + 8 and panel.height > 288
    refused = run_cli("predict", "--onnx", paths["plain"], *images, "-o", tmp_path / "q.csv", "--cam",
                      tmp_path / "none", "--quiet", expect=1).output
    assert "\nError: " in refused and "has no 'cam' output" in refused and "Traceback" not in refused


def test_mean_cam_is_the_seam_for_ensembles_and_tta(cam_model) -> None:
    """Members' maps average with the probabilities' weights; a flipped view's map is flipped back first."""
    model, _, _ = cam_model
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        _, cam = logits_and_cam(model, x, 1)
        _, cam_flipped = logits_and_cam(model, x.flip(-1), 1)
    aligned = cam_flipped.flip(-1)
    both = mean_cam([cam, aligned], [3.0, 1.0])
    torch.testing.assert_close(both, 0.75 * cam + 0.25 * aligned)
    torch.testing.assert_close(mean_cam([cam, cam]), cam)
