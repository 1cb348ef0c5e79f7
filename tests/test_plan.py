"""The pure parts, no database: discovery, checksums, directives and the plan."""

from __future__ import annotations

from pathlib import Path

import pytest

from natlangchain_migrate.directives import ExtensionRequirement, parse_directives
from natlangchain_migrate.discovery import Migration, checksum, load_migrations
from natlangchain_migrate.errors import ConfigurationError, DriftError, FutureMigrationsError
from natlangchain_migrate.locks import lock_key
from natlangchain_migrate.plan import (
    AppliedMigration,
    State,
    newest_version,
    plan_migrations,
    raise_on_drift,
)
from natlangchain_migrate.repeatables import Repeatable, with_repeatables
from tests.conftest import write_migrations


def _m(version: int, sql: str = "SELECT 1;") -> Migration:
    return Migration(version, f"{version:03d}_m", f"{version:03d}_m.sql", sql, checksum(sql))


def _row(
    version: int,
    sql: str | None = "SELECT 1;",
    *,
    complete: bool = True,
    statements_done: int = 0,
) -> AppliedMigration:
    return AppliedMigration(
        version,
        f"{version:03d}_m",
        checksum=checksum(sql) if sql else None,
        complete=complete,
        statements_done=statements_done,
    )


@pytest.mark.parametrize(
    ("files", "rows", "target", "skip", "pending", "states"),
    [
        ([1, 2, 3], [], None, (), [1, 2, 3], "PPP"),
        ([1, 2, 3], [1, 2, 3], None, (), [], "AAA"),
        ([1, 2, 3], [1], 2, (), [2], "APP"),
        ([1, 2, 3], [], None, (2,), [1, 3], "PSP"),
        ([1, 2, 3], [1, 3], None, (), [2], "APA"),
        ([1, 3], [1, 2, 3], None, (), [], "AMA"),
        ([1, 2], [1, 2, 3], None, (), [], "AAF"),
        ([1, 3], [1, 2, 3, 4, 5], 1, (), [], "AMAFF"),
        ([1, 2, 3], [1, 2, 4], None, (), [3], "AAPF"),
    ],
    ids=[
        "fresh",
        "up-to-date",
        "target",
        "skip",
        "out-of-order",
        "missing-below-newest-file",
        "future",
        "missing-and-future",
        "pending-below-future",
    ],
)
def test_plan_table(
    files: list[int],
    rows: list[int],
    target: int | None,
    skip: tuple[int, ...],
    pending: list[int],
    states: str,
) -> None:
    plan = plan_migrations(
        [_m(v) for v in files], [_row(v) for v in rows], target=target, skip=skip
    )
    assert [m.version for m in plan.pending] == pending
    assert "".join(e.state.value[0] for e in plan.entries) == states


def test_future_rows_are_not_drift_unless_refused_and_no_advice_names_repair() -> None:
    plan = plan_migrations([_m(1), _m(2)], [_row(1), _row(2), _row(3)])
    assert [(e.version, e.state) for e in plan.future] == [(3, State.FUTURE)]
    assert plan.missing == []
    assert plan.pending == []
    assert plan.recorded_count == 2
    raise_on_drift(plan)  # the default: not drift
    with pytest.raises(FutureMigrationsError) as refused:
        raise_on_drift(plan, refuse_future=True)
    assert isinstance(refused.value, DriftError)
    assert refused.value.versions == [3]
    message = str(refused.value)
    assert "003 (003_m)" in message
    assert "newest file here is 002" in message
    assert "repair" not in message


def test_a_changed_file_beside_future_rows_is_drift_first() -> None:
    plan = plan_migrations([_m(1, "SELECT 2;")], [_row(1), _row(2)])
    with pytest.raises(DriftError) as drift:
        raise_on_drift(plan, refuse_future=True)
    assert not isinstance(drift.value, FutureMigrationsError)
    assert "migration 001 was applied with a different checksum" in str(drift.value)


