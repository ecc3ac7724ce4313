"""Headless Chromium (Debian's /usr/bin/chromium) for the report tests and benchmarks: no npm, no driver.

``--dump-dom`` prints the DOM after the page's scripts ran (report.html writes its own errors, refused
requests and timings into it); ``--screenshot`` writes a PNG. Each run gets a fresh profile folder and
every background feature that could reach the network is off.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-default-apps",
         "--enable-logging=stderr", "--v=0")


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


@dataclass
class Run:
    stdout: str
    stderr: str
    seconds: float

    def console_lines(self) -> list[str]:
        """Console messages Chromium logged (errors, CSP refusals, console.log ...)."""
        return [line for line in self.stderr.splitlines() if ":CONSOLE" in line]


def run_chromium(page: Path, *extra: str, timeout: float = 120.0, window: str = "1280,2400") -> Run:
    import time

    binary = find_chromium()
    if binary is None:
        raise FileNotFoundError("chromium not found (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="skinonnx-chromium-") as profile:
        t0 = time.perf_counter()
        done = subprocess.run([binary, *FLAGS, f"--user-data-dir={profile}", f"--window-size={window}", *extra,
                               page.resolve().as_uri()], capture_output=True, text=True, timeout=timeout)
        seconds = time.perf_counter() - t0
    return Run(done.stdout, done.stderr, seconds)


def dump_dom(page: Path, **kwargs) -> Run:
    return run_chromium(page, "--dump-dom", **kwargs)


def screenshot(page: Path, png: Path, **kwargs) -> Run:
    return run_chromium(page, f"--screenshot={png}", **kwargs)
