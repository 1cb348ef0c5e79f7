"""Replaying the Dockerfile on copies of a root filesystem, and running the result like a container.

Each stage starts as a copy of the base root filesystem (harness/image/rootfs.py); COPY
copies from the build context (less .dockerignore) or from an earlier stage, RUN
runs ``/bin/sh -c`` in a chroot with the stage's environment, working directory and
user. The image is then run as Docker would run it: PID 1 of its own PID namespace,
the root filesystem mounted read-only, a fresh /proc, a small /dev, as the image's
user, with only the image's environment plus what the caller passes (no HOME).

Build steps reach PyPI through this machine's network, whose TLS is intercepted: RUN
steps get the machine's CA bundle as PIP_CERT (a real build would use the base
image's). The run shares the machine's network, so it reaches a test server on
127.0.0.1.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from harness.image.dockerfile import (
    DockerIgnore,
    Stage,
    copy_arguments,
    exec_form,
    expand,
    key_values,
    parse,
)
from harness.image.rootfs import BASE_ENVIRONMENT, SYSTEM_PATH, tool

HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
_BUILD_CA = "run/build-ca-certificates.crt"
_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")


@dataclass
class Image:
    """What a container is started from: a root filesystem and the Dockerfile's settings."""

    root: Path
    environment: dict[str, str] = field(default_factory=lambda: dict(BASE_ENVIRONMENT))
    user: str = "0"
    workdir: str = "/"
    entrypoint: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)


def build(dockerfile: Path, context: Path, base: Path, scratch: Path) -> Image:
    """Every stage of ``dockerfile`` replayed in ``scratch``; the last stage's image."""
    ignore = DockerIgnore((context / ".dockerignore").read_text(encoding="utf-8"))
    built: dict[str, Image] = {}
    image = Image(root=scratch)
    for index, stage in enumerate(parse(dockerfile)):
        root = scratch / f"stage{index}"
        subprocess.run([tool("cp"), "-a", str(base), str(root)], check=True)
        os.chmod(root, 0o755)  # as an image's /, whatever the cache's folder is
        image = _replay(stage, Image(root=root), context, ignore, built)
        built[stage.name or str(index)] = image
    return image


def _replay(
    stage: Stage, image: Image, context: Path, ignore: DockerIgnore, built: dict[str, Image]
) -> Image:
    for step in stage.instructions:
        where = f"Dockerfile:{step.line}"
        if step.keyword == "WORKDIR":
            image.workdir = _absolute(image.workdir, expand(step.arguments, image.environment))
            _inside(image.root, image.workdir).mkdir(parents=True, exist_ok=True)
        elif step.keyword == "ENV":
            for key, value in key_values(step.arguments).items():
                image.environment[key] = expand(value, image.environment)
        elif step.keyword == "LABEL":
            image.labels |= key_values(step.arguments)
        elif step.keyword == "USER":
            image.user = step.arguments
        elif step.keyword == "ENTRYPOINT":
            image.entrypoint = exec_form(step.arguments)
        elif step.keyword == "COPY":
            _copy(image, step.arguments, context, ignore, built, where)
        elif step.keyword == "RUN":
            _run_step(image, step.arguments, where)
    return image


def _absolute(workdir: str, path: str) -> str:
    return str(PurePosixPath(workdir) / path)


def _inside(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


def _copy(
    image: Image,
    arguments: str,
    context: Path,
    ignore: DockerIgnore,
    built: dict[str, Image],
    where: str,
) -> None:
    stage_name, sources, destination = copy_arguments(arguments)
    into_folder = destination.endswith("/") or len(sources) > 1
    target = _inside(image.root, _absolute(image.workdir, destination))
    for source in sources:
        if stage_name is None:
            origin = context / source
            if ignore.excludes(source) or not origin.exists():
                raise FileNotFoundError(f"{where}: COPY {source}: not in the build context")
        else:
            origin = _inside(built[stage_name].root, source)
        landing = target / origin.name if into_folder and not origin.is_dir() else target
        if origin.is_dir():
            prefix = origin.relative_to(context).as_posix() if stage_name is None else None
            _copy_tree(origin, landing, ignore if prefix else None, prefix)
        else:
            landing.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, landing, follow_symlinks=False)


