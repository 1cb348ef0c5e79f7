"""``dump-schema`` and ``--dump-schema PATH``: the schema as deterministic SQL, the same
bytes for the same schema whatever order it was built in, written whole after a
successful apply or rollback."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import anyio
import asyncpg
import pytest

from harness.faults.history import write_history
from harness.faults.trials import schema_dump
from harness.servers.pgcluster import PASSWORD
from harness.servers.sql import execute as sql_execute
from harness.servers.sql import fetchval as sql_fetchval
from natlangchain_migrate import migrate
from natlangchain_migrate.discovery import load_migrations, shipped_migrations_dir
from natlangchain_migrate.errors import ExitCode
from natlangchain_migrate.schema_dump import describe_schema, dump_schema
from tests.conftest import log_events, run_cli, write_migrations

ZETA = (
    "CREATE TABLE zeta (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, label text);\n"
    "CREATE INDEX zeta_label ON zeta (label);\n"
    "CREATE FUNCTION zeta_count() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM zeta';\n"
)
ALPHA = (
    "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');\n"
    "CREATE TABLE alpha (id serial PRIMARY KEY, feeling mood DEFAULT 'ok', "
    "  twice int GENERATED ALWAYS AS (id * 2) STORED);\n"
    "COMMENT ON COLUMN alpha.feeling IS 'how it''s going';\n"
    "CREATE VIEW happy_alpha AS SELECT id FROM alpha WHERE feeling = 'happy';\n"
    "CREATE TRIGGER alpha_touch BEFORE UPDATE ON alpha FOR EACH ROW "
    "  EXECUTE FUNCTION update_updated_at_column();\n"
)


def _with_shipped(folder: Path, extra: dict[str, str]) -> Path:
    folder.mkdir(parents=True)
    for entry in shipped_migrations_dir().iterdir():
        if entry.name.endswith(".sql"):
            (folder / entry.name).write_text(entry.read_text(encoding="utf-8"), encoding="utf-8")
    return write_migrations(folder, extra)


def _dump(url: str, path: Path) -> str:
    result = run_cli("dump-schema", str(path), database_url=url)
    assert result.returncode == ExitCode.OK, result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    return path.read_text(encoding="utf-8")


def test_the_same_schema_built_in_another_order_dumps_byte_identical(
    database_url: str, migrated_database_url: str, tmp_path: Path
) -> None:
    """One database gets everything fresh, zeta's objects before alpha's; the other is a
    clone of 001-003 that gets alpha's objects first: other OIDs, the same schema."""
    first = _with_shipped(tmp_path / "a", {"004_zeta.sql": ZETA, "005_alpha.sql": ALPHA})
    second = _with_shipped(tmp_path / "b", {"004_alpha.sql": ALPHA, "005_zeta.sql": ZETA})
    for folder, url in ((first, database_url), (second, migrated_database_url)):
        asyncio.run(migrate(url, migrations_dir=folder))
    one = _dump(database_url, tmp_path / "one.sql")
    other = asyncio.run(dump_schema(migrated_database_url))
    assert one.encode() == other.encode()
    assert asyncio.run(dump_schema(database_url)) == one
    for expected in (
        "CREATE EXTENSION IF NOT EXISTS vector WITH SCHEMA public VERSION",
        "CREATE TYPE public.mood AS ENUM ('sad', 'ok', 'happy');",
        "    id integer DEFAULT nextval('public.alpha_id_seq'::regclass) NOT NULL,",
        "    feeling public.mood DEFAULT 'ok'::public.mood,",
        "    twice integer GENERATED ALWAYS AS ((id * 2)) STORED",
        "COMMENT ON COLUMN public.alpha.feeling IS 'how it''s going';",
        "    id integer GENERATED ALWAYS AS IDENTITY NOT NULL,",
        "CREATE INDEX zeta_label ON public.zeta USING btree (label);",
        "ALTER TABLE ONLY public.zeta ADD CONSTRAINT zeta_pkey PRIMARY KEY (id);",
        "CREATE VIEW public.happy_alpha AS",
        "CREATE TRIGGER alpha_touch BEFORE UPDATE ON public.alpha FOR EACH ROW EXECUTE "
        "FUNCTION public.update_updated_at_column();",
        "CREATE OR REPLACE FUNCTION public.zeta_count()",
        "ALTER TABLE ONLY public.block_entries ADD CONSTRAINT block_entries_block_id_fkey "
        "FOREIGN KEY (block_id) REFERENCES public.blocks(id) ON DELETE CASCADE;",
    ):
        assert expected in one, expected
    assert "schema_migrations" not in one
    assert "vector_in" not in one  # pgvector's own functions belong to its extension


def test_a_different_schema_dumps_differently(database_url: str, tmp_path: Path) -> None:
    folder = write_migrations(tmp_path / "m", {"001_t.sql": "CREATE TABLE t (id int);\n"})
    asyncio.run(migrate(database_url, migrations_dir=folder))
    before = asyncio.run(dump_schema(database_url))
    asyncio.run(sql_execute(database_url, "ALTER TABLE t ALTER COLUMN id SET DEFAULT 7"))
    after = asyncio.run(dump_schema(database_url))
    assert "    id integer\n" in before
    assert "    id integer DEFAULT 7\n" in after


