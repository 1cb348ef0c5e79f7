"""Other tools' file layouts read as those tools mean them, and what cannot be honoured
refused by name before anything runs."""

from __future__ import annotations

import asyncio
import os
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from natlangchain_migrate.discovery import load_migrations
from natlangchain_migrate.errors import ConfigurationError
from natlangchain_migrate.scaffold import new_migration
from tests.conftest import run_cli, table_names, write_migrations

GOOSE = {
    "00001_users.sql": (
        "-- +goose Up\nCREATE TABLE users (id int PRIMARY KEY);\n"
        "-- +goose StatementBegin\nCREATE FUNCTION one() RETURNS int LANGUAGE sql AS $$ "
        "SELECT 1; $$;\n-- +goose StatementEnd\n\n"
        "-- +goose Down\nDROP FUNCTION one();\nDROP TABLE users;\n"
    ),
    "00002_users_index.sql": (
        "-- +goose NO TRANSACTION\n-- +goose Up\n"
        "CREATE INDEX CONCURRENTLY users_id ON users (id);\n"
        "-- +goose Down\nDROP INDEX CONCURRENTLY users_id;\n"
    ),
}
GOLANG_MIGRATE = {
    "1_users.up.sql": "CREATE TABLE users (id int PRIMARY KEY);",
    "1_users.down.sql": "DROP TABLE users;",
    "2_orders.up.sql": "CREATE TABLE orders (id int PRIMARY KEY);",
    "2_orders.down.sql": "DROP TABLE orders;",
}
DBMATE = {
    "20240101120000_users.sql": (
        "-- migrate:up\nCREATE TABLE users (id int PRIMARY KEY);\n"
        "-- migrate:down\nDROP TABLE users;\n"
    ),
    "20240102120000_users_index.sql": (
        "-- migrate:up transaction:false\nCREATE INDEX CONCURRENTLY users_id ON users (id);\n"
        "-- migrate:down transaction:false\nDROP INDEX CONCURRENTLY users_id;\n"
    ),
}
# node-pg-migrate's SQL template (templates/migration-template.sql) and its 13-digit
# millisecond timestamps; markers in any case, as its own test reads them.
NODE_PG = {
    "1700000000000_users.sql": (
        "-- Up Migration\nCREATE TABLE users (id int PRIMARY KEY);\n\n"
        "-- Down Migration\nDROP TABLE users;\n"
    ),
    "1700000000001_users-index.sql": (
        "-- up migration\n-- natlangchain: no-transaction\n"
        "CREATE INDEX CONCURRENTLY users_id ON users (id);\n"
        "-- DOWN MIGRATION\nDROP INDEX users_id;\n"
    ),
}
# prisma's folders (prisma migrate dev writes them), with the down.sql its docs describe; a
# one-statement CREATE INDEX CONCURRENTLY runs outside a transaction, as prisma runs it.
PRISMA = {
    "20240101120000_users/migration.sql": "CREATE TABLE users (id int PRIMARY KEY);\n",
    "20240101120000_users/down.sql": "DROP TABLE users;\n",
    "20240102120000_users_index/migration.sql": (
        "-- CreateIndex\nCREATE INDEX CONCURRENTLY users_id ON users (id);\n"
    ),
    "20240102120000_users_index/down.sql": "DROP INDEX users_id;\n",
    "migration_lock.toml": 'provider = "postgresql"\n',
}
FLYWAY = {
    "V1__users.sql": "CREATE TABLE users (id int PRIMARY KEY);",
    "U1__users.sql": "DROP TABLE users CASCADE;",
    "V2__index.sql": "CREATE INDEX CONCURRENTLY users_id ON users (id);",
    "V2__index.sql.conf": "executeInTransaction=false\n",
    "U2__index.sql": "DROP INDEX users_id;",
    "R__users_view.sql": "CREATE OR REPLACE VIEW users_view AS SELECT id FROM users;",
}


@pytest.mark.parametrize(
    ("files", "versions", "no_transaction"),
    [
        (GOOSE, [1, 2], [False, True]),
        (GOLANG_MIGRATE, [1, 2], [False, False]),
        (DBMATE, [20240101120000, 20240102120000], [False, True]),
        (NODE_PG, [1700000000000, 1700000000001], [False, True]),
        (FLYWAY, [1, 2], [False, True]),
        (PRISMA, [20240101120000, 20240102120000], [False, True]),
    ],
    ids=["goose", "golang-migrate", "dbmate", "node-pg-migrate", "flyway", "prisma"],
)
def test_each_layout_is_detected_and_maps_to_our_directives(
    tmp_path: Path, files: dict[str, str], versions: list[int], no_transaction: list[bool]
) -> None:
    loaded = load_migrations(write_migrations(tmp_path / "m", files))
    assert [m.version for m in loaded] == versions
    assert [m.directives.no_transaction for m in loaded] == no_transaction
    assert all(m.down_sql for m in loaded)
    assert all("+goose Up" not in m.sql and "migrate:up" not in m.sql for m in loaded)
    assert all("DROP" not in m.sql and "Migration" not in (m.down_sql or "") for m in loaded)