def _copy_tree(
    origin: Path, landing: Path, ignore: DockerIgnore | None, prefix: str | None
) -> None:
    """A folder's contents into ``landing``, symlinks kept, less what .dockerignore leaves out."""

    def ignored(folder: str, names: list[str]) -> set[str]:
        if ignore is None or prefix is None:
            return set()
        relative = Path(folder).relative_to(origin).as_posix()
        base = prefix if relative == "." else f"{prefix}/{relative}"
        return {name for name in names if ignore.excludes(f"{base}/{name}")}

    shutil.copytree(origin, landing, symlinks=True, ignore=ignored, dirs_exist_ok=True)


def _run_step(image: Image, command: str, where: str) -> None:
    ca = _inside(image.root, "/" + _BUILD_CA)
    ca.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(HOST_CA_BUNDLE, ca)
    try:
        done = subprocess.run(
            [
                tool("chroot"),
                f"--userspec={_user_spec(image)}",
                str(image.root),
                "/bin/sh",
                "-ec",
                f"cd {shlex.quote(image.workdir)}\n{command}",
            ],
            env=image.environment | {"PIP_CERT": "/" + _BUILD_CA},
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
    finally:
        ca.unlink()
    if done.returncode != 0:
        raise RuntimeError(f"{where}: RUN exited {done.returncode}:\n{done.stderr[-3000:]}")


def _user_spec(image: Image) -> str:
    """uid:gid as Docker resolves USER: a number or a name, the group from /etc/passwd."""
    name_or_uid = image.user.partition(":")[0]
    for line in _inside(image.root, "/etc/passwd").read_text(encoding="utf-8").splitlines():
        fields = line.split(":")
        if name_or_uid in (fields[0], fields[2]):
            return f"{fields[2]}:{fields[3]}"
    return f"{name_or_uid}:0"


def start(
    image: Image,
    *,
    environment: dict[str, str],
    command: list[str] | None = None,
) -> subprocess.Popen[str]:
    """The image's entrypoint (or ``command``) as a container's PID 1, read-only root.

    The Popen is `unshare`, which waits for the container's process and exits with
    its status; signal the process itself (``container_pid``), as `docker stop` does.
    """
    root = shlex.quote(str(image.root))
    variables = image.environment | environment
    argv = command if command is not None else image.entrypoint
    lines = [
        f"mount --bind {root} {root}",
        f"mount -t tmpfs -o nosuid,mode=755 tmpfs {root}/dev",
        *(
            f"touch {root}/dev/{name} && mount --bind /dev/{name} {root}/dev/{name}"
            for name in _DEVICES
        ),
        f"ln -s /proc/self/fd {root}/dev/fd",
        # The container's own /dev/shm, as Docker gives one (not the host's).
        f"mkdir {root}/dev/shm",  # noqa: S108
        f"mount -t tmpfs -o nosuid,nodev,noexec tmpfs {root}/dev/shm",  # noqa: S108
        f"mount -o remount,ro,bind {root}",
        f"mount -t proc proc {root}/proc",
        shlex.join(
            [
                "exec",
                "chroot",
                f"--userspec={_user_spec(image)}",
                str(image.root),
                "/usr/bin/env",
                "-i",
                f"--chdir={image.workdir}",
                *(f"{key}={value}" for key, value in variables.items()),
                *argv,
            ]
        ),
    ]
    script = "\n".join(lines)
    return subprocess.Popen(
        [tool("unshare"), "--mount", "--pid", "--fork", "--kill-child", "/bin/sh", "-ec", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PATH": SYSTEM_PATH},
    )


def container_pid(runner: subprocess.Popen[str]) -> int | None:
    """The host's PID of the container's PID 1 (the child `unshare` forked), once it exists."""
    children = Path(f"/proc/{runner.pid}/task/{runner.pid}/children")
    try:
        found = children.read_text().split()
    except FileNotFoundError:
        return None
    return int(found[0]) if found else None
