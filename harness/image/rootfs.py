"""A bare Debian bookworm root filesystem standing in for the image's base, built once and cached.

The image's base is python:3.11-slim-bookworm: Debian bookworm with Python 3.11 in
/usr/local. No container runtime runs on this machine, so the stand-in is
``debootstrap --variant=minbase bookworm`` plus Debian's own Python 3.11
(``python3``, ``python3-venv`` for venv and ensurepip's pip, ``python-is-python3`` for
``python``) and CA certificates. What differs: Python is 3.11.2 in /usr/bin rather
than the latest 3.11 in /usr/local, and ensurepip's pip is 23.0.1.

The cache folder is $NATLANGCHAIN_ROOTFS_CACHE, else /var/cache/natlangchain-migrate/rootfs;
building it takes about half a minute and needs root, debootstrap and Debian's mirror.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

CACHE_VARIABLE = "NATLANGCHAIN_ROOTFS_CACHE"
DEFAULT_CACHE = Path("/var/cache/natlangchain-migrate/rootfs")
SUITE = "bookworm"
PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
# The environment python:3.11-slim sets for every step and for the container.
BASE_ENVIRONMENT = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}
_APT_ENVIRONMENT = BASE_ENVIRONMENT | {"DEBIAN_FRONTEND": "noninteractive"}
# Where root's tools live, whatever PATH the tests were started with.
SYSTEM_PATH = BASE_ENVIRONMENT["PATH"]


def tool(name: str) -> str:
    """The full path of a system tool (debootstrap, chroot, unshare are in sbin folders)."""
    found = shutil.which(name, path=f"{os.environ.get('PATH', '')}:{SYSTEM_PATH}")
    if found is None:
        raise FileNotFoundError(f"{name} is not installed")
    return found


def why_unavailable() -> str | None:
    """Why a root filesystem cannot be built or entered here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root (chroot, mount namespaces); CI runs as root"
    for name in ("debootstrap", "chroot", "unshare", "mount"):
        try:
            tool(name)
        except FileNotFoundError:
            return f"needs {name} (apt-get install debootstrap)"
    return None


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_VARIABLE) or DEFAULT_CACHE)


def base_rootfs() -> Path:
    """The cached root filesystem, built first if missing (one builder at a time)."""
    cache = cache_dir()
    ready = cache / f"{SUITE}-minbase-python3"
    complete = cache / f"{ready.name}.complete"
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not complete.exists():
            shutil.rmtree(ready, ignore_errors=True)
            building = Path(tempfile.mkdtemp(prefix="building-", dir=cache))
            try:
                _build(building)
                building.rename(ready)
                complete.touch()
            finally:
                shutil.rmtree(building, ignore_errors=True)
    return ready


def _build(root: Path) -> None:
    os.chmod(root, 0o755)  # mkdtemp's 700 would keep every other user out of /
    _run(tool("debootstrap"), "--variant=minbase", SUITE, str(root))
    install = " ".join(PACKAGES)
    _run(
        tool("chroot"),
        str(root),
        "/bin/sh",
        "-ec",
        f"apt-get update -qq && apt-get install -y -qq --no-install-recommends {install} "
        "&& apt-get clean && rm -rf /var/lib/apt/lists/*",
        environment=_APT_ENVIRONMENT,
    )


def _run(*command: str, environment: dict[str, str] | None = None) -> None:
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=environment or {"PATH": SYSTEM_PATH},
        check=False,
        timeout=900,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command[:3])} ... exited {done.returncode}: {done.stderr[-2000:]}"
        )
