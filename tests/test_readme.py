"""Every command the README shows in a ```bash block still works.

HOW says how each command is checked; a README command without a row fails the first test, and a row whose
command left the README fails it too, so the table and the README cannot drift apart:

* ``run``: run as printed, in a temp folder, on the tiny synthetic data set (DIR, photos/ and IMAGES point
  at it), with the extra arguments of the row appended so it stays cheap (64 px, 1 epoch, random init);
* ``parse``: too slow or long-running for the suite (named reason); click parses the README's arguments
  exactly as printed (an unknown or renamed option fails) and ``--help`` runs;
* ``make``: ``make -n`` (the target exists and expands);
* ``collect``: a pytest selection; ``pytest --collect-only`` checks it selects tests.
"""

from __future__ import annotations

import csv
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from skinonnx.cli import main
from tests.waits import WAIT_S

from .conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]
# 64 px, not the usual 32: `explain` refuses maps of 1x1 (below 64 px); 1 epoch keeps it to seconds
CHEAP_TRAIN = ("--weights", "none", "--image-size", "64", "--epochs", "1", "--batch-size", "8", "--quiet")

HOW: dict[str, tuple[str, tuple[str, ...] | str]] = {
    "make demo": ("make", "demo"),
    "make test": ("make", "test"),
    "python cli.py train --data DIR": ("run", CHEAP_TRAIN),
    "python cli.py export": ("run", ("--parity-images", "8")),
    "python cli.py test": ("run", ("--bootstrap", "50", "--quiet")),
    "python cli.py predict photos/ -o predictions.csv": ("run", ("--quiet",)),
    "python cli.py info exports/model.onnx": ("run", ()),
    "python cli.py explain IMAGES": ("run", ("--quiet",)),
    "python cli.py train --data DIR --folds 5": ("parse", "trains 5 models; tests/training/ runs --folds at 32 px"),
    "python cli.py export --int8": ("parse", "the INT8 gate needs a trained model (a 1-epoch one fails it by design); "
                                             "tests/export/test_quantize.py runs it"),
    "python cli.py web": ("parse", "serves until Ctrl-C; tests/deploy/test_web.py runs the server on 127.0.0.1"),
    "python cli.py demo": ("parse", "8 epochs at 64 px, about a minute: `make demo` itself"),
    "python cli.py audit --data DIR": ("run", ()),
    "python cli.py test --by ita": ("run", ("--bootstrap", "50", "--quiet")),
    "python cli.py compare A.onnx B.onnx": ("parse", "needs two models; tests/evaluation/test_compare.py runs it"),
    "python cli.py serve": ("parse", "serves until SIGTERM; tests/serve/ run it on 127.0.0.1"),
    "python cli.py monitor --reference REPORT photos/": ("parse", "tests/evaluation/test_safety_cli.py runs it"),
    "pytest -m 'not slow and not realdata'": ("collect", ""),
    "pytest -m slow": ("collect", ""),
}


