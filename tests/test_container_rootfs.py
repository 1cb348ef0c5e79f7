"""The image, as far as this machine allows: the Dockerfile's steps replayed on a bare Debian.

No container runtime runs here, so harness/image/replay.py builds each stage from a copy
of a cached ``debootstrap --variant=minbase bookworm`` root with Debian's Python 3.11
(harness/image/rootfs.py says how it differs from python:3.11-slim), then runs the result
as a container would: PID 1 of a PID namespace, read-only root, uid 10001, the
Dockerfile's environment and no HOME, against the suite's server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.image.replay import Image, build, container_pid, start
from harness.image.rootfs import base_rootfs, why_unavailable
from harness.servers.pgcluster import PASSWORD, free_port
from tests.conftest import ledger_rows, log_events

REPO = Path(__file__).resolve().parent.parent
UNAVAILABLE = why_unavailable()

pytestmark = [
    pytest.mark.system,
    pytest.mark.slow,
    pytest.mark.skipif(UNAVAILABLE is not None, reason=f"the root filesystem {UNAVAILABLE}"),
]


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Image]:
    """The Dockerfile's final stage, built once for this module."""
    scratch = tmp_path_factory.mktemp("image")
    try:
        yield build(REPO / "Dockerfile", REPO, base_rootfs(), scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def test_image_keeps_the_dockerfile_entrypoint_and_settings(image: Image) -> None:
    """The replayed image has the entrypoint, user and environment a deployment relies on."""
    assert image.entrypoint == ["natlangchain-migrate"]
    assert image.user == "10001"
    assert image.environment["NATLANGCHAIN_MIGRATE_LOG_FORMAT"] == "json"
    assert image.environment["NATLANGCHAIN_MIGRATE_WAIT"] == "60"
    assert "HOME" not in image.environment


def test_image_applies_the_migrations_on_a_read_only_root(image: Image, database_url: str) -> None:
    """Exit 0, 001-003 recorded, every stderr line a JSON event, no password printed."""
    runner = start(image, environment={"DATABASE_URL": database_url})
    stdout, stderr = runner.communicate(timeout=240)

    assert runner.returncode == 0, stderr
    assert [row["version"] for row in asyncio.run(ledger_rows(database_url))] == [1, 2, 3]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines
    assert all(line.startswith("{") for line in lines), stderr
    events = [event["event"] for event in log_events(stderr)]
    assert events.count("migration_applied") == 3, events
    assert PASSWORD not in stdout + stderr


def test_image_root_and_tmp_are_read_only_for_uid_10001(image: Image) -> None:
    """What the entrypoint ran under: uid 10001, no HOME, nothing writable at / or /tmp."""
    probe = "id -u; echo HOME=${HOME-unset}; touch /probe; touch /tmp/probe"
    runner = start(image, environment={}, command=["/bin/sh", "-c", probe])
    stdout, stderr = runner.communicate(timeout=60)

    assert stdout.splitlines() == ["10001", "HOME=unset"]
    assert stderr.count("Read-only file system") == 2, stderr
    assert runner.returncode != 0


def test_image_pid_1_exits_143_on_sigterm_while_waiting_for_the_database(image: Image) -> None:
    """`docker stop` during the Dockerfile's 60 s wait: the entrypoint is PID 1 and exits 143."""
    unreachable = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{free_port()}/natlangchain"
    runner = start(image, environment={"DATABASE_URL": unreachable})
    assert runner.stderr is not None
    seen: list[str] = []
    for line in runner.stderr:
        seen.append(line)
        if line.startswith("{") and json.loads(line)["event"] == "database_waiting":
            break
    pid = container_pid(runner)
    assert pid is not None, "".join(seen)
    status = Path(f"/proc/{pid}/status").read_text()
    assert status_field(status, "Uid").split()[0] == "10001"
    assert status_field(status, "NSpid").split()[-1] == "1"

    os.kill(pid, signal.SIGTERM)
    _, rest = runner.communicate(timeout=60)

    assert runner.returncode == 143, "".join(seen) + rest
    assert "run_interrupted" in [event["event"] for event in log_events(rest)]
    assert PASSWORD not in "".join(seen) + rest


def status_field(status: str, name: str) -> str:
    """One field of /proc/PID/status."""
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return value.strip()
    raise AssertionError(f"no {name} in /proc status")
