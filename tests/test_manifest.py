"""The checksum manifest (migrations.sum): an up-to-date start-up that reads no migration
file, and every way the manifest can be wrong falling back to reading them all."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from importlib.abc import Traversable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from natlangchain_migrate import discovery, layouts, migrate
from natlangchain_migrate.errors import DriftError, ExitCode
from natlangchain_migrate.manifest import MANIFEST_NAME, current_manifest, write_manifest
from tests.conftest import run_cli, write_migrations

FILES = {
    "001_a.sql": "CREATE TABLE a (id int);\n",
    "001_a.down.sql": "DROP TABLE a;\n",
    "002_b.sql": "CREATE TABLE b (id int);\n",
}


@pytest.fixture
def counted_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The migration files each run reads (spies on the two functions that read them:
    layout detection's head, which holds a small file whole, and the whole file)."""
    reads: list[str] = []
    real, real_head = discovery.read_text, layouts._read_head

    def spy(entry: Traversable) -> str:
        reads.append(entry.name)
        return real(entry)

    def spy_head(entry: Traversable) -> bytes | None:
        reads.append(entry.name)
        return real_head(entry)

    monkeypatch.setattr(discovery, "read_text", spy)
    monkeypatch.setattr(layouts, "_read_head", spy_head)
    return reads


def _history(count: int) -> dict[str, str]:
    """``count`` one-table migrations; above 64 the runner checks them in a thread."""
    return {f"{n:03d}_t{n}.sql": f"CREATE TABLE t{n} (id int);\n" for n in range(1, count + 1)}


@pytest.mark.parametrize("count", [3, 70], ids=["checked-inline", "checked-in-a-thread"])
@pytest.mark.anyio
async def test_up_to_date_start_up_with_a_manifest_reads_no_migration_file(
    database_url: str, tmp_path: Path, counted_reads: list[str], count: int
) -> None:
    folder = write_migrations(tmp_path / "m", _history(count))
    write_manifest(folder)
    first = await migrate(database_url, migrations_dir=folder)
    assert [r.version for r in first.applied] == list(range(1, count + 1))
    counted_reads.clear()
    again = await migrate(database_url, migrations_dir=folder)
    assert again.up_to_date
    assert again.already_applied == list(range(1, count + 1))
    assert counted_reads == []
    # A file that grew is noticed by the listing, and the files are read after all.
    (folder / f"{count:03d}_t{count}.sql").write_text(f"CREATE TABLE t{count} (id bigint);\n")
    with pytest.raises(DriftError):
        await migrate(database_url, migrations_dir=folder)
    assert counted_reads


def _same_size_edit(folder: Path) -> None:
    (folder / "002_b.sql").write_text("CREATE TABLE c (id int);\n")


@pytest.mark.parametrize(
    "change",
    [
        lambda folder: (folder / "003_c.sql").write_text("CREATE TABLE c (id int);\n"),
        lambda folder: (folder / "002_b.sql").write_text("CREATE TABLE bb (id int);\n"),
        lambda folder: (folder / "001_a.down.sql").unlink(),
        lambda folder: (folder / "002_b.sql").rename(folder / "002_renamed.sql"),
        lambda folder: (folder / MANIFEST_NAME).unlink(),
    ],
    ids=["new-file", "resized-file", "removed-down-file", "renamed-file", "no-manifest"],
)
@pytest.mark.anyio
async def test_a_manifest_that_no_longer_matches_the_folder_is_not_trusted(
    database_url: str,
    tmp_path: Path,
    counted_reads: list[str],
    change: Callable[[Path], object],
) -> None:
    folder = write_migrations(tmp_path / "m", FILES)
    write_manifest(folder)
    await migrate(database_url, migrations_dir=folder)
    change(folder)
    counted_reads.clear()
    # An edited or renamed applied file is drift, found by reading the files.
    with contextlib.suppress(DriftError):
        await migrate(database_url, migrations_dir=folder)
    assert counted_reads


@pytest.mark.anyio
async def test_a_ledger_that_differs_from_the_manifest_sends_the_run_to_the_files(
    database_url: str, tmp_path: Path
) -> None:
    folder = write_migrations(tmp_path / "m", FILES)
    await migrate(database_url, migrations_dir=folder, target=1)
    write_manifest(folder)
    with capture_logs() as events:
        report = await migrate(database_url, migrations_dir=folder)
    assert [r.version for r in report.applied] == [2]
    assert "migration_applied" in [event["event"] for event in events]


def test_sum_check_catches_the_same_size_edit_that_start_up_does_not_read(
    database_url: str, tmp_path: Path
) -> None:
    folder = write_migrations(tmp_path / "m", FILES)
    assert run_cli("sum", "--migrations-dir", str(folder), database_url=None).returncode == 0
    asyncio.run(migrate(database_url, migrations_dir=folder))
    _same_size_edit(folder)
    assert current_manifest(folder) is not None  # names and sizes still match
    check = run_cli("sum", "--check", "--migrations-dir", str(folder), database_url=None)
    assert check.returncode == ExitCode.CHECK_DRIFT
    assert "out of date for: 002_b.sql" in check.stdout
    # --check of the database reads every file, so it reports the drift the start-up skips.
    drift = run_cli("--check", "--migrations-dir", str(folder), database_url=database_url)
    assert drift.returncode == ExitCode.CHECK_DRIFT


def test_new_keeps_an_existing_manifest_current(tmp_path: Path) -> None:
    folder = write_migrations(tmp_path / "m", FILES)
    write_manifest(folder)
    made = run_cli("new", "add_c", "--migrations-dir", str(folder), database_url=None)
    assert made.returncode == 0, made.stderr
    assert (
        run_cli("sum", "--check", "--migrations-dir", str(folder), database_url=None).returncode
        == 0
    )


def test_the_shipped_migrations_carry_a_current_manifest() -> None:
    run = run_cli("sum", "--check", database_url=None)
    assert run.returncode == 0, run.stdout + run.stderr
    assert current_manifest(None) is not None


def test_a_malformed_manifest_is_a_usage_error_naming_its_line(
    database_url: str, tmp_path: Path
) -> None:
    folder = write_migrations(tmp_path / "m", FILES)
    (folder / MANIFEST_NAME).write_text("# header\nnot a checksum line\n")
    run = run_cli("--migrations-dir", str(folder), database_url=database_url)
    assert run.returncode == ExitCode.USAGE
    assert f"{MANIFEST_NAME}:2:" in run.stderr
