"""The test suite cleans up after itself: a full run once kept 23 GB in /tmp and filled CI's disk (tests/scratch.py)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.waits import WAIT_S

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

INNER = textwrap.dedent('''
    from pathlib import Path

    import pytest

    from tests.scratch import scratch_dir

    SEEN = Path(__file__).with_name("seen.txt")


    @pytest.fixture(scope="module")
    def shared(request):
        folder = scratch_dir(request, "shared")
        (folder / "weights.bin").write_bytes(b"x" * 1024)
        with SEEN.open("a") as seen:
            seen.write(f"{folder}\\n")
        return folder


    def test_uses_it(shared, tmp_path):
        (tmp_path / "own.bin").write_bytes(b"y")
        with SEEN.open("a") as seen:
            seen.write(f"{tmp_path}\\n")
        assert (shared / "weights.bin").is_file()


    def test_may_fail(shared):
        assert "{outcome}" == "pass"
''')


def _run(tmp_path: Path, outcome: str) -> tuple[int, list[Path]]:
    package = tmp_path / "inner"
    package.mkdir()
    (package / "test_inner.py").write_text(INNER.replace("{outcome}", outcome))
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(ROOT),
                           "-c", str(ROOT / "setup.cfg"), "--basetemp", str(tmp_path / "base"), str(package)],
                          cwd=ROOT, capture_output=True, text=True, timeout=WAIT_S)
    seen = [Path(line) for line in (package / "seen.txt").read_text().split()]
    return done.returncode, seen


def test_folders_of_passed_tests_and_their_fixtures_are_removed(tmp_path: Path):
    code, seen = _run(tmp_path, "pass")
    assert code == 0
    assert len(seen) == 2 and all(str(folder).startswith(str(tmp_path / "base")) for folder in seen)
    assert not any(folder.exists() for folder in seen)


def test_a_failure_keeps_the_fixture_folder_to_look_at(tmp_path: Path):
    code, seen = _run(tmp_path, "fail")
    assert code == 1
    shared, own = seen
    assert (shared / "weights.bin").is_file()  # the fixture lived through a failure: kept
    assert not own.exists()  # the test that passed: removed


def test_no_fixture_makes_a_folder_that_outlives_it():
    """Every folder wider than one test comes from scratch_dir (removed at teardown), never from mktemp."""
    offenders = [f"{path.relative_to(ROOT)}:{number}"
                 for path in sorted(TESTS.rglob("*.py")) if path.name not in {"scratch.py", Path(__file__).name}
                 for number, line in enumerate(path.read_text().splitlines(), 1)
                 if re.search(r"\bmktemp\(|tmp_path_factory", line)]
    assert not offenders, f"use tests.scratch.scratch_dir instead: {offenders}"
