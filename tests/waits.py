"""How long a test waits for something, decided once (issue 29).

Tests wait on events: a file appears, a line is printed, a process exits, a server answers. The limit on
such a wait only stops a test that hangs, so it is generous: with other jobs sharing two cores, a step that
takes 25 s alone can take minutes, and CI must never go red for load alone. A fixed sleep is never a wait:
a test that needs something to have happened polls for it (tests/test_waits.py enforces both rules).
"""

from __future__ import annotations

WAIT_S = 1800  # seconds: the most any single wait of a test may take before it counts as hung
POLL_S = 0.05  # seconds between two looks at a file, a process or a server