@pytest.mark.parametrize("files", [GOOSE, GOLANG_MIGRATE, DBMATE, NODE_PG, FLYWAY, PRISMA], ids=str)
def test_each_layout_applies_rolls_back_and_applies_again(
    database_url: str, tmp_path: Path, files: dict[str, str]
) -> None:
    flags = ("--migrations-dir", str(write_migrations(tmp_path / "m", files)))
    for step in ((), ("--rollback", "--to", "0"), ()):
        result = run_cli(*step, *flags, database_url=database_url)
        assert result.returncode == 0, result.stderr
    assert "users" in asyncio.run(table_names(database_url))


@pytest.mark.parametrize(
    ("files", "says"),
    [
        ({"00001_a.go": "package migrations", **GOOSE}, "00001_a.go is a goose Go migration"),
        (
            {"00001_a.sql": "-- +goose Up\n-- +goose ENVSUB ON\nSELECT '${X}';\n"},
            "goose's ENVSUB",
        ),
        ({"00001_a.sql": "-- +goose Up\n-- +goose Sideways\n"}, "unknown goose annotation"),
        ({"1_a.sql": "-- migrate:up foo:bar\nSELECT 1;\n"}, "unknown dbmate option"),
        ({"V1.2__a.sql": "SELECT 1;"}, "Flyway's dotted version 1.2"),
        (
            {"1700000000000_a.js": "exports.up = (pgm) => {};", **NODE_PG},
            "1700000000000_a.js is a node-pg-migrate JavaScript migration",
        ),
        (
            {"1_a.sql": "SELECT 1;\n-- Down Migration\nSELECT 2;\n-- Down Migration\n"},
            "1_a.sql:4: a second '-- Down Migration'",
        ),
        (
            {"1_a.sql": "SELECT 1;\n-- Down Migration\nSELECT 2;\n"},
            "'-- Down Migration' without '-- Up Migration'",
        ),
        ({**GOOSE, **GOLANG_MIGRATE}, "keep one layout per folder"),
        ({**DBMATE, **NODE_PG}, "keep one layout per folder"),
        (
            {**PRISMA, "20240103120000_x.sql": "SELECT 1;"},
            "20240103120000_x.sql: a prisma folder holds one folder per migration",
        ),
        (
            {**PRISMA, "20240101120000_orders/migration.sql": "SELECT 1;"},
            "share the timestamp 20240101120000",
        ),
    ],
    ids=[
        "goose-go",
        "goose-envsub",
        "goose-unknown",
        "dbmate-option",
        "flyway-dotted",
        "node-pg-js",
        "node-pg-second",
        "node-pg-down-only",
        "mixed",
        "mixed-node-pg",
        "prisma-loose-file",
        "prisma-same-timestamp",
    ],
)
def test_what_cannot_be_honoured_is_refused_by_name(
    tmp_path: Path, files: dict[str, str], says: str
) -> None:
    with pytest.raises(ConfigurationError, match=says.replace(".", r"\.").replace("$", r"\$")):
        load_migrations(write_migrations(tmp_path / "m", files))


def test_a_prisma_down_file_is_not_read_for_another_tools_marks(tmp_path: Path) -> None:
    down = "-- Down Migration\n-- migrate:down\nDROP TABLE users;\n"
    files = {**PRISMA, "20240101120000_users/down.sql": down}
    loaded = load_migrations(write_migrations(tmp_path / "m", files))
    assert [m.filename for m in loaded] == [
        "20240101120000_users/migration.sql",
        "20240102120000_users_index/migration.sql",
    ]
    assert loaded[0].down_sql == down


def test_what_is_not_a_regular_file_is_passed_over_unopened_and_a_symlink_is_read(
    tmp_path: Path,
) -> None:
    """Layout detection opens every NNN_*.sql: a FIFO of that name must not make it wait
    for a writer, nor a folder of that name be read: both are passed over."""
    folder = write_migrations(tmp_path / "m", {"001_a.sql": "SELECT 1;\n"})
    os.mkfifo(folder / "002_pipe.sql")
    (folder / "003_folder.sql").mkdir()
    (tmp_path / "elsewhere.sql").write_text("SELECT 4;\n")
    (folder / "004_link.sql").symlink_to(tmp_path / "elsewhere.sql")
    found: list[list[str]] = []
    reader = threading.Thread(
        target=lambda: found.append([m.filename for m in load_migrations(folder)]), daemon=True
    )
    reader.start()
    reader.join(timeout=30)
    assert found == [["001_a.sql", "004_link.sql"]]


