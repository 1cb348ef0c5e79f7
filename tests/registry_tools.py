"""Real peer tools and public histories from the npm registry, installed by the tests
themselves into a cache reused across runs (CI's fresh clone installs once per run).

The cache is ``.venv/registry-tools/<spec>`` beside the suite (or
``NATLANGCHAIN_TEST_TOOLS_DIR``); installs from parallel workers are serialised by a
file lock. Without npm, or with the registry out of reach, the caller skips, saying why.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("NATLANGCHAIN_TEST_TOOLS_DIR", _ROOT / ".venv" / "registry-tools"))


def npm_packages(*specs: str) -> Path:
    """The ``node_modules`` folder holding ``specs`` (``name@version``), installed if absent;
    skips the test when npm or the registry cannot be reached."""
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed; the real-tool tests need node and npm")
    key = hashlib.sha256(" ".join(sorted(specs)).encode()).hexdigest()[:12]
    prefix = CACHE / f"npm-{key}"
    done = prefix / ".installed"
    prefix.mkdir(parents=True, exist_ok=True)
    with (prefix / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            installed = subprocess.run(
                [
                    npm,
                    "install",
                    "--no-save",
                    "--no-audit",
                    "--no-fund",
                    "--prefix",
                    str(prefix),
                    *specs,
                ],
                capture_output=True,
                text=True,
                check=False,
                timeout=240,
            )
            if installed.returncode != 0:
                lines = installed.stderr.strip().splitlines()
                causes = [line for line in lines if "error" in line and "complete log" not in line]
                reason = (causes or lines or ["no output"])[0]
                pytest.skip(
                    f"npm install {' '.join(specs)} failed (registry out of reach?): {reason}"
                )
            done.write_text(" ".join(specs))
    return prefix / "node_modules"