def readme_commands(text: str) -> list[str]:
    """Commands of the ```bash blocks: continuation lines joined, comments dropped, normalised by shlex."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            tokens = shlex.split(line, comments=True)
            if tokens:
                commands.append(shlex.join(tokens))
    return commands


README_COMMANDS = readme_commands((ROOT / "README.md").read_text(encoding="utf-8"))


def _cli_args(command: str, data: Path) -> list[str]:
    tokens = shlex.split(command)
    assert tokens[:2] == ["python", "cli.py"], command
    images = sorted((data / "test").rglob("*.png"))[:3]
    args: list[str] = []
    for token in tokens[2:]:
        args += {"DIR": [str(data)], "photos/": [str(data / "test")], "IMAGES": [str(i) for i in images],
                 "REPORT": [str(data)]}.get(
            token, [token])
    return args


def test_every_readme_command_has_a_row() -> None:
    assert README_COMMANDS, "no ```bash blocks found in README.md"
    shown = set(README_COMMANDS)
    assert not shown - set(HOW), f"README commands without a row in HOW: {sorted(shown - set(HOW))}"
    assert not set(HOW) - shown, f"rows for commands no longer in the README: {sorted(set(HOW) - shown)}"


def test_the_parser_joins_continuations_and_drops_comments() -> None:
    text = "x\n```bash\npython cli.py train --data DIR \\\n    --epochs 2   # two\n# only a comment\n```\n"
    assert readme_commands(text) == ["python cli.py train --data DIR --epochs 2"]


@pytest.mark.parametrize("command", [c for c, (how, _) in HOW.items() if how == "parse"])
def test_long_running_commands_parse_as_printed(command: str, synthetic_data: Path) -> None:
    args = _cli_args(command, synthetic_data)
    name, rest = args[0], args[1:]
    with main.commands[name].make_context(name, list(rest)) as ctx:  # parses, validates, does not run
        assert ctx.params
    assert CliRunner().invoke(main, [name, "--help"]).exit_code == 0


@pytest.mark.parametrize("command", [c for c, (how, _) in HOW.items() if how == "make"])
def test_make_targets_exist(command: str) -> None:
    target = HOW[command][1]
    done = subprocess.run(["make", "-n", "-C", str(ROOT), target], capture_output=True, text=True, timeout=WAIT_S)
    assert done.returncode == 0, done.stderr
    assert "cli.py demo" in done.stdout if target == "demo" else "pytest" in done.stdout


@pytest.mark.parametrize("command", [c for c, (how, _) in HOW.items() if how == "collect"])
def test_pytest_selections_select_tests(command: str) -> None:
    args = shlex.split(command)[1:]
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=WAIT_S)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert re.search(r"^\d+(/\d+)? tests? (collected|selected)", done.stdout, re.M), done.stdout[-500:]


@pytest.mark.slow
def test_readme_pipeline_runs_as_printed(synthetic_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """train -> export -> test -> predict -> info -> explain, in README order, in a fresh folder."""
    monkeypatch.chdir(tmp_path)
    for command in [c for c in README_COMMANDS if HOW[c][0] == "run"]:
        run_cli(*_cli_args(command, synthetic_data), *HOW[command][1])
    assert len(list(tmp_path.glob("runs/*/weights/best.pt"))) == 1
    assert (tmp_path / "exports" / "model.onnx").is_file()
    assert len(list(tmp_path.glob("reports/model-*/report.html"))) == 1  # named by the model's hash
    rows = list(csv.DictReader((tmp_path / "predictions.csv").open()))
    assert len(rows) == len(list((synthetic_data / "test").rglob("*.png")))
    assert len(list((tmp_path / "reports" / "gradcam").glob("*.gradcam.png"))) == 3


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#{1,6} (.+)$", re.sub(r"```.*?```", "", markdown, flags=re.S), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_links_between_readme_and_docs_resolve() -> None:
    """Every relative link of README.md and docs/*.md names a file that exists and, with #, a heading in it."""
    broken = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", re.sub(r"```.*?```", "", text, flags=re.S)):
            if re.match(r"[a-z]+:", target):
                continue  # https://, mailto: ...
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and file.suffix == ".md" and anchor not in _anchors(file.read_text(encoding="utf-8")):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, broken


def test_the_anchor_rule() -> None:
    assert _anchors("## The browser page (`web`)\n### 1. Decode to upright 8-bit RGB\n") == {
        "the-browser-page-web", "1-decode-to-upright-8-bit-rgb"}


def test_readme_stays_a_first_read() -> None:
    """Under 200 lines, and its first screen has the set-up, the four commands and the pointer to docs/."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) < 200, f"README.md has {len(lines)} lines: move reference material to docs/"
    first_screen = "\n".join(lines[:30])
    for needed in ("make demo", "make test", "cli.py train", "cli.py export", "cli.py test", "cli.py predict",
                   "#where-to-read-more"):
        assert needed in first_screen, needed


def test_docs_use_no_renamed_option() -> None:
    """issue 29: docs/EXPLAIN.md and docs/DEPLOY.md still showed `explain --out` after it was renamed --output.
    A `python cli.py CMD ... --opt` in README.md or docs/*.md may not use a hidden (renamed) spelling of CMD."""
    stale = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for cmd, rest in re.findall(r"python cli\.py (\w[\w-]*)([^\n`|]*)", page.read_text(encoding="utf-8")):
            command = main.commands.get(cmd)
            if command is None:
                continue
            hidden = {o for p in command.params if isinstance(p, click.Option) and p.hidden for o in p.opts}
            stale += [f"{page.name}: {cmd} {opt}" for opt in re.findall(r"(?<![\w-])--[\w-]+", rest) if opt in hidden]
    assert not stale, stale


def test_readme_says_web_needs_onnxruntime_web_from_npm() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "python cli.py web" in text
    assert re.search(r"`web` needs onnxruntime-web from npm, installed once while online", text)
