"""benchmarks/peers.py's fairness: every peer runs our shipped SQL unchanged, and the
end-state check that judges the peers catches what it claims to."""

from __future__ import annotations

import ast
from pathlib import Path

import asyncpg
import pytest

from benchmarks.peer_tools import (
    Tool,
    applied_marker,
    end_state_problems,
    ours,
    write_alembic_files,
    write_dbmate_files,
    write_ours_files,
    write_yoyo_files,
)
from harness.servers.sql import execute as sql_execute
from natlangchain_migrate import migrate
from natlangchain_migrate.discovery import shipped_migrations_dir

pytestmark = pytest.mark.anyio

SHIPPED = Path(str(shipped_migrations_dir()))
BODIES = {
    "001": (SHIPPED / "001_initial_schema.sql").read_text(),
    "003": (SHIPPED / "003_add_scaling_tables.sql").read_text(),
}


def _only_sql_files(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.glob("*.sql"))


def test_ours_and_yoyo_get_the_shipped_files_with_only_the_marker_added(tmp_path: Path) -> None:
    for writer in (write_ours_files, write_yoyo_files):
        folder = tmp_path / writer.__name__
        folder.mkdir()
        writer(folder)
        assert _only_sql_files(folder) == ["001_initial_schema.sql", "003_add_scaling_tables.sql"]
        for version, body in BODIES.items():
            text = next(folder.glob(f"{version}_*.sql")).read_text()
            assert text.endswith(body + applied_marker(version))
    yoyo_003 = (tmp_path / "write_yoyo_files" / "003_add_scaling_tables.sql").read_text()
    assert yoyo_003.startswith("-- depends: 001_initial_schema\n")


def test_dbmate_files_open_with_its_up_marker_around_the_shipped_sql(tmp_path: Path) -> None:
    write_dbmate_files(tmp_path)
    for version, body in BODIES.items():
        text = next(tmp_path.glob(f"{version}_*.sql")).read_text()
        up, down = text.split("-- migrate:down")
        assert up == f"-- migrate:up\n{body}{applied_marker(version)}\n"
        assert not down.strip()


def test_alembic_revisions_chain_001_to_003_and_carry_the_shipped_sql(tmp_path: Path) -> None:
    write_alembic_files(tmp_path)
    assert (tmp_path / "env.py").is_file()
    assert "script_location" in (tmp_path / "alembic.ini").read_text()
    chain = {}
    for module in sorted((tmp_path / "versions").glob("*.py")):
        assigned = {
            node.targets[0].id: ast.literal_eval(node.value)
            for node in ast.parse(module.read_text()).body
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
        }
        chain[assigned["revision"]] = assigned["down_revision"]
        version = assigned["revision"]
        assert assigned["SQL"] == BODIES[version] + applied_marker(version)
    assert chain == {"001": None, "003": "001"}


async def test_end_state_is_clean_after_one_apply_and_flags_a_second(
    database_url: str, tmp_path: Path
) -> None:
    tool: Tool = ours()
    tool.write_files(tmp_path)
    await migrate(database_url, migrations_dir=tmp_path)
    assert await end_state_problems(database_url, tool) == []

    # 001 is idempotent, so only the marker shows that its body ran a second time.
    await sql_execute(database_url, BODIES["001"] + applied_marker("001"))
    assert await end_state_problems(database_url, tool) == ["001 applied 2x"]


async def test_end_state_flags_a_missing_ledger_row_and_a_lock_still_held(
    database_url: str, tmp_path: Path
) -> None:
    tool = ours()
    tool.write_files(tmp_path)
    await migrate(database_url, migrations_dir=tmp_path)
    await sql_execute(database_url, "DELETE FROM schema_migrations WHERE version = 3")
    holder = await asyncpg.connect(database_url)
    try:
        await holder.execute("SELECT pg_advisory_lock(42)")
        problems = await end_state_problems(database_url, tool)
    finally:
        await holder.close()
    assert problems == ["ledger 001", "1 advisory lock(s) held"]


async def test_end_state_of_an_untouched_database_says_nothing_was_applied(
    database_url: str,
) -> None:
    problems = await end_state_problems(database_url, ours())
    assert problems == ["001 applied 0x", "003 applied 0x", "ledger empty"]
