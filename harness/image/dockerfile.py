"""Reading the Dockerfile and .dockerignore as `docker build` does, for the subset we use.

No container runtime runs on this machine, so tests/test_container_rootfs.py replays
the Dockerfile's steps itself; it reads them from here so that the replay cannot drift
from the file. An instruction this reader does not know is an error, not a skip: a
Dockerfile that grows one needs the replay taught about it.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

KNOWN = {"FROM", "WORKDIR", "COPY", "RUN", "ENV", "USER", "LABEL", "ENTRYPOINT"}


@dataclass
class Instruction:
    keyword: str
    arguments: str
    line: int


@dataclass
class Stage:
    """One FROM and what follows it."""

    image: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def steps(self, keyword: str) -> list[Instruction]:
        """This stage's instructions of one kind, in order."""
        return [each for each in self.instructions if each.keyword == keyword]


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, instruction text) with comments dropped and continuations joined."""
    lines: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        lines.append((start, " ".join(part for part in pending if part)))
        pending = []
    if pending:
        raise ValueError(f"Dockerfile:{start}: the file ends inside a continued instruction")
    return lines


def parse(path: Path) -> list[Stage]:
    """The build stages of the Dockerfile at ``path``, in order."""
    stages: list[Stage] = []
    for number, text in _logical_lines(path.read_text(encoding="utf-8")):
        keyword, _, arguments = text.partition(" ")
        keyword = keyword.upper()
        if keyword not in KNOWN:
            raise ValueError(f"{path.name}:{number}: the replay does not know {keyword}")
        if keyword == "FROM":
            words = arguments.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(image=words[0], name=name))
        elif not stages:
            raise ValueError(f"{path.name}:{number}: {keyword} before the first FROM")
        else:
            stages[-1].instructions.append(Instruction(keyword, arguments.strip(), number))
    return stages


def key_values(arguments: str) -> dict[str, str]:
    """ENV and LABEL arguments (``KEY=value KEY2="quoted value"``) as a mapping."""
    pairs = {}
    for word in shlex.split(arguments):
        key, equals, value = word.partition("=")
        if not equals:
            raise ValueError(f"expected KEY=value, found {word!r}")
        pairs[key] = value
    return pairs


def expand(value: str, environment: dict[str, str]) -> str:
    """``$NAME`` and ``${NAME}`` from ``environment`` (unset: empty), as ENV does."""

    def lookup(match: re.Match[str]) -> str:
        return environment.get(match.group(1) or match.group(2), "")

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lookup, value)


def exec_form(arguments: str) -> list[str]:
    """ENTRYPOINT's JSON array form (the shell form would not pass signals to the CLI)."""
    words = json.loads(arguments)
    if not isinstance(words, list) or not all(isinstance(word, str) for word in words):
        raise ValueError(f"expected a JSON array of strings, found {arguments}")
    return [str(word) for word in words]


def copy_arguments(arguments: str) -> tuple[str | None, list[str], str]:
    """COPY's (``--from`` stage or None, sources, destination)."""
    words = arguments.split()
    source_stage = None
    while words and words[0].startswith("--"):
        flag, _, value = words.pop(0).partition("=")
        if flag != "--from":
            raise ValueError(f"the replay does not know COPY {flag}")
        source_stage = value
    return source_stage, words[:-1], words[-1]


class DockerIgnore:
    """.dockerignore's patterns: the last one that matches a path (or a folder above it)
    decides; ``!`` includes again; ``**`` spans folders, ``*`` and ``?`` do not."""

    def __init__(self, text: str) -> None:
        self._rules: list[tuple[bool, re.Pattern[str]]] = []
        for raw in text.splitlines():
            pattern = raw.strip()
            if not pattern or pattern.startswith("#"):
                continue
            include = pattern.startswith("!")
            pattern = pattern.removeprefix("!").strip().strip("/")
            self._rules.append((include, re.compile(_translate(pattern))))

    def excludes(self, relative: str) -> bool:
        """True when ``relative`` (a path in the context, with /) is left out of it."""
        parts = PurePosixPath(relative).parts
        candidates = ["/".join(parts[: depth + 1]) for depth in range(len(parts))]
        excluded = False
        for include, regex in self._rules:
            if any(regex.fullmatch(candidate) for candidate in candidates):
                excluded = not include
        return excluded


def _translate(pattern: str) -> str:
    out = []
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            out.append("(?:.*/)?")
            index += 3
        elif pattern.startswith("**", index):
            out.append(".*")
            index += 2
        elif pattern[index] == "*":
            out.append("[^/]*")
            index += 1
        elif pattern[index] == "?":
            out.append("[^/]")
            index += 1
        else:
            out.append(re.escape(pattern[index]))
            index += 1
    return "".join(out)
