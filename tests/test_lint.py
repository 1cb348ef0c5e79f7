"""``natlangchain-migrate lint``: squawk's findings, placed and chosen as the runner runs files.

Every test runs the real CLI and the real squawk binary of the ``test`` extra;
the pending/applied split comes from a real ledger on the test server.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from natlangchain_migrate.discovery import shipped_migrations_dir
from natlangchain_migrate.errors import ExitCode, SquawkUnavailableError
from natlangchain_migrate.lint import locate_squawk
from tests.conftest import fetchval, ledger_rows, run_cli, write_migrations

REPO = Path(__file__).resolve().parent.parent
ACCOUNTS = {"001_accounts.sql": "CREATE TABLE accounts (id bigint PRIMARY KEY);\n"}
# The issue's example: a required column and a blocking index on a table 001 created.
PLAN_002 = (
    "-- 002: accounts get a plan\n"
    "ALTER TABLE accounts ADD COLUMN plan text NOT NULL;\n"
    "CREATE INDEX accounts_plan ON accounts (plan);\n"
)
# squawk's rule, with the advice for a rolling deploy (tests/test_lint_releases.py).
REQUIRED_FIELD = (
    "adding-required-field column accounts.plan is NOT NULL without a default, and the "
    "release before this one inserts rows without it; add it nullable (or with a default) "
    "here, backfill it, and SET NOT NULL in 002_plan.contract.sql (README recipe 'Add a NOT "
    "NULL column')"
)
BLOCKING_INDEX = (
    "require-concurrent-index-creation During normal index creation, table updates are "
    "blocked, but reads are still allowed."
)


def project(tmp_path: Path, files: dict[str, str], config: str = "") -> Path:
    """A project folder: pyproject.toml with our table (so the repo's is not used) and
    a migrations folder; returns the migrations folder."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "pyproject.toml").write_text(
        f"[tool.natlangchain-migrate.lint]\n{config}", encoding="utf-8"
    )
    return write_migrations(tmp_path / "migrations", files)