def test_dump_schema_flag_writes_after_apply_and_after_rollback(
    database_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "schema"
    folder.mkdir()
    target = folder / "schema.sql"
    applied = run_cli("--dump-schema", str(target), database_url=database_url)
    assert applied.returncode == ExitCode.OK, applied.stderr
    assert "schema_dumped" in [e["event"] for e in log_events(applied.stderr)]
    printed = run_cli("dump-schema", database_url=database_url)
    assert printed.returncode == ExitCode.OK, printed.stderr
    assert target.read_text(encoding="utf-8") == printed.stdout
    assert "CREATE TABLE public.scheduled_jobs (" in printed.stdout

    undone = run_cli(
        "--rollback",
        database_url=database_url,
        env={"NATLANGCHAIN_MIGRATE_DUMP_SCHEMA": str(target)},
    )
    assert undone.returncode == ExitCode.OK, undone.stderr
    after = target.read_text(encoding="utf-8")
    assert "scheduled_jobs" not in after
    assert "CREATE TABLE public.entries (" in after
    assert [p.name for p in folder.iterdir()] == ["schema.sql"]  # no temporary file left


def test_a_failed_apply_writes_no_schema(database_url: str, tmp_path: Path) -> None:
    folder = write_migrations(tmp_path / "m", {"001_bad.sql": "CREATE TABLE t (id int,);\n"})
    target = tmp_path / "schema.sql"
    result = run_cli(
        "--migrations-dir", str(folder), "--dump-schema", str(target), database_url=database_url
    )
    assert result.returncode == ExitCode.MIGRATION_FAILED
    assert not target.exists()


def test_dump_schema_flag_is_refused_where_nothing_is_written(
    database_url: str, tmp_path: Path
) -> None:
    target = tmp_path / "schema.sql"
    for action in ("--status", "--check", "--repair", "--dry-run"):
        result = run_cli(action, "--dump-schema", str(target), database_url=database_url)
        assert result.returncode == ExitCode.USAGE, (action, result.stderr)
        assert "--dump-schema goes with applying and --rollback" in result.stderr
    # Its variable, set for the deploys, is simply not used by a read-only action.
    status = run_cli(
        "--status",
        database_url=database_url,
        env={"NATLANGCHAIN_MIGRATE_DUMP_SCHEMA": str(target)},
    )
    assert status.returncode == ExitCode.OK, status.stderr
    assert not target.exists()


def test_a_dump_path_in_a_missing_folder_is_refused_before_anything_is_applied(
    database_url: str, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere" / "schema.sql"
    result = run_cli("--dump-schema", str(missing), database_url=database_url)
    assert result.returncode == ExitCode.USAGE
    assert f"the folder {missing.parent} does not exist" in result.stderr
    exists = "SELECT to_regclass('schema_migrations') IS NOT NULL"
    assert asyncio.run(sql_fetchval(database_url, exists)) is False
    command = run_cli("dump-schema", str(missing), database_url=database_url)
    assert command.returncode == ExitCode.USAGE
    assert f"the folder {missing.parent} does not exist" in command.stderr


def test_dump_schema_of_an_unreachable_server_says_so_without_the_password() -> None:
    url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/postgres"
    result = run_cli("dump-schema", database_url=url)
    assert result.returncode == ExitCode.UNREACHABLE
    assert PASSWORD not in result.stdout + result.stderr
    assert result.stdout == ""


def test_the_schema_file_is_replaced_whole(database_url: str, tmp_path: Path) -> None:
    """An existing file is swapped for the new one (rename), never written into."""
    target = tmp_path / "schema.sql"
    target.write_text("old\n", encoding="utf-8")
    keep = tmp_path / "hardlink.sql"
    keep.hardlink_to(target)
    _dump(database_url, target)
    assert keep.read_text(encoding="utf-8") == "old\n"  # the old inode kept its bytes
    assert target.read_text(encoding="utf-8").startswith("-- Schema as described by")


def test_every_kind_of_object_is_described(database_url: str) -> None:
    """Objects beyond NatLangChain's own: each appears as one line a reviewer can read."""
    asyncio.run(
        sql_execute(
            database_url,
            "CREATE SCHEMA app;"
            "CREATE DOMAIN app.posint AS integer DEFAULT 1 NOT NULL CHECK (VALUE > 0);"
            "CREATE TYPE app.pair AS (a int, b text);"
            "CREATE TYPE app.floatrange AS RANGE (subtype = float8);"
            "CREATE SEQUENCE app.s INCREMENT 5 CYCLE;"
            "CREATE TABLE app.p (id int, k int) PARTITION BY RANGE (k);"
            "CREATE TABLE app.p1 PARTITION OF app.p FOR VALUES FROM (0) TO (10);"
            "CREATE UNLOGGED TABLE app.u (x app.posint) WITH (fillfactor=70);"
            "ALTER TABLE app.u ENABLE ROW LEVEL SECURITY;"
            "CREATE POLICY positive ON app.u FOR SELECT TO PUBLIC USING (x > 1);"
            "CREATE MATERIALIZED VIEW app.mv AS SELECT count(*) AS c FROM app.u;"
            "CREATE AGGREGATE app.total(int) (SFUNC = int4pl, STYPE = int, INITCOND = '0');"
            "CREATE PROCEDURE app.noop() LANGUAGE sql AS 'SELECT 1';",
        )
    )
    dumped = run_cli("dump-schema", "-", database_url=database_url)
    assert dumped.returncode == ExitCode.OK, dumped.stderr
    lines = dumped.stdout.splitlines()
    for expected in (
        "CREATE SCHEMA IF NOT EXISTS app;",
        "CREATE DOMAIN app.posint AS integer DEFAULT 1 NOT NULL "
        "CONSTRAINT posint_check CHECK ((VALUE > 0));",
        "CREATE TYPE app.pair AS (",
        "CREATE TYPE app.floatrange AS RANGE (SUBTYPE = double precision);",
        "CREATE SEQUENCE app.s AS bigint START WITH 1 INCREMENT BY 5 MINVALUE 1 "
        "MAXVALUE 9223372036854775807 CACHE 1 CYCLE;",
        ") PARTITION BY RANGE (k);",
        "ALTER TABLE ONLY app.p ATTACH PARTITION app.p1 FOR VALUES FROM (0) TO (10);",
        "CREATE UNLOGGED TABLE app.u (",
        ") WITH (fillfactor=70);",
        "ALTER TABLE app.u ENABLE ROW LEVEL SECURITY;",
        "CREATE POLICY positive ON app.u AS PERMISSIVE FOR SELECT TO PUBLIC "
        "USING (((x)::integer > 1));",
        "CREATE MATERIALIZED VIEW app.mv AS",
        "CREATE AGGREGATE app.total(integer) (SFUNC = int4pl, STYPE = integer, INITCOND = '0');",
        "CREATE OR REPLACE PROCEDURE app.noop()",
    ):
        assert expected in lines, expected
    # A range type's constructor functions come with it and are not listed apart.
    assert "CREATE OR REPLACE FUNCTION app.floatrange(" not in dumped.stdout


@pytest.mark.anyio
async def test_the_description_changes_exactly_when_pg_dump_does(
    database_url: str, tmp_path: Path
) -> None:
    """Across a generated history of every kind of migration (tables, indexes, triggers,
    functions, partitions, views, materialized views, enums, renames, constraints,
    foreign keys, data-only backfills), applied one at a time: the description differs
    from the one before exactly when ``pg_dump --schema-only`` does."""
    folder = tmp_path / "history"
    write_history(folder, 40, seed=5)
    kinds_changed: dict[str, list[bool]] = {}
    previous: tuple[str, str] | None = None
    for version in range(1, 41):
        await migrate(database_url, migrations_dir=folder, target=version)
        conn = await asyncpg.connect(database_url)
        try:
            described = await describe_schema(conn)
        finally:
            await conn.close()
        dumped = await anyio.to_thread.run_sync(schema_dump, database_url)
        if previous is not None:  # from the second on: the first also creates the ledger
            pg_dump_changed = dumped != previous[1]
            assert (described != previous[0]) == pg_dump_changed, f"version {version}"
            kind = re.sub(r"^\d+_|_\d+$", "", load_migrations(folder)[version - 1].name)
            kinds_changed.setdefault(kind, []).append(pg_dump_changed)
        previous = (described, dumped)
    assert len(kinds_changed) >= 14, kinds_changed  # nearly every kind the history makes
    assert set(kinds_changed["backfill"]) == {False}  # data only: neither changes
    assert {changed for flags in kinds_changed.values() for changed in flags} == {True, False}


def test_the_repeatables_ledger_is_left_out_like_the_ledger(
    database_url: str, tmp_path: Path
) -> None:
    folder = write_migrations(
        tmp_path / "m",
        {
            "001_t.sql": "CREATE TABLE t (id int);\n",
            "R__v.sql": "CREATE OR REPLACE VIEW v AS SELECT id FROM t;\n",
        },
    )
    asyncio.run(migrate(database_url, migrations_dir=folder))
    dumped = run_cli("dump-schema", database_url=database_url)
    assert dumped.returncode == ExitCode.OK, dumped.stderr
    assert "VIEW public.v" in dumped.stdout
    assert "schema_repeatables" not in dumped.stdout
    assert "schema_migrations" not in dumped.stdout


def test_a_dump_path_that_is_a_directory_is_refused_before_anything_is_applied(
    database_url: str, tmp_path: Path
) -> None:
    result = run_cli("--dump-schema", str(tmp_path), database_url=database_url)
    assert result.returncode == ExitCode.USAGE
    assert "is a directory" in result.stderr
    exists = "SELECT to_regclass('schema_migrations') IS NOT NULL"
    assert asyncio.run(sql_fetchval(database_url, exists)) is False
