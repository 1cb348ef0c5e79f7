"""What is pending: one function decides it (``decide``), before the lock and again under
it, from one object that carries where the migrations come from (``Sources``).

``Sources`` holds the folder and, for the up-to-date start-up, its checksum manifest:
with one, nothing is read until the ledger says it must be (a folder with R__ files has
none that counts: see manifest.py), and whether the folder still matches it (a stat per
file) is checked in a thread while the run connects.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from natlangchain_migrate.baseline_files import (
    baseline_applies,
    load_baselines,
    newest_baseline,
    refuse_uncovered_files,
    replays_instead,
    with_baseline,
)
from natlangchain_migrate.discovery import Migration, load_migrations
from natlangchain_migrate.events import log
from natlangchain_migrate.manifest import (
    Manifest,
    ManifestEntry,
    folder_matches,
    recorded_manifest,
)
from natlangchain_migrate.plan import (
    MigrationPlan,
    future_sentence,
    newest_version,
    plan_migrations,
    raise_on_drift,
    raise_on_out_of_order,
)
from natlangchain_migrate.repeatables import Repeatable, load_repeatables, with_repeatables
from natlangchain_migrate.settings import CallArguments

if TYPE_CHECKING:
    from importlib.abc import Traversable

    from natlangchain_migrate.ledger import LedgerSnapshot

# Checking more files than this against the manifest is worth a thread (about 1 ms to
# start) that does it while the connection is being made.
_STAT_INLINE_UP_TO = 64


class Sources:
    """The migration files of one folder, read once and only when needed, and the
    manifest that can stand in for them while nothing is pending."""

    def __init__(
        self,
        migrations_dir: Traversable | Path | str | None,
        *,
        manifest: Manifest | None = None,
        folder_check: Awaitable[bool] | None = None,
    ) -> None:
        self.migrations_dir = migrations_dir
        self.manifest = manifest
        self._folder_check = folder_check
        self._files: tuple[list[Migration], list[Repeatable]] | None = None
        self._baselines: list[Migration] | None = None

    @classmethod
    def for_run(
        cls, migrations_dir: Traversable | Path | str | None, call: CallArguments, *, pooled: bool
    ) -> Sources:
        """The sources of an ``up`` call, inside its event loop: the manifest's fast path
        when the call asks for everything (no target, no skips), else the files."""
        manifest = None
        if call.target_version is None and not call.skip:
            manifest = recorded_manifest(migrations_dir)
        if manifest is None:
            sources = cls(migrations_dir)
            sources.load()
            return sources
        loop = asyncio.get_running_loop()
        folder_check: asyncio.Future[bool]
        # A pool's connection is ready at once: nothing to overlap the check with.
        if len(manifest.names) > _STAT_INLINE_UP_TO and not pooled:
            folder_check = loop.run_in_executor(None, folder_matches, manifest)
        else:
            folder_check = loop.create_future()
            folder_check.set_result(folder_matches(manifest))
        return cls(migrations_dir, manifest=manifest, folder_check=folder_check)

    @property
    def loaded(self) -> bool:
        return self._files is not None

    def load(self) -> tuple[list[Migration], list[Repeatable]]:
        """The versioned files and the repeatables, read on first use."""
        if self._files is None:
            self._files = (
                load_migrations(self.migrations_dir),
                load_repeatables(self.migrations_dir),
            )
        return self._files

    @property
    def baselines(self) -> list[Migration]:
        """The baseline files (``NNN_name.baseline.sql``), oldest first, read on first use."""
        if self._baselines is None:
            self._baselines = load_baselines(self.migrations_dir)
        return self._baselines

    @property
    def migrations(self) -> list[Migration]:
        return self.load()[0]

    @property
    def repeatables(self) -> list[Repeatable]:
        return self.load()[1]

    def versions(self) -> Sequence[Migration] | Sequence[ManifestEntry]:
        """What the settings are checked against: the manifest's up files while the
        files are unread, else the files."""
        if self.manifest is not None and not self.loaded:
            return self.manifest.ups
        return self.migrations

    async def all_applied(
        self, ledger_digest: Callable[[], Awaitable[str | None]]
    ) -> list[int] | None:
        """The versions, when the manifest proves every one applied (the folder matches
        it and the ledger's digest, one query, is the one it recorded); else None."""
        if self.manifest is None or self._folder_check is None:
            return None
        if not await self._folder_check:
            return None
        if await ledger_digest() != self.manifest.ledger_digest:
            return None
        return self.manifest.versions


def plan_of(
    sources: Sources,
    snapshot: LedgerSnapshot,
    call: CallArguments | None = None,
    *,
    schema: str | None = None,
) -> MigrationPlan:
    """Every version's and repeatable's state, and what would run, in order (pure but for
    reading the files): on a new database, the newest baseline file in place of the
    versions it covers (baseline_files.py), unless it was written for another ``schema``
    than the run's and the files it covers are here to replay."""
    call = call or CallArguments()
    baseline = newest_baseline(sources.baselines)
    if baseline is not None:
        refuse_uncovered_files(baseline, sources.migrations)
    plan = plan_migrations(
        sources.migrations,
        snapshot.rows,
        target=call.target_version,
        skip=call.skip,
        squashed_up_to=baseline.version if baseline else None,
    )
    if (
        baseline is not None
        and baseline_applies(baseline, ledger_empty=not snapshot.rows, call=call)
        and not (schema is not None and replays_instead(baseline, schema, sources.migrations))
    ):
        plan = with_baseline(plan, baseline, sources.migrations)
    if sources.repeatables or snapshot.repeatables:
        plan = with_repeatables(
            plan,
            sources.repeatables,
            snapshot.repeatables,
            release=newest_version(sources.migrations),
        )
    return plan


def decide(
    sources: Sources,
    snapshot: LedgerSnapshot,
    call: CallArguments,
    *,
    strict_order: bool,
    refuse_future: bool = False,
    warned: set[int | str] | None = None,
    schema: str | None = None,
) -> MigrationPlan:
    """What is pending, for a run: the plan, refused on drift (a changed or vanished
    applied file) and, in strict order, on a pending version below an applied one.
    Rows a newer release applied are not drift: see ``face_future``.

    The run calls it before the lock and again under it (another runner may have just
    applied something).
    """
    plan = plan_of(sources, snapshot, call, schema=schema)
    raise_on_drift(plan)
    face_future(plan, refuse=refuse_future, warned=set() if warned is None else warned)
    if strict_order:
        raise_on_out_of_order(plan)
    return plan


def face_future(plan: MigrationPlan, *, refuse: bool, warned: set[int | str]) -> None:
    """Rows a newer release applied (versions above the newest file, repeatables it last
    applied): refused when asked (FutureMigrationsError), else one ``future_migrations``
    warning per run for the versions and repeatable names not in ``warned`` (which it
    then holds), and nothing applied for them."""
    if not plan.future and not plan.future_repeatables:
        return
    if refuse:
        raise_on_drift(plan, refuse_future=True)
    versions = [entry.version for entry in plan.future]
    names = [entry.name for entry in plan.future_repeatables]
    keys: list[int | str] = [*versions, *names]
    new = [key for key in keys if key not in warned]
    if not new:
        return
    warned.update(new)
    extra = {"repeatables": names} if names else {}
    log.warning(
        "future_migrations",
        versions=versions,
        **extra,
        note=f"{future_sentence(plan)}; this release applies nothing for them and runs on "
        "(to refuse them instead: --refuse-future)",
    )