def test_a_repeatable_is_never_the_newest_version() -> None:
    """A repeatable is stored as version -1 inside the machinery: it never counts."""
    repeatable = Repeatable(-1, "R__v", "R__v.sql", "SELECT 1;", checksum("SELECT 1;"))
    assert newest_version([_m(1), _m(2), repeatable]) == 2
    assert newest_version([repeatable]) is None
    plan = with_repeatables(plan_migrations([_m(1)], [_row(1), _row(2)]), [repeatable], [])
    assert [e.state for e in plan.entries] == [State.APPLIED, State.FUTURE]
    assert [e.state for e in plan.repeatables] == [State.PENDING]


def test_changed_file_is_drift_but_adopted_row_without_checksum_is_not() -> None:
    plan = plan_migrations([_m(1, "SELECT 2;"), _m(2)], [_row(1), _row(2, sql=None)])
    assert [e.state for e in plan.entries] == [State.CHANGED, State.APPLIED]
    assert not plan.entries[1].verified


def test_incomplete_row_is_failed_and_resumes_after_done_statements() -> None:
    plan = plan_migrations([_m(1)], [_row(1, complete=False, statements_done=2)])
    assert plan.entries[0].state is State.FAILED
    assert [m.version for m in plan.pending] == [1]
    assert plan.resume_from == {1: 2}


@pytest.mark.parametrize(
    ("variant", "same"),
    [
        ("CREATE TABLE t (id int);\r\nSELECT 1;\r\n", True),
        ("CREATE TABLE t (id int);   \nSELECT 1;\n\n\n", True),
        ("CREATE TABLE t (id int);\nSELECT 1;", True),
        ("CREATE TABLE t (id  int);\nSELECT 1;\n", False),
        ("CREATE TABLE t (id int);\nSELECT 2;\n", False),
    ],
)
def test_checksum_ignores_line_endings_and_trailing_blanks_only(variant: str, same: bool) -> None:
    assert (checksum(variant) == checksum("CREATE TABLE t (id int);\nSELECT 1;\n")) is same


def test_directives_are_read_from_the_header() -> None:
    directives = parse_directives(
        "x.sql",
        "-- natlangchain: no-transaction\n-- natlangchain: lock-timeout 2s\n"
        "-- natlangchain: requires-extension vector >= 0.5.0\nSELECT 1;\n"
        "-- natlangchain: statement-timeout 1s\n",
    )
    assert directives.no_transaction
    assert directives.pg_lock_timeout == "2s"
    assert directives.statement_timeout is None
    assert directives.requires_extensions == (ExtensionRequirement("vector", "0.5.0"),)


def test_bad_directive_names_file_and_line() -> None:
    with pytest.raises(ConfigurationError, match=r"x\.sql:2: bad directive"):
        parse_directives("x.sql", "-- hello\n-- natlangchain: lock-timeout soon\n")


def test_two_files_with_one_version_are_both_named(tmp_path: Path) -> None:
    folder = write_migrations(tmp_path, {"001_a.sql": "", "1_b.sql": ""})
    with pytest.raises(ConfigurationError, match=r"001_a\.sql and 1_b\.sql both have version 1"):
        load_migrations(folder)


def test_misnamed_sql_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"add_feature\.sql: migration files must"):
        load_migrations(write_migrations(tmp_path, {"add_feature.sql": ""}))


def test_shipped_migrations_have_down_files_and_002_declares_pgvector() -> None:
    shipped = load_migrations()
    assert [m.name for m in shipped] == [
        "001_initial_schema",
        "002_add_semantic_search",
        "003_add_scaling_tables",
    ]
    assert all(m.down_sql for m in shipped)
    assert shipped[1].directives.requires_extensions == (ExtensionRequirement("vector", "0.5.0"),)


def test_lock_key_is_stable_signed_64_bit() -> None:
    assert lock_key("natlangchain_migrate:public") == lock_key("natlangchain_migrate:public")
    assert lock_key("a") != lock_key("b")
    assert -(2**63) <= lock_key("natlangchain_migrate:public") < 2**63


def test_help_documents_every_exit_code_and_setting_variable() -> None:
    from natlangchain_migrate.cli import build_parser
    from natlangchain_migrate.errors import ExitCode

    text = build_parser().format_help()
    for code in ExitCode:
        assert f"\n  {code.value:<3} " in text
    for variable in (
        "DATABASE_URL",
        "NATLANGCHAIN_MIGRATE_LOCK_NAMESPACE",
        "NATLANGCHAIN_MIGRATE_WAIT",
    ):
        assert variable in text
