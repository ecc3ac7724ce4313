"""Every export option works on every export path (single model, TTA, fold ensemble) or is refused up front;
`--runs-dir` is followed by `export` and `parity`; quantize's `--gate-split` and `--calibrate-method` act."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import onnx
import pytest
import torch

from skinonnx.cli.export_commands import CONFLICTS, EXPORT_PATHS, NEEDS, export
from skinonnx.deploy.contract import CAM_OUTPUT
from tests.scratch import scratch_dir

from ..badfiles import cli_error
from ..conftest import TrainedModel, run_cli

PATH_ARGS = {"single": (), "tta": ("--tta", "flip")}  # the ensemble's --run is added per test


def _spelled(name: str) -> str:
    param = next(p for p in export.params if p.name == name)
    return "/".join([*param.opts, *param.secondary_opts])


def test_the_checks_name_real_options() -> None:
    names = {p.name for p in export.params}
    assert set(NEEDS) | set(NEEDS.values()) <= names
    assert {n for pair in CONFLICTS for n in pair} <= names


# every export option with a non-default value; the pipeline must receive each one on every path
GIVEN = {"opset": ("--opset", "16"), "data": ("--data", "D"), "atol": ("--atol", "0.001"),
         "parity_images": ("--parity-images", "5"), "int8": ("--int8",),
         "embed_preprocessing": ("--embed-preprocessing",), "fp16": ("--fp16",),
         "fp16_tolerance": ("--fp16-tolerance", "0.02"), "ort_format": ("--ort-format",), "cam": ("--no-cam",),
         "ood": ("--ood",), "ood_accept": ("--ood-accept", "0.9"), "provider": ("--provider", "cuda"),
         "triton_repo": ("--triton-repo", "T")}


@pytest.mark.parametrize("path", EXPORT_PATHS)
def test_every_option_reaches_the_pipeline_on_every_path(path: str, tmp_path: Path, monkeypatch) -> None:
    """An option the CLI parses and then drops would fail here: each given value arrives in the export pipeline."""
    import skinonnx.export.pipeline as pipeline

    seen: dict = {}

    def capture(source, output, *, ensemble, tta, variants, data, provider, echo, **options):
        kept = ("int8", "fp16", "fp16_tolerance", "ort_format", "triton_repo")
        seen.update(options, source=source, ensemble=ensemble, tta=tta, data=data, provider=provider,
                    **{k: getattr(variants, k) for k in kept})
        raise SystemExit(0)

    monkeypatch.setattr(pipeline, "run_export", capture)
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"")
    where = {"single": ("--checkpoint", checkpoint), "tta": ("--checkpoint", checkpoint, "--tta", "flip"),
             "ensemble": ("--run", tmp_path)}[path]
    args = [a for name, spelled in GIVEN.items() if spelled for a in spelled]
    run_cli("export", *where, *args, "-o", tmp_path / "m.onnx", expect=0)
    want = {"opset": 16, "data": "D", "atol": 0.001, "parity_images": 5, "int8": True, "embed_preprocessing": True,
            "fp16": True, "fp16_tolerance": 0.02, "ort_format": True, "cam": False, "ood": True, "ood_accept": 0.9,
            "provider": "cuda", "triton_repo": Path("T")}
    assert {k: seen.get(k) for k in want} == want
    assert seen["ensemble"] == (path == "ensemble") and seen["tta"] == ("flip" if path == "tta" else "none")
    sources = {"checkpoint", "run_dir", "tta", "runs_dir", "output"}  # which model, and where it goes
    assert {p.name for p in export.params} - sources == set(want)  # a new option must be added here


@pytest.mark.parametrize("path", EXPORT_PATHS)
@pytest.mark.parametrize("option", sorted(NEEDS))
def test_a_tuning_option_without_its_switch_is_refused_on_every_path(path: str, option: str, tmp_path: Path) -> None:
    where = ("--run", str(tmp_path)) if path == "ensemble" else PATH_ARGS[path]
    value = {"fp16_tolerance": "0.05", "ood_accept": "0.9"}[option]
    switch_off = {"ood_accept": ("--no-ood",)}.get(option, ())  # --ood is on by default, --fp16 off
    message = cli_error("export", *where, *switch_off, _spelled(option), value, "-o", tmp_path / "m.onnx", code=2,
                        says=(_spelled(option), _spelled(NEEDS[option])))
    assert "tunes" in message and not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("a, b", CONFLICTS)
def test_two_sources_are_refused(a: str, b: str, tmp_path: Path) -> None:
    cli_error("export", "--run", tmp_path, "--checkpoint", tmp_path / "x.pt", "-o", tmp_path / "m.onnx", code=2,
              says=(_spelled(a), _spelled(b)))


# --- the options that used to be dropped on the TTA and ensemble paths, with real exports -----------------

@dataclass(frozen=True)
class Exports:
    full: dict[str, Path]  # path -> export with --fp16 --fp16-tolerance 0.05 --ort-format (cam on)
    plain: dict[str, Path]  # path -> export with --no-cam
    output: dict[str, str]


@pytest.fixture(scope="module")
def exports(trained: TrainedModel, request: pytest.FixtureRequest) -> Exports:
    work = scratch_dir(request, "paths")
    cv_runs = work / "runs"
    run_cli("train", "--data", trained.data, "--weights", "none", "--epochs", "1", "--batch-size", "8",
            "--image-size", "32", "--quiet", "--folds", "2", "--name", "cv", "--runs-dir", cv_runs)
    sources = {"single": ("--checkpoint", trained.checkpoint), "tta": ("--checkpoint", trained.checkpoint,
                                                                       "--tta", "flip"),
               "ensemble": ("--runs-dir", cv_runs)}  # no --run: the newest CV run under --runs-dir
    full, plain, output = {}, {}, {}
    for path, source in sources.items():
        full[path], plain[path] = work / f"{path}.onnx", work / f"{path}-plain.onnx"
        output[path] = run_cli("export", *source, "-o", full[path], "--data", trained.data, "--parity-images", "3",
                               "--fp16", "--fp16-tolerance", "0.05", "--ort-format").output
        run_cli("export", *source, "-o", plain[path], "--data", trained.data, "--parity-images", "2", "--no-cam")
    return Exports(full, plain, output)


def _outputs(path: Path) -> list[str]:
    if path.suffix == ".ort":
        import onnxruntime as ort

        return [o.name for o in ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_outputs()]
    return [o.name for o in onnx.load(str(path)).graph.output]


def _precision(path: Path) -> dict:
    return json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}["precision"])


@pytest.mark.parametrize("path", EXPORT_PATHS)
def test_fp16_on_every_path(exports: Exports, path: str) -> None:
    half = exports.full[path].with_name(f"{path}.fp16.onnx")
    assert "fp16 vs fp32 on" in exports.output[path] and f"wrote {half}" in exports.output[path]
    assert _precision(half)["gate"]["ok"] and _outputs(half) == _outputs(exports.full[path])


@pytest.mark.parametrize("path", EXPORT_PATHS)
def test_fp16_tolerance_on_every_path(exports: Exports, path: str) -> None:
    checks = _precision(exports.full[path].with_name(f"{path}.fp16.onnx"))["gate"]["checks"]
    assert [c["atol"] for c in checks if c["output"] == "probabilities"] == [0.05]


@pytest.mark.parametrize("path", EXPORT_PATHS)
def test_ort_format_on_every_path(exports: Exports, path: str) -> None:
    ort_file = exports.full[path].with_suffix(".ort")
    assert ort_file.read_bytes()[4:8] == b"ORTM" and "metadata: all" in exports.output[path]
    assert exports.full[path].with_name(f"{path}.required_operators.config").is_file()
    assert _outputs(ort_file) == _outputs(exports.full[path])


@pytest.mark.parametrize("path", EXPORT_PATHS)
def test_cam_on_every_path(exports: Exports, path: str) -> None:
    names = _outputs(exports.full[path])
    assert CAM_OUTPUT in names and ("member_probabilities" in names) == (path == "ensemble")
    record = json.loads(exports.full[path].with_name(f"{path}.onnx.parity.json").read_text())
    cam = [c for c in record["checks"] if c["output"] == CAM_OUTPUT]
    assert len(cam) == 2 and all(c["ok"] for c in cam)  # batch 1 and 3, against PyTorch's aligned mean map


@pytest.mark.parametrize("path", EXPORT_PATHS)
def test_no_cam_on_every_path(exports: Exports, path: str) -> None:
    assert CAM_OUTPUT not in _outputs(exports.plain[path])
    assert _outputs(exports.plain[path]) == [n for n in _outputs(exports.full[path]) if n != CAM_OUTPUT]


def test_ensemble_source_follows_runs_dir_and_parity_checks_it_again(exports: Exports, trained: TrainedModel) -> None:
    assert "exporting the newest cross-validation run" in exports.output["ensemble"]
    assert "ensemble of 2 folds" in exports.output["ensemble"]
    again = run_cli("parity", "--onnx", exports.full["ensemble"], "--parity-images", "2").output  # run from metadata
    assert "✓ fold-1" in again and "✓ cam" in again and "parity ok" in again
    assert json.loads(run_cli("info", exports.full["ensemble"], "--json").output)["schema"]["valid"]


def test_the_mean_map_of_tta_views_turns_with_the_image(trained: TrainedModel) -> None:
    """Maps of transformed views must be mapped back before averaging: then the d4 mean map of a turned or
    mirrored image is the turned or mirrored map (the logits do not change)."""
    from skinonnx.export.ensemble import EnsembleWrapper
    from skinonnx.training.checkpoint import load_checkpoint, model_from_checkpoint

    models = [model_from_checkpoint(load_checkpoint(trained.checkpoint)) for _ in range(2)]
    with torch.no_grad():
        models[1].fc.weight.mul_(-0.5)  # a second, different member
    wrapper = EnsembleWrapper(models, 1.0, 1, "d4", member_output=True, with_cam=True)
    x = torch.randn(2, 3, 64, 64)  # a 2 x 2 map: turns and mirrors are visible
    with torch.no_grad():
        logits, _, _, cam = wrapper(x)
        for turned, turn_map in [(x.flip(3), lambda m: m.flip(-1)), (x.transpose(2, 3), lambda m: m.transpose(1, 2)),
                                 (torch.rot90(x, 1, (2, 3)), lambda m: torch.rot90(m, 1, (1, 2)))]:
            z, _, _, m = wrapper(turned)
            torch.testing.assert_close(z, logits, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(m, turn_map(cam), atol=1e-4, rtol=1e-4)
        assert not torch.allclose(cam, cam.flip(-1), atol=1e-3)  # the map itself is not symmetric


# --- --runs-dir and quantize's options -------------------------------------------------------------------

def test_export_and_parity_follow_runs_dir(trained: TrainedModel, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # no runs/ here: only --runs-dir can find the run
    runs = trained.run_dir.parent
    out = run_cli("export", "--runs-dir", runs, "-o", "m.onnx", "--parity-images", "2", "--no-cam").output
    assert f"checkpoint: {runs}/" in out and (tmp_path / "m.onnx").is_file()
    checked = run_cli("parity", "--runs-dir", runs, "--onnx", "m.onnx", "--parity-images", "2").output
    assert "parity ok" in checked and f"checkpoint: {runs}/" in checked
    # without --runs-dir: the checkpoint the file records it was exported from (no default run is needed)
    own = run_cli("parity", "--onnx", "m.onnx", "--parity-images", "2").output
    assert "parity ok" in own and "(the one this file was exported from)" in own


def _scales(path: Path) -> dict[str, list[float]]:
    from onnx import numpy_helper

    model = onnx.load(str(path))
    return {t.name: numpy_helper.to_array(t).ravel().tolist() for t in model.graph.initializer
            if t.name.endswith("_scale")}


def test_calibrate_method_and_gate_split_change_what_quantize_does(trained: TrainedModel, tmp_path: Path) -> None:
    loose = ("--min-agreement", "0", "--max-auc-change", "1", "--data", trained.data, "--onnx", trained.onnx)
    run_cli("quantize", *loose, "-o", tmp_path / "minmax.onnx", "--no-bias-correction")
    out = run_cli("quantize", *loose, "-o", tmp_path / "pct.onnx", "--no-bias-correction", "--calibrate-method",
                  "percentile", "--gate-split", "test").output
    assert "(percentile," in out and "real test images" in out
    info = json.loads({p.key: p.value for p in onnx.load(str(tmp_path / "pct.onnx")).metadata_props}["quantization"])
    assert info["calibration"]["method"] == "percentile" and info["gate"]["split"] == "test"
    minmax, pct = _scales(tmp_path / "minmax.onnx"), _scales(tmp_path / "pct.onnx")
    assert minmax.keys() == pct.keys()
    assert any(minmax[k] != pct[k] for k in minmax)  # other activation ranges, not only another label
