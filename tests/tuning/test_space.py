"""The search-space file: every mistake is refused naming the setting, before any trial (no training here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from skinonnx.training.config import TrainConfig
from skinonnx.tuning.space import DEFAULT_SPACE, SpaceError, default_space, load_space, parse_space
from tests.conftest import run_cli


def test_the_default_space_covers_the_documented_settings() -> None:
    space = default_space()
    assert space.names == ["lr", "weight_decay", "label_smoothing", "augment_strength", "image_size"]
    assert default_space({"image_size", "lr"}).names == ["weight_decay", "label_smoothing", "augment_strength"]
    # trial 0 trains today's defaults where they lie inside the space
    assert space.defaults(TrainConfig(image_size=128)) == {"lr": 3e-4, "weight_decay": 1e-4, "label_smoothing": 0.0,
                                                          "augment_strength": 1.0, "image_size": 128}
    assert "image_size" not in space.defaults(TrainConfig())  # 224 is not one of the choices


def test_a_yaml_file_with_ranges_log_steps_and_choices(tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text("lr: {low: 1.0e-4, high: 1.0e-2, log: true}\nbatch_size: {low: 8, high: 32, step: 8}\n"
                    "optimizer: [adamw, sgd]\n")
    space = load_space(path)
    assert [(d.name, d.kind) for d in space.dimensions] == [("lr", "float"), ("batch_size", "int"),
                                                            ("optimizer", "choice")]
    optuna = pytest.importorskip("optuna")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = space.suggest(study.ask())
    assert 1e-4 <= drawn["lr"] <= 1e-2 and drawn["batch_size"] in (8, 16, 24, 32) and drawn["optimizer"] in (
        "adamw", "sgd")
    assert set(space.distributions()) == {"lr", "batch_size", "optimizer"}


@pytest.mark.parametrize(("mapping", "message"), [
    ({"lrr": {"low": 0.1, "high": 1}}, "unknown setting 'lrr' (is not a `train` setting)"),
    ({"device": ["cpu"]}, "unknown setting 'device' (is not searchable"),
    ({"lr": {"low": 0.01, "high": 0.01}}, "'lr': empty range (low 0.01 must be below high 0.01)"),
    ({"lr": {"low": 0.0, "high": 0.1, "log": True}}, "'lr': a log range needs low > 0"),
    ({"label_smoothing": {"low": 0.0, "high": 0.9}}, "'label_smoothing': 0.9 is outside the setting's range [0, 0.5]"),
    ({"image_size": {"choices": []}}, "'image_size': empty range"),
    ({"image_size": [16, 64]}, "'image_size': 16 is outside the setting's range [32, 1024]"),
    ({"optimizer": ["adamw", "lion"]}, "'optimizer': choice 'lion' is not allowed"),
    ({"epochs": {"low": 1.5, "high": 4}}, "'epochs': an integer setting needs integer low/high"),
    ({"lr": {"low": 0.1, "hi": 1}}, "'lr': unknown key(s) ['hi']"),
    ({"lr": "fast"}, "'lr': expected {low: X, high: Y}"),
    ({}, "expected a non-empty mapping"),
])
def test_bad_spaces_name_the_setting(mapping: dict, message: str) -> None:
    with pytest.raises(SpaceError) as caught:
        parse_space(mapping, "--space s.yaml")
    assert message in caught.value.message


def test_a_setting_searched_and_fixed_is_refused() -> None:
    with pytest.raises(SpaceError, match="'lr' is both searched here and fixed on the command line"):
        parse_space({"lr": DEFAULT_SPACE["lr"]}, "--space s.yaml", fixed={"lr"})


def test_tune_refuses_a_bad_space_file_with_one_error_line(tmp_path: Path, synthetic_data: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text("weight_decay: {low: 0.1, high: 0.01}\n")
    result = run_cli("tune", "--data", synthetic_data, "--trials", "2", "--space", path, "--runs-dir",
                     tmp_path / "runs", expect=1)
    assert result.output.strip().splitlines() == [
        f"Error: --space {path}: 'weight_decay': empty range (low 0.1 must be below high 0.01)"]
    assert not (tmp_path / "runs").exists()
    path.write_text("lr: [0.1\n")
    assert "not valid YAML" in run_cli("tune", "--data", synthetic_data, "--trials", "2", "--space", path,
                                       expect=1).output


def test_tune_options_for_the_other_engine_are_refused(synthetic_data: Path) -> None:
    assert "--address is for --engine ray" in run_cli("tune", "--data", synthetic_data, "--trials", "2",
                                                      "--address", "auto", expect=2).output
