"""`--help` of every command of the click group runs and explains every option it shows.

The commands come from ``main.commands``, so a new command is covered without editing this file. An option
without help text passes only if its name is in SELF_EXPLANATORY: names that mean the same in every command
and that a user of any ML tool reads without help (the meaning is written here, once).
"""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from skinonnx.cli import main

SELF_EXPLANATORY = {
    "--help": "this text",
    "--quiet": "no progress bars or chatter",
    "--seed": "random seed",
    "--epochs": "number of training epochs",
    "--batch-size": "images per batch",
    "--lr": "learning rate",
    "--weight-decay": "weight decay of the optimizer",
    "--optimizer": "optimizer (the choices are shown)",
    "--scheduler": "learning-rate schedule (the choices are shown)",
    "--device": "where torch runs (the choices are shown)",
    "--image-size": "the model's input size in pixels",
    "--split": "which split of the data (the choices are shown)",
    "--threshold": "decision threshold on the positive class's probability",
    "--data": "the data set (folder or index CSV)",
    "--onnx": "the ONNX model file (default shown)",
    "--output": "where the result is written",
    "--out": "where the result is written",
    "--opset": "ONNX opset version",
}


def _visible_options(command: click.Command) -> list[click.Option]:
    return [p for p in command.params if isinstance(p, click.Option) and not p.hidden]


def _long_name(option: click.Option) -> str:
    return max(option.opts, key=len)


def test_the_group_has_commands() -> None:
    assert {"train", "export", "test", "predict"} <= set(main.commands)
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert all(name in result.output for name in main.commands)


@pytest.mark.parametrize("name", sorted(main.commands))
def test_help_runs_and_every_option_is_explained(name: str) -> None:
    result = CliRunner().invoke(main, [name, "--help"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    command = main.commands[name]
    assert (command.help or "").strip(), f"`{name}` has no description"
    unexplained = []
    for option in _visible_options(command):
        shown = _long_name(option)
        assert shown in result.output, f"{name} --help does not show {shown}"
        if not (option.help or "").strip() and shown not in SELF_EXPLANATORY:
            unexplained.append(shown)
    assert not unexplained, f"`{name} --help`: give these options help text: {unexplained}"


def test_hidden_aliases_stay_out_of_help() -> None:
    for name, command in main.commands.items():
        output = CliRunner().invoke(main, [name, "--help"]).output
        for option in command.params:
            if isinstance(option, click.Option) and option.hidden:
                assert f"{_long_name(option)} " not in output, f"{name}: hidden {option.opts} shown in --help"