def test_a_layout_named_in_the_folders_settings_wins(tmp_path: Path) -> None:
    folder = write_migrations(tmp_path / "m", {"1_a.up.sql": "SELECT 1;", "2_b.sql": "SELECT 2;"})
    (folder / "natlangchain-migrate.toml").write_text('layout = "sqlx"\n')
    assert [m.name for m in load_migrations(folder)] == ["1_a", "2_b"]
    (folder / "natlangchain-migrate.toml").write_text('layout = "liquibase"\n')
    with pytest.raises(ConfigurationError, match="layout 'liquibase' is not one of"):
        load_migrations(folder)


@pytest.mark.parametrize("files", [GOOSE, DBMATE, NODE_PG], ids=["goose", "dbmate", "node-pg"])
def test_verify_checks_the_down_sections_of_single_file_layouts(
    database_url: str, tmp_path: Path, files: dict[str, str]
) -> None:
    folder = write_migrations(tmp_path / "m", files)
    (folder / "natlangchain-migrate.toml").write_text("mixed-versions = false\n")
    result = run_cli("verify", "--migrations-dir", str(folder), database_url=database_url)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("files", "made"),
    [
        (GOOSE, ["00003_notes.sql"]),
        (DBMATE, [f"{datetime.now(UTC):%Y%m%d}"]),
        (GOLANG_MIGRATE, ["003_notes.up.sql", "003_notes.down.sql"]),
        # node-pg-migrate names files by Unix milliseconds: new goes on in kind.
        (NODE_PG, [str(int(datetime.now(UTC).timestamp() * 1000))[:5]]),
        (FLYWAY, ["V3__notes.sql", "U3__notes.sql"]),
        (PRISMA, ["migration.sql", "down.sql"]),
    ],
    ids=["goose", "dbmate", "golang-migrate", "node-pg-migrate", "flyway", "prisma"],
)
def test_new_writes_in_the_folders_layout(
    tmp_path: Path, files: dict[str, str], made: list[str]
) -> None:
    folder = write_migrations(tmp_path / "m", files)
    names = [path.name for path in new_migration(folder, "notes")]
    assert [name[: len(prefix)] for name, prefix in zip(names, made, strict=True)] == made
    assert len(load_migrations(folder)) == len({m.version for m in load_migrations(folder)})


SECTIONED = {
    "goose": "-- +goose Up\nCREATE TABLE a (id int);\n\nSELECT 1/0;\n"
    "-- +goose Down\nDROP TABLE a;\n",
    "dbmate": "-- migrate:up\nCREATE TABLE a (id int);\n\nSELECT 1/0;\n\n"
    "-- migrate:down\nDROP TABLE a;\n",
    "node-pg-migrate": "-- Up Migration\nCREATE TABLE a (id int);\n\nSELECT 1/0;\n"
    "-- Down Migration\nDROP TABLE a;\n",
}


@pytest.mark.parametrize("layout", sorted(SECTIONED))
def test_an_error_in_a_sectioned_file_names_the_files_own_line(
    layout: str, database_url: str, tmp_path: Path
) -> None:
    """The up section runs with the file's other lines left blank, so the server's position
    is a line of the file (the section alone put the error a line or more too early), while
    the checksum still covers the section as before."""
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "20240101000000_a.sql").write_text(SECTIONED[layout])
    result = run_cli("--migrations-dir", str(folder), database_url=database_url)
    assert result.returncode == 1, result.stderr
    assert "20240101000000_a.sql:4:1: 22012 division by zero" in result.stderr
    assert "a" not in asyncio.run(table_names(database_url))


@pytest.mark.parametrize(
    ("up", "down"),
    [
        ("-- +goose Up", "-- +goose Down"),
        ("-- migrate:up", "-- migrate:down"),
        ("-- Up Migration", "-- Down Migration"),
    ],
)
def test_a_directive_above_the_first_section_is_refused_naming_where_it_goes(
    tmp_path: Path, up: str, down: str
) -> None:
    """Before, ``-- natlangchain: backfill ...`` above ``-- migrate:up`` was dropped with
    the lines no section holds, and the batch statement failed on ``:lo`` (42601)."""
    text = (
        "-- natlangchain: backfill table=t key=id batch=10\n"
        f"{up}\nUPDATE t SET n = 1 WHERE id BETWEEN :lo AND :hi;\n{down}\nSELECT 1;\n"
    )
    folder = write_migrations(tmp_path / "m", {"20240101000000_fill.sql": text})
    with pytest.raises(ConfigurationError) as raised:
        load_migrations(folder)
    message = str(raised.value)
    assert message.startswith("20240101000000_fill.sql:1: ")
    assert f"below '{up}'" in message
