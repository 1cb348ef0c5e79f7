"""``verify``'s baseline check: the newest baseline file plus the versions above it give
the schema that replaying every version gives.

Two more scratch databases (created and always dropped like verify's own): one that
the runner builds as a new database (the baseline file, then the versions above it),
one from a copy of the folder without baseline files (the full replay). Their schema
descriptions must be equal; the first difference fails verify, naming the baseline
file and the differing line. A squashed history (no file at or below the
baseline's version) has no replay to compare with: verify then starts its down-file check from
the baseline file instead (``squashed_at``).
"""

from __future__ import annotations

import difflib
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from natlangchain_migrate import runner
from natlangchain_migrate.baseline_files import load_baselines, newest_baseline
from natlangchain_migrate.connection import connect
from natlangchain_migrate.discovery import Migration, load_migrations
from natlangchain_migrate.errors import SchemaNotRestoredError
from natlangchain_migrate.events import log
from natlangchain_migrate.schema_dump import describe_schema
from natlangchain_migrate.settings import CallArguments, RunnerOptions

if TYPE_CHECKING:
    from importlib.abc import Traversable


def squashed_at(
    directory: Traversable | Path | str | None, migrations: Sequence[Migration]
) -> int | None:
    """The newest baseline file's version when no file it covers is left (the history
    below it squashed into it), else None. A baseline between two files (``004`` over
    ``001`` and ``003``) has a replay to be compared with, like one of a file's version."""
    newest = newest_baseline(load_baselines(directory))
    if newest is None or any(m.version <= newest.version for m in migrations):
        return None
    return newest.version


async def check(options: RunnerOptions, *, server_dsn: str) -> str | None:
    """Compare the newest baseline file (and the versions above it) with the full replay;
    return its file name, None without one. Raises SchemaNotRestoredError (step
    ``baseline``) at the first difference."""
    from natlangchain_migrate.verify import versioned_copy

    baseline = newest_baseline(load_baselines(options.migrations_dir))
    if baseline is None:
        return None
    with tempfile.TemporaryDirectory(prefix="nlcm-verify-baseline-") as copy:
        (Path(copy) / "b").mkdir()
        (Path(copy) / "r").mkdir()
        built = versioned_copy(options.migrations_dir, Path(copy) / "b", baselines_below=None)
        replayed = versioned_copy(options.migrations_dir, Path(copy) / "r", baselines_below=0)
        from_baseline = await _schema_of(options, server_dsn, built)
        from_replay = await _schema_of(options, server_dsn, replayed)
    if from_baseline != from_replay:
        raise _mismatch(baseline, from_replay, from_baseline)
    log.info("verify_baseline_ok", file=baseline.filename, version=baseline.version)
    return baseline.filename


async def _schema_of(options: RunnerOptions, server_dsn: str, folder: Path) -> str:
    """The schema a new database gets from ``folder``, on a scratch database of its own."""
    from natlangchain_migrate.verify import install_prerequisites, scratch_database

    async with scratch_database(server_dsn, wait=options.connect_wait) as (_, dsn):
        conn = await connect(dsn)
        try:
            await install_prerequisites(conn, load_migrations(folder), options.schema)
            scratch = options._replace(dsn=dsn, pool=None, migrations_dir=folder)
            await runner.up(scratch, CallArguments())
            return await describe_schema(conn, ledger_schema=options.schema)
        finally:
            await conn.close()


def _mismatch(baseline: Migration, replay: str, built: str) -> SchemaNotRestoredError:
    labels = ("after the replay", f"after {baseline.filename}")
    diff = list(difflib.unified_diff(replay.splitlines(), built.splitlines(), *labels, lineterm=""))
    changed = [line for line in diff[2:] if line[:1] in "+-" and line[1:].strip()]
    first = changed[0] if changed else "?"
    side = "only the replay has" if first.startswith("-") else "only the baseline gives"
    what = (
        f"{baseline.filename} gives another schema than replaying the versions it covers "
        f"(first difference: {side} {first[1:].strip()}); write it again with "
        "natlangchain-migrate baseline-file, or fix it by hand"
    )
    return SchemaNotRestoredError(
        what,
        version=baseline.version,
        name=baseline.name,
        step="baseline",
        file=baseline.filename,
        diff="\n".join(diff) + "\n",
        summary=what,
    )