def lint(
    *args: str,
    cwd: Path,
    database_url: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """The CLI's lint, run as a user would from ``cwd``."""
    environment = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    if database_url is not None:
        environment["DATABASE_URL"] = database_url
    environment |= env or {}
    return subprocess.run(
        [sys.executable, "-m", "natlangchain_migrate", "lint", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environment,
        timeout=120,
        check=False,
    )


def findings(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    document: dict[str, list[dict[str, Any]]] = json.loads(result.stdout)
    return document["findings"]


def test_issue_example_is_flagged_at_the_lines_an_editor_shows(tmp_path: Path) -> None:
    """Lines from 1 (squawk's JSON counts from 0) and columns in characters from 1."""
    project(tmp_path, {**ACCOUNTS, "002_plan.sql": PLAN_002})
    result = lint("--migrations-dir", "migrations", cwd=tmp_path)
    assert result.returncode == ExitCode.LINT_FINDINGS, result.stderr
    assert result.stdout.splitlines() == [
        f"migrations/002_plan.sql:2:22 {REQUIRED_FIELD}",
        f"migrations/002_plan.sql:3:1 {BLOCKING_INDEX}",
    ]
    assert "2 problem(s) in 1 of 2 checked file(s)" in result.stderr


def test_json_report_lists_checked_files_and_each_finding(tmp_path: Path) -> None:
    project(tmp_path, {**ACCOUNTS, "002_plan.sql": PLAN_002})
    result = lint("--migrations-dir", "migrations", "--json", cwd=tmp_path)
    assert result.returncode == ExitCode.LINT_FINDINGS
    assert json.loads(result.stdout)["checked"] == ["001_accounts.sql", "002_plan.sql"]
    first = findings(result)[0]
    assert first["file"] == "migrations/002_plan.sql"
    assert (first["line"], first["column"], first["end_line"]) == (2, 22, 2)
    assert first["rule"] == "adding-required-field"
    assert first["help"]


def test_columns_count_characters_not_bytes(tmp_path: Path) -> None:
    sql = "ALTER TABLE accounts /* café ☕ */ ADD COLUMN plan text NOT NULL;\n"
    project(tmp_path, {**ACCOUNTS, "002_plan.sql": sql})
    result = lint("--migrations-dir", "migrations", "--json", cwd=tmp_path)
    (finding,) = findings(result)
    assert finding["line"] == 1
    assert finding["column"] == sql.index("ADD COLUMN") + 1


def test_clean_files_exit_0(tmp_path: Path) -> None:
    project(tmp_path, {**ACCOUNTS, "002_plan.sql": "ALTER TABLE accounts ADD COLUMN plan text;\n"})
    result = lint("--migrations-dir", "migrations", cwd=tmp_path)
    assert result.returncode == ExitCode.OK, result.stdout + result.stderr
    assert result.stdout == ""


def test_a_transactional_file_may_index_the_table_it_creates(tmp_path: Path) -> None:
    """Assume-in-transaction for transactional files: nobody can see the new table yet.
    The same statements in a no-transaction file block writers on a visible table."""
    body = "CREATE TABLE plans (id bigint PRIMARY KEY, name text);\n"
    body += "CREATE INDEX plans_name ON plans (name);\n"
    folder = project(tmp_path, {"001_plans.sql": body})
    assert lint("--migrations-dir", str(folder), cwd=tmp_path).returncode == ExitCode.OK
    write_migrations(folder, {"001_plans.sql": "-- natlangchain: no-transaction\n" + body})
    result = lint("--migrations-dir", str(folder), "--json", cwd=tmp_path)
    assert result.returncode == ExitCode.LINT_FINDINGS
    assert ("require-concurrent-index-creation", 3) in {
        (f["rule"], f["line"]) for f in findings(result)
    }


def test_concurrent_index_is_refused_only_inside_a_transaction(tmp_path: Path) -> None:
    """Even alone in its file: the runner wraps every transactional file, with its ledger
    row, in a transaction (squawk on its own lets a one-statement file pass)."""
    index = "CREATE INDEX CONCURRENTLY IF NOT EXISTS accounts_id ON accounts (id);\n"
    folder = project(tmp_path, {**ACCOUNTS, "002_index.sql": index})
    result = lint("--migrations-dir", str(folder), "--json", cwd=tmp_path)
    assert [f["rule"] for f in findings(result)] == ["ban-concurrent-index-creation-in-transaction"]
    write_migrations(folder, {"002_index.sql": "-- natlangchain: no-transaction\n" + index})
    assert lint("--migrations-dir", str(folder), cwd=tmp_path).returncode == ExitCode.OK


def test_timeouts_the_runner_sets_are_not_demanded_of_files(tmp_path: Path) -> None:
    """squawk alone asks for SET lock_timeout / statement_timeout before this ALTER."""
    project(tmp_path, {**ACCOUNTS, "002_plan.sql": PLAN_002})
    raw = subprocess.run(
        [locate_squawk(), "--reporter=json", "migrations/002_plan.sql"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    squawk_rules = {item["rule_name"] for item in json.loads(raw.stdout)}
    assert {"require-lock-timeout", "require-statement-timeout"} <= squawk_rules
    result = lint("--migrations-dir", "migrations", "--json", cwd=tmp_path)
    ours = {f["rule"] for f in findings(result)}
    assert ours == {"adding-required-field", "require-concurrent-index-creation"}


def test_lint_ignore_directive_drops_one_rule_in_one_file(tmp_path: Path) -> None:
    ignored = (
        "-- natlangchain: lint-ignore adding-required-field the table is empty in production\n"
    )
    project(tmp_path, {**ACCOUNTS, "002_plan.sql": ignored + PLAN_002})
    result = lint("--migrations-dir", "migrations", cwd=tmp_path)
    assert result.returncode == ExitCode.LINT_FINDINGS
    assert result.stdout.splitlines() == [f"migrations/002_plan.sql:4:1 {BLOCKING_INDEX}"]


def test_the_runner_applies_a_file_with_a_lint_ignore_line(
    tmp_path: Path, database_url: str
) -> None:
    ignored = "-- natlangchain: lint-ignore adding-required-field the table is empty\n"
    folder = write_migrations(tmp_path, {**ACCOUNTS, "002_plan.sql": ignored + PLAN_002})
    result = run_cli("--migrations-dir", str(folder), database_url=database_url)
    assert result.returncode == ExitCode.OK, result.stderr
    assert [row["version"] for row in asyncio.run(ledger_rows(database_url))] == [1, 2]


@pytest.mark.parametrize(
    ("directive", "message"),
    [
        (
            "lint-ignore adding-required-field",
            "002_plan.sql:1: bad directive '-- natlangchain: lint-ignore adding-required-field'; "
            "write lint-ignore RULE REASON",
        ),
        (
            "lint-ignore no-such-rule because",
            "002_plan.sql:1: lint-ignore names 'no-such-rule', which is not a squawk rule",
        ),
    ],
    ids=["no-reason", "unknown-rule"],
)
def test_bad_lint_ignore_is_refused_naming_file_and_line(
    tmp_path: Path, directive: str, message: str
) -> None:
    project(tmp_path, {**ACCOUNTS, "002_plan.sql": f"-- natlangchain: {directive}\n{PLAN_002}"})
    result = lint("--migrations-dir", "migrations", cwd=tmp_path)
    assert result.returncode == ExitCode.USAGE
    assert result.stdout == ""
    assert message in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_pyproject_excludes_rules_for_every_file(tmp_path: Path) -> None:
    project(
        tmp_path, {**ACCOUNTS, "002_plan.sql": PLAN_002}, 'exclude = ["adding-required-field"]\n'
    )
    result = lint("--migrations-dir", "migrations", cwd=tmp_path)
    assert result.stdout.splitlines() == [f"migrations/002_plan.sql:3:1 {BLOCKING_INDEX}"]


def test_pyproject_is_found_above_the_migrations_dir(tmp_path: Path) -> None:
    """The migrations folder's own project wins over the working directory's."""
    folder = project(
        tmp_path / "app",
        {**ACCOUNTS, "002_plan.sql": PLAN_002},
        'exclude = ["adding-required-field"]\n',
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = lint("--migrations-dir", str(folder), "--json", cwd=elsewhere)
    assert [f["rule"] for f in findings(result)] == ["require-concurrent-index-creation"]


def test_pg_version_is_passed_to_squawk(tmp_path: Path) -> None:
    """Before PostgreSQL 11 a column with a constant default rewrote the table."""
    sql = "ALTER TABLE accounts ADD COLUMN plan text DEFAULT 'free';\n"
    project(tmp_path, {**ACCOUNTS, "002_plan.sql": sql}, 'pg-version = "10"\n')
    old = lint("--migrations-dir", "migrations", "--json", cwd=tmp_path)
    assert [f["rule"] for f in findings(old)] == ["adding-field-with-default"]
    project(tmp_path, {**ACCOUNTS, "002_plan.sql": sql}, 'pg-version = "15"\n')
    assert lint("--migrations-dir", "migrations", cwd=tmp_path).returncode == ExitCode.OK


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ('excluded = ["prefer-text-field"]\n', "unknown key 'lint.excluded'"),
        ('exclude = "prefer-text-field"\n', "lint.exclude in [tool.natlangchain-migrate] must be"),
        (
            'exclude = ["prefer-txt-field"]\n',
            "names 'prefer-txt-field', which is not a squawk rule",
        ),
        ('pg-version = "fifteen"\n', "lint.pg-version in [tool.natlangchain-migrate] must be"),
    ],
    ids=["unknown-key", "not-a-list", "unknown-rule", "bad-version"],
)
def test_bad_pyproject_settings_are_refused_naming_the_file(
    tmp_path: Path, config: str, message: str
) -> None:
    project(tmp_path, {**ACCOUNTS, "002_plan.sql": PLAN_002}, config)
    result = lint("--migrations-dir", "migrations", cwd=tmp_path)
    assert result.returncode == ExitCode.USAGE
    assert str(tmp_path / "pyproject.toml") in result.stderr
    assert message in result.stderr
    assert result.stdout == ""


def test_shipped_migrations_lint_clean_under_the_repository_configuration() -> None:
    """And the configuration is what makes them clean: squawk's defaults flag the data model."""
    assert lint("--all", cwd=REPO).returncode == ExitCode.OK
    folder = Path(str(shipped_migrations_dir()))
    shipped = sorted(str(p) for p in folder.glob("*.sql") if not p.name.endswith(".down.sql"))
    assert len(shipped) == 3
    bare = subprocess.run(
        [locate_squawk(), "--reporter=json", "--assume-in-transaction", *shipped],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "prefer-text-field" in {item["rule_name"] for item in json.loads(bare.stdout)}


def test_with_a_database_only_pending_migrations_are_linted(
    tmp_path: Path, migrated_database_url: str
) -> None:
    """001-003 are applied there; only the new 004 is checked, unless --all."""
    folder = tmp_path / "migrations"
    shutil.copytree(str(shipped_migrations_dir()), folder)
    (folder / "004_plan.sql").write_text(
        "ALTER TABLE entries ADD COLUMN plan text NOT NULL;\n", encoding="utf-8"
    )
    (tmp_path / "pyproject.toml").write_text(
        (REPO / "pyproject.toml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    pending = lint(
        "--migrations-dir", "migrations", "--json", cwd=tmp_path, database_url=migrated_database_url
    )
    assert pending.returncode == ExitCode.LINT_FINDINGS, pending.stderr
    assert json.loads(pending.stdout)["checked"] == ["004_plan.sql"]
    assert [(f["file"], f["rule"]) for f in findings(pending)] == [
        ("migrations/004_plan.sql", "adding-required-field")
    ]
    every = lint(
        "--migrations-dir",
        "migrations",
        "--all",
        "--json",
        cwd=tmp_path,
        database_url=migrated_database_url,
    )
    assert len(json.loads(every.stdout)["checked"]) == 4


def test_lint_against_a_fresh_database_checks_everything_and_writes_nothing(
    tmp_path: Path, database_url: str
) -> None:
    project(tmp_path, {**ACCOUNTS, "002_plan.sql": PLAN_002})
    result = lint(
        "--migrations-dir", "migrations", "--json", cwd=tmp_path, database_url=database_url
    )
    assert result.returncode == ExitCode.LINT_FINDINGS, result.stderr
    assert json.loads(result.stdout)["checked"] == ["001_accounts.sql", "002_plan.sql"]
    tables = "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
    assert asyncio.run(fetchval(database_url, tables)) == 0


def test_nothing_pending_is_clean(tmp_path: Path, migrated_database_url: str) -> None:
    result = lint("--json", cwd=REPO, database_url=migrated_database_url)
    assert result.returncode == ExitCode.OK, result.stderr
    assert json.loads(result.stdout) == {"checked": [], "findings": []}


def test_unreachable_database_never_shows_the_password(tmp_path: Path, database_url: str) -> None:
    project(tmp_path, ACCOUNTS)
    url = database_url.replace("pw-Secr3t", "wrong-pw-Secr3t")
    result = lint("--migrations-dir", "migrations", cwd=tmp_path, database_url=url)
    assert result.returncode == ExitCode.CONNECTION_REJECTED
    assert "Secr3t" not in result.stdout + result.stderr


def test_missing_squawk_has_its_own_exit_code(tmp_path: Path) -> None:
    project(tmp_path, ACCOUNTS)
    result = lint(
        "--migrations-dir",
        "migrations",
        cwd=tmp_path,
        env={"NATLANGCHAIN_MIGRATE_SQUAWK": str(tmp_path / "no-squawk")},
    )
    assert result.returncode == ExitCode.SQUAWK_UNAVAILABLE
    assert "NATLANGCHAIN_MIGRATE_SQUAWK" in result.stderr
    with pytest.raises(SquawkUnavailableError, match=r"pip install 'natlangchain-migrate\[lint\]'"):
        locate_squawk({"PATH": str(tmp_path)}, scripts_dir=str(tmp_path))


def test_a_no_transaction_file_that_failed_part_way_is_still_linted(
    tmp_path: Path, database_url: str
) -> None:
    """The next run resumes it, so it is pending for lint too; 001 is applied."""
    failing = "-- natlangchain: no-transaction\nCREATE TABLE plans (id bigint);\nSELECT 1/0;\n"
    folder = project(tmp_path, {**ACCOUNTS, "002_plans.sql": failing})
    applied = run_cli("--migrations-dir", str(folder), database_url=database_url)
    assert applied.returncode == ExitCode.MIGRATION_FAILED, applied.stderr
    result = lint(
        "--migrations-dir", "migrations", "--json", cwd=tmp_path, database_url=database_url
    )
    assert json.loads(result.stdout)["checked"] == ["002_plans.sql"], result.stderr


def test_pyproject_of_the_working_directory_when_none_is_above_the_folder(
    tmp_path: Path,
) -> None:
    folder = write_migrations(
        tmp_path / "shared" / "migrations", {**ACCOUNTS, "002_plan.sql": PLAN_002}
    )
    here = tmp_path / "here"
    project(here, {}, 'exclude = ["adding-required-field"]\n')
    result = lint("--migrations-dir", str(folder), "--json", cwd=here)
    assert [f["rule"] for f in findings(result)] == ["require-concurrent-index-creation"]


def test_a_squawk_toml_where_lint_runs_changes_nothing(tmp_path: Path) -> None:
    project(tmp_path, {**ACCOUNTS, "002_plan.sql": PLAN_002})
    (tmp_path / ".squawk.toml").write_text('excluded_rules = ["adding-required-field"]\n')
    result = lint("--migrations-dir", "migrations", "--json", cwd=tmp_path)
    assert "adding-required-field" in {f["rule"] for f in findings(result)}


def test_squawk_named_by_the_variable_is_used(tmp_path: Path) -> None:
    project(tmp_path, {**ACCOUNTS, "002_plan.sql": PLAN_002})
    marker = tmp_path / "called"
    named = tmp_path / "bin" / "squawk"
    named.parent.mkdir()
    named.write_text(f'#!/bin/sh\necho x >> "{marker}"\nexec "{locate_squawk()}" "$@"\n')
    named.chmod(0o755)
    env = {"NATLANGCHAIN_MIGRATE_SQUAWK": str(named)}
    result = lint("--migrations-dir", "migrations", cwd=tmp_path, env=env)
    assert result.returncode == ExitCode.LINT_FINDINGS, result.stderr
    assert marker.read_text().count("x") >= 1


def test_repeatables_are_linted_like_transactional_files_and_only_when_changed(
    tmp_path: Path, database_url: str
) -> None:
    view = "CREATE OR REPLACE VIEW account_ids AS SELECT id FROM accounts;\n"
    folder = project(tmp_path, {**ACCOUNTS, "R__views.sql": view})
    every = lint("--migrations-dir", "migrations", "--json", cwd=tmp_path)
    assert json.loads(every.stdout)["checked"] == ["001_accounts.sql", "R__views.sql"]
    applied = run_cli("--migrations-dir", str(folder), database_url=database_url)
    assert applied.returncode == 0, applied.stderr
    unchanged = lint(
        "--migrations-dir", "migrations", "--json", cwd=tmp_path, database_url=database_url
    )
    assert json.loads(unchanged.stdout)["checked"] == []
    (folder / "R__views.sql").write_text(
        view + "ALTER TABLE accounts ADD COLUMN plan text NOT NULL;\n", encoding="utf-8"
    )
    changed = lint(
        "--migrations-dir", "migrations", "--json", cwd=tmp_path, database_url=database_url
    )
    assert changed.returncode == ExitCode.LINT_FINDINGS, changed.stderr
    assert [(f["file"], f["line"], f["rule"]) for f in findings(changed)] == [
        ("migrations/R__views.sql", 2, "adding-required-field")
    ]


BACKFILL_003 = (
    "-- natlangchain: backfill table=accounts key=id batch=auto target=200ms "
    "max-lag=10s max-lock-waits=off\n"
    "UPDATE accounts SET plan = 'free' WHERE id BETWEEN :lo AND :hi;\n"
)


def test_a_backfill_file_lints_with_its_bounds_and_its_settings_checked(tmp_path: Path) -> None:
    """README's backfill form lints clean (squawk's parser does not know :lo and :hi, and
    reported them as syntax errors); a bad setting is refused as a run refuses it."""
    files = {**ACCOUNTS, "002_plan.sql": "ALTER TABLE accounts ADD COLUMN plan text;\n"}
    project(tmp_path, {**files, "003_fill.sql": BACKFILL_003})
    result = lint("--migrations-dir", "migrations", cwd=tmp_path)
    assert result.returncode == ExitCode.OK, result.stdout + result.stderr
    bad = BACKFILL_003.replace("max-lag=10s", "max-lag=abc")
    project(tmp_path, {**files, "003_fill.sql": bad})
    result = lint("--migrations-dir", "migrations", cwd=tmp_path)
    assert result.returncode == ExitCode.USAGE, result.stdout + result.stderr
    assert "003_fill.sql (its backfill line): max-lag=abc" in result.stderr
