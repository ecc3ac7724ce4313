"""Tests wait on events with generous limits (tests/waits.py), never on the clock (issue 29 item 13).

A contributor's `make test` on a busy machine failed with TimeoutExpired (120 s) in a test that alone passes in
25 s. These checks read the test sources: a limit on a wait (``timeout=``, ``.wait(``, ``.join(``,
``monotonic() + ``) names ``WAIT_S`` instead of a literal number of seconds, and ``time.sleep`` only paces a loop
that polls for an event.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
LITERAL_LIMIT = re.compile(r"(\btimeout\s*(?::\s*float\s*)?=\s*|\.wait\(\s*|\.join\(\s*|monotonic\(\)\s*\+\s*)"
                           r"(\d+(?:\.\d+)?)\b")


def _sources() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if p.name not in ("test_waits.py",))


def literal_limits(text: str) -> list[str]:
    """Waits limited by a number written in place (``timeout=120``) rather than by WAIT_S."""
    return [m.group(0) for m in LITERAL_LIMIT.finditer(text)]


def bare_sleeps(text: str) -> list[int]:
    """Lines of ``time.sleep(...)`` calls that are not inside a loop (a sleep that stands in for an event)."""
    tree = ast.parse(text)
    in_loop: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.While, ast.For)):
            in_loop |= {n.lineno for n in ast.walk(node) if hasattr(n, "lineno")}
    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "sleep"
            and isinstance(node.func.value, ast.Name) and node.func.value.id == "time" and node.lineno not in in_loop]


def test_the_checks_catch_clock_waits() -> None:
    clocked = "proc.communicate(timeout=120)\ndeadline = time.monotonic() + 300\nthread.join(60)\n"
    assert literal_limits(clocked) == ["timeout=120", "monotonic() + 300", ".join(60"]
    assert literal_limits("proc.communicate(timeout=WAIT_S)\nx.wait(WAIT_S)\n") == []
    assert bare_sleeps("import time\ntime.sleep(0.6)\nwhile True:\n    time.sleep(0.2)\n") == [2]


def test_every_wait_in_the_tests_is_on_an_event_with_a_generous_limit() -> None:
    found = []
    for path in _sources():
        text = path.read_text(encoding="utf-8")
        found += [f"{path.relative_to(TESTS)}: {hit}" for hit in literal_limits(text)]
        found += [f"{path.relative_to(TESTS)}:{line}: time.sleep outside a polling loop" for line in bare_sleeps(text)]
    assert not found, "waits on the clock (use tests/waits.py WAIT_S, poll for the event):\n" + "\n".join(found)
