"""Temp folders for fixtures that outlive one test: removed when their fixture is torn down.

pytest keeps every ``tmp_path_factory.mktemp`` folder until the session ends. Each trained run holds ~0.4 GB
(best.pt, last.pt with optimizer state, ONNX files), so a full run kept 23 GB in /tmp and filled CI's disk.
Function-scoped ``tmp_path`` folders go with ``tmp_path_retention_policy = failed`` (setup.cfg); module-,
package- and session-scoped fixtures take their folder from :func:`scratch_dir`, which removes it at the
fixture's teardown unless a test failed while it lived (then it stays, to be looked at, like a failed test's).
tests/test_scratch.py checks that no fixture calls ``mktemp`` itself.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


def scratch_dir(request: pytest.FixtureRequest, name: str) -> Path:
    """A new folder under the session's basetemp, removed when the fixture whose ``request`` this is is torn down."""
    factory: pytest.TempPathFactory = request.getfixturevalue("tmp_path_factory")
    path = factory.mktemp(name)
    failed_before = request.session.testsfailed

    def remove() -> None:
        if request.session.testsfailed == failed_before:
            shutil.rmtree(path, ignore_errors=True)

    request.addfinalizer(remove)
    return path
