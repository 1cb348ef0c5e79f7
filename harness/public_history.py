"""A real public history in timestamp form, for tests and benchmarks: LiteLLM's prisma
migrations as the litellm-proxy-extras package (PyPI, BerriAI/litellm; the test extra
pins it) ships them, renamed as the runner's refusals tell a team to rename them."""

from __future__ import annotations

import shutil
from pathlib import Path


def renumber_as_told(folder: Path, *, dates: bool) -> list[str]:
    """What the refusals tell a team to do: a folder sharing its timestamp with an earlier
    one takes the next free second; with ``dates``, an 8-digit date gets its time, 000000.
    Returns the names of the folders renamed."""
    seen: set[int] = set()
    renamed = []
    for path in sorted(p for p in folder.iterdir() if p.is_dir()):
        digits, _, rest = path.name.partition("_")
        if len(digits) < 14 and not dates:
            continue
        version = int(digits.ljust(14, "0"))
        while version in seen:
            version += 1
        seen.add(version)
        if f"{version}_{rest}" != path.name:
            path.rename(folder / f"{version}_{rest}")
            renamed.append(path.name)
    return renamed


def litellm_migrations() -> Path:
    """The installed package's folder of prisma migrations (``pip install -e '.[test]'``)."""
    try:
        import litellm_proxy_extras
    except ImportError:
        raise SystemExit(
            "litellm-proxy-extras is not installed: pip install -e '.[test]'"
        ) from None
    return Path(litellm_proxy_extras.__file__).parent / "migrations"


def write_litellm(folder: Path) -> int:
    """LiteLLM's history copied into ``folder`` and renamed so that it runs; the number of
    migrations (one ``<version>_<name>/migration.sql`` folder each)."""
    shutil.copytree(litellm_migrations(), folder)
    renumber_as_told(folder, dates=False)
    renumber_as_told(folder, dates=True)
    return sum(1 for path in folder.iterdir() if path.is_dir())
