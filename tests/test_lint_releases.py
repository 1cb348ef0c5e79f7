"""Lint for two releases at once: expand parts (``NNN_name.sql``) and contract parts
(``NNN_name.contract.sql``) under a rolling deploy.

The rule tables call ``lint_migrations`` with the real squawk (so squawk's findings of
the same rules are merged, never doubled); the CLI tests run ``natlangchain-migrate
lint`` as a user does.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from harness.servers.sql import execute
from natlangchain_migrate.directives import parse_directives
from natlangchain_migrate.discovery import Migration, checksum
from natlangchain_migrate.errors import ExitCode
from natlangchain_migrate.lint import Finding, lint_migrations, locate_squawk
from natlangchain_migrate.lint_config import LintConfig
from natlangchain_migrate.lint_releases import EXPAND_RULES
from tests.conftest import run_cli
from tests.test_lint import REPO, findings, lint, project

ACCOUNTS = (
    "CREATE TABLE accounts (id bigint PRIMARY KEY, name text NOT NULL, email text DEFAULT '');\n"
)
EXPAND = "002_change.sql"
CONTRACT = "002_change.contract.sql"


def migration(filename: str, sql: str) -> Migration:
    version = int(filename.split("_", 1)[0]) if filename[0].isdigit() else 0
    return Migration(
        version=version,
        name=filename.removesuffix(".sql"),
        filename=filename,
        sql=sql,
        checksum=checksum(sql),
        directives=parse_directives(filename, sql),
    )


def check(files: dict[str, str], config: LintConfig | None = None) -> list[Finding]:
    """Every finding for these files, 001 (the accounts table) first."""
    config = config or LintConfig()
    migrations = [migration("001_accounts.sql", ACCOUNTS)]
    migrations += [migration(name, sql) for name, sql in files.items()]
    return lint_migrations(migrations, config, shown_dir="", squawk=locate_squawk())


def release(files: dict[str, str]) -> list[tuple[str, int, str]]:
    """(file, line, rule) of the findings whose rule is one of the release rules."""
    return [(f.file, f.line, f.rule) for f in check(files) if f.rule in EXPAND_RULES]


EXPAND_BREAKS = [
    ("ALTER TABLE accounts DROP COLUMN email;", "ban-drop-column"),
    ("ALTER TABLE accounts DROP COLUMN IF EXISTS email;", "ban-drop-column"),
    ("DROP TABLE accounts;", "ban-drop-table"),
    ("DROP TABLE IF EXISTS accounts;", "ban-drop-table"),
    ("ALTER TABLE accounts RENAME COLUMN name TO display_name;", "renaming-column"),
    ("ALTER TABLE accounts RENAME TO users;", "renaming-table"),
    ("ALTER TABLE accounts SET SCHEMA archive;", "ban-set-schema"),
    ("ALTER TABLE accounts ALTER COLUMN name TYPE varchar(100);", "changing-column-type"),
    (
        "ALTER TABLE accounts ALTER name SET DATA TYPE bytea USING name::bytea;",
        "changing-column-type",
    ),
    ("ALTER TABLE accounts ALTER COLUMN email SET NOT NULL;", "adding-not-nullable-field"),
    ("ALTER TABLE accounts ADD COLUMN plan text NOT NULL;", "adding-required-field"),
    # The cases squawk leaves out, with the same rule names.
    ("ALTER TABLE accounts ADD COLUMN plan text NOT NULL DEFAULT NULL;", "adding-required-field"),
    ("ALTER TABLE accounts ADD COLUMN code bigint PRIMARY KEY;", "adding-required-field"),
    (
        "ALTER TABLE accounts ADD COLUMN plan text;\n"
        "ALTER TABLE accounts ALTER COLUMN plan SET NOT NULL;",
        "adding-required-field",
    ),
    (
        "ALTER TABLE accounts ADD COLUMN plan text NOT NULL DEFAULT 'free';\n"
        "ALTER TABLE accounts ALTER COLUMN plan DROP DEFAULT;",
        "adding-required-field",
    ),
    ("ALTER TABLE accounts ALTER COLUMN email DROP DEFAULT;", "ban-drop-default"),
    ("ALTER TABLE accounts ALTER COLUMN email SET DEFAULT NULL;", "ban-drop-default"),
]


@pytest.mark.parametrize(("sql", "rule"), EXPAND_BREAKS, ids=[r for _, r in EXPAND_BREAKS])
def test_an_expand_part_that_breaks_the_old_release_is_flagged_once(sql: str, rule: str) -> None:
    """One finding per statement: squawk's finding of the rule takes the advice, never a twin."""
    found = [f for f in check({EXPAND: sql}) if f.rule in EXPAND_RULES]
    assert [(f.file, f.rule) for f in found] == [(EXPAND, rule)]
    (finding,) = found
    assert finding.line == sql.count("\n") + 1  # the breaking statement is the last
    assert CONTRACT in finding.message
    assert "\n" not in finding.message
    assert finding.help is not None
    assert "without downtime" in finding.help


@pytest.mark.parametrize(
    ("rule", "advice"),
    [
        ("renaming-column", "add display_name, a trigger that keeps name and display_name equal"),
        ("changing-column-type", "add a column of the new type, a trigger"),
        ("adding-required-field", "add it nullable (or with a default) here, backfill it"),
        ("renaming-table", "create a view of the old name over it"),
    ],
)
def test_the_advice_gives_the_two_steps(rule: str, advice: str) -> None:
    sql = next(sql for sql, r in EXPAND_BREAKS if r == rule)
    (finding,) = [f for f in check({EXPAND: sql}) if f.rule == rule]
    assert advice in finding.message


SAFE_FOR_THE_OLD_RELEASE = [
    "ALTER TABLE accounts ADD COLUMN plan text;",
    "ALTER TABLE accounts ADD COLUMN plan text DEFAULT 'free';",
    "ALTER TABLE accounts ADD COLUMN plan text NOT NULL DEFAULT 'free';",
    "ALTER TABLE accounts ADD COLUMN n bigint GENERATED ALWAYS AS IDENTITY;",
    "ALTER TABLE accounts ADD COLUMN n bigint NOT NULL GENERATED ALWAYS AS (id * 2) STORED;",
    "ALTER TABLE accounts ADD COLUMN n bigserial;",
    "ALTER TABLE accounts ALTER COLUMN email SET DEFAULT 'none';",
    "ALTER TABLE accounts ALTER COLUMN name DROP NOT NULL;",
    "ALTER TABLE accounts ADD CONSTRAINT email_set CHECK (email IS NOT NULL) NOT VALID;",
    "ALTER TABLE accounts ADD CONSTRAINT accounts_email_key UNIQUE (email);",
    "CREATE TABLE plans (id bigint PRIMARY KEY, name text NOT NULL);",
    "CREATE VIEW account_names AS SELECT id, name FROM accounts;",
    "COMMENT ON COLUMN accounts.email IS 'contact';",
    "UPDATE accounts SET email = '' WHERE email IS NULL;",
    "CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;\n"
    "CREATE TRIGGER t BEFORE INSERT ON accounts FOR EACH ROW EXECUTE FUNCTION f();",
    # A table renamed with a view of its old name: the old release reads and writes through.
    "ALTER TABLE accounts RENAME TO users;\nCREATE VIEW accounts AS SELECT * FROM users;",
    "ALTER TABLE accounts SET SCHEMA archive;\n"
    "CREATE VIEW accounts AS SELECT * FROM archive.accounts;",
]


@pytest.mark.parametrize("sql", SAFE_FOR_THE_OLD_RELEASE)
def test_what_the_old_release_lives_with_is_not_flagged(sql: str) -> None:
    assert release({EXPAND: sql}) == []


def test_a_concurrent_index_in_a_no_transaction_expand_part_is_clean() -> None:
    sql = "-- natlangchain: no-transaction\n"
    sql += "CREATE INDEX CONCURRENTLY IF NOT EXISTS accounts_email ON accounts (email);\n"
    assert check({EXPAND: sql}) == []


CREATED_IN_THE_SAME_FILE = [
    "ALTER TABLE plans RENAME COLUMN name TO title;",
    "ALTER TABLE plans ALTER COLUMN name TYPE varchar(100);",
    "ALTER TABLE plans ALTER COLUMN note SET NOT NULL;",
    "ALTER TABLE plans ALTER COLUMN name DROP DEFAULT;",
    "ALTER TABLE plans ADD COLUMN price bigint NOT NULL;",
    "ALTER TABLE plans DROP COLUMN note;",
    "ALTER TABLE plans RENAME TO tiers;\nALTER TABLE tiers ALTER COLUMN note SET NOT NULL;",
    "ALTER TABLE plans SET SCHEMA archive;",
    "DROP TABLE plans;",
]


@pytest.mark.parametrize("then", CREATED_IN_THE_SAME_FILE)
def test_a_table_the_file_creates_is_new_to_every_release(then: str) -> None:
    """squawk flags most of these too; no running release knows the table yet."""
    sql = "CREATE TABLE plans (id bigint PRIMARY KEY, name text DEFAULT 'x', note text);\n" + then
    assert release({EXPAND: sql}) == []
    as_select = "CREATE TABLE plans AS SELECT id, name, email AS note FROM accounts;\n" + then
    assert release({EXPAND: as_select}) == []


@pytest.mark.parametrize(
    "then",
    [
        "ALTER TABLE accounts ALTER COLUMN plan TYPE varchar(20);",
        "ALTER TABLE accounts RENAME COLUMN plan TO tier;\nALTER TABLE accounts DROP COLUMN tier;",
        "ALTER TABLE accounts ALTER COLUMN plan SET DEFAULT 'free';\n"
        "ALTER TABLE accounts ALTER COLUMN plan SET NOT NULL;",
        "ALTER TABLE accounts DROP COLUMN plan;",
    ],
)
def test_a_column_the_file_adds_to_an_existing_table_is_new(then: str) -> None:
    sql = "ALTER TABLE accounts ADD COLUMN plan text;\n" + then
    assert release({EXPAND: sql}) == []


def test_an_earlier_file_does_not_make_a_table_new() -> None:
    """Only the file itself (one transaction) counts: 001 is applied when 002 runs."""
    files = {"002_plans.sql": "CREATE TABLE plans (id bigint PRIMARY KEY, name text);\n"}
    files["003_rename.sql"] = "ALTER TABLE plans RENAME COLUMN name TO title;\n"
    assert release(files) == [("003_rename.sql", 1, "renaming-column")]


def test_a_repeatable_is_an_expand_part_without_a_contract_part_of_its_own() -> None:
    (finding,) = check({"R__cleanup.sql": "ALTER TABLE accounts DROP COLUMN email;\n"})
    assert finding.rule == "ban-drop-column"
    assert "the contract part of a versioned migration (NNN_name.contract.sql)" in finding.message


CONTRACT_MAY = [
    "ALTER TABLE accounts DROP COLUMN email;",
    "DROP TABLE accounts;",
    "ALTER TABLE accounts ALTER COLUMN email DROP DEFAULT;",
    "DROP TRIGGER IF EXISTS t ON accounts;",
    "DROP FUNCTION IF EXISTS f();",
    "DROP VIEW IF EXISTS account_names;",
    "ALTER TABLE accounts ADD CONSTRAINT email_set CHECK (email IS NOT NULL) NOT VALID;",
    "ALTER TABLE accounts ADD COLUMN plan text;",
]


@pytest.mark.parametrize("sql", CONTRACT_MAY)
def test_a_contract_part_may_drop_and_tighten(sql: str) -> None:
    assert release({EXPAND: "SELECT 1;\n", CONTRACT: sql}) == []


def test_set_not_null_in_a_contract_part_keeps_only_squawks_lock_advice() -> None:
    sql = "ALTER TABLE accounts ALTER COLUMN email SET NOT NULL;\n"
    (finding,) = check({EXPAND: "SELECT 1;\n", CONTRACT: sql})
    assert finding.rule == "adding-not-nullable-field"
    assert finding.message.startswith("Setting a column `NOT NULL` blocks reads")


CONTRACT_BREAKS = [
    ("ALTER TABLE accounts RENAME COLUMN name TO display_name;", "renaming-column"),
    ("ALTER TABLE accounts RENAME TO users;", "renaming-table"),
    ("ALTER TABLE accounts SET SCHEMA archive;", "ban-set-schema"),
    ("ALTER TABLE accounts ALTER COLUMN name TYPE varchar(100);", "changing-column-type"),
    ("ALTER TABLE accounts ADD COLUMN plan text NOT NULL;", "adding-required-field"),
    ("ALTER TABLE accounts ADD COLUMN plan text NOT NULL DEFAULT NULL;", "adding-required-field"),
]


@pytest.mark.parametrize(("sql", "rule"), CONTRACT_BREAKS, ids=[r for _, r in CONTRACT_BREAKS])
def test_a_contract_part_must_not_add_what_the_running_release_trips_over(
    sql: str, rule: str
) -> None:
    found = [f for f in check({EXPAND: "SELECT 1;\n", CONTRACT: sql}) if f.rule in EXPAND_RULES]
    assert [(f.file, f.line, f.rule) for f in found] == [(CONTRACT, 1, rule)]
    assert "expand part" in found[0].message


def test_a_contract_part_may_change_what_it_creates() -> None:
    sql = "CREATE TABLE plans (id bigint PRIMARY KEY, name text);\n"
    sql += "ALTER TABLE plans RENAME COLUMN name TO title;\n"
    assert release({EXPAND: "SELECT 1;\n", CONTRACT: sql}) == []


def test_pyproject_exclude_turns_a_release_rule_off() -> None:
    files = {EXPAND: "ALTER TABLE accounts ALTER COLUMN email SET DEFAULT NULL;\n"}
    assert [f.rule for f in check(files)] == ["ban-drop-default"]
    assert check(files, LintConfig(exclude=("ban-drop-default",))) == []


def test_lint_ignore_in_the_header_turns_a_release_rule_off_for_the_file() -> None:
    header = "-- natlangchain: lint-ignore ban-drop-column nothing reads email since 001\n"
    sql = header + "ALTER TABLE accounts DROP COLUMN email;\n"
    assert check({EXPAND: sql}) == []


@pytest.mark.parametrize(
    "sql",
    [
        "-- squawk-ignore ban-drop-default\n"
        "ALTER TABLE accounts ALTER COLUMN email SET DEFAULT NULL;",
        "-- squawk-ignore ban-drop-column\nALTER TABLE accounts\n  DROP COLUMN email;",
        "ALTER TABLE accounts -- squawk-ignore ban-drop-column\n  DROP COLUMN email;",
        "-- squawk-ignore\nALTER TABLE accounts DROP COLUMN email;",
    ],
    ids=["ours-only", "above-a-long-statement", "inside", "every-rule"],
)
def test_squawk_ignore_above_a_statement_turns_its_release_rules_off(sql: str) -> None:
    assert release({EXPAND: sql}) == []


def test_squawk_ignore_covers_only_the_statement_below_it() -> None:
    sql = "-- squawk-ignore ban-drop-column\nALTER TABLE accounts DROP COLUMN email;\n"
    sql += "ALTER TABLE accounts DROP COLUMN name;\n"
    assert release({EXPAND: sql}) == [(EXPAND, 3, "ban-drop-column")]


def test_cli_prints_one_line_per_finding_with_file_and_line_and_exits_20(tmp_path: Path) -> None:
    expand = (
        "-- 002: accounts get a display name\n"
        "ALTER TABLE accounts ADD COLUMN display_name text;\n"
        "ALTER TABLE accounts DROP COLUMN email;\n"
        "ALTER TABLE accounts\n"
        "  ALTER COLUMN name SET NOT NULL;\n"
    )
    contract = "ALTER TABLE accounts DROP COLUMN email;\nALTER TABLE accounts RENAME TO users;\n"
    project(
        tmp_path,
        {"001_accounts.sql": ACCOUNTS, EXPAND: expand, CONTRACT: contract},
    )
    result = lint("--migrations-dir", "migrations", cwd=tmp_path)
    assert result.returncode == ExitCode.LINT_FINDINGS, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(" ", 2)[:2] for line in lines] == [
        ["migrations/002_change.sql:3:22", "ban-drop-column"],
        ["migrations/002_change.sql:5:21", "adding-not-nullable-field"],
        ["migrations/002_change.contract.sql:2:22", "renaming-table"],
    ]
    assert "3 problem(s) in 2 of 3 checked file(s)" in result.stderr
    document = json.loads(lint("--migrations-dir", "migrations", "--json", cwd=tmp_path).stdout)
    assert document["checked"] == ["001_accounts.sql", EXPAND, CONTRACT]


def test_cli_exits_0_once_the_drop_is_in_the_contract_part(tmp_path: Path) -> None:
    project(
        tmp_path,
        {
            "001_accounts.sql": ACCOUNTS,
            EXPAND: "ALTER TABLE accounts ADD COLUMN display_name text;\n",
            CONTRACT: "ALTER TABLE accounts DROP COLUMN email;\n",
            "002_change.contract.down.sql": "ALTER TABLE accounts ADD COLUMN email text;\n",
        },
    )
    result = lint("--migrations-dir", "migrations", cwd=tmp_path)
    assert result.returncode == ExitCode.OK, result.stdout + result.stderr
    assert "0 problem(s) in 0 of 3 checked file(s)" in result.stderr


def test_cli_opt_out_in_pyproject(tmp_path: Path) -> None:
    files = {"001_accounts.sql": ACCOUNTS, EXPAND: "ALTER TABLE accounts DROP COLUMN email;\n"}
    project(tmp_path, files, 'exclude = ["ban-drop-column"]\n')
    result = lint("--migrations-dir", "migrations", "--json", cwd=tmp_path)
    assert result.returncode == ExitCode.OK, result.stdout + result.stderr
    assert findings(result) == []


def test_other_drops_take_the_advice_in_an_expand_part_and_go_in_a_contract_part() -> None:
    """squawk's ban-drop-function and friends: the rules are squawk's, the advice ours."""
    sql = "DROP FUNCTION IF EXISTS f();\nDROP VIEW IF EXISTS account_names;\n"
    expand = check({EXPAND: sql})
    assert [(f.line, f.rule) for f in expand] == [(1, "ban-drop-function"), (2, "ban-drop-view")]
    assert all(f.message.endswith(f"move the drop to {CONTRACT}") for f in expand)
    assert check({EXPAND: "SELECT 1;\n", CONTRACT: sql}) == []


def test_dropping_not_null_in_an_expand_part_keeps_squawks_word() -> None:
    """The old release's writes still pass; squawk's warning about readers stands as it is."""
    (finding,) = check({EXPAND: "ALTER TABLE accounts ALTER COLUMN name DROP NOT NULL;\n"})
    assert finding.rule == "ban-drop-not-null"
    assert finding.message == "Dropping a `NOT NULL` constraint may break existing clients."


def test_with_a_database_contract_parts_are_pending_until_the_contract_ledger_has_them(
    tmp_path: Path, database_url: str
) -> None:
    """The contract ledger (schema_contracts, written by ``contract``) is made by hand here."""
    expand = "ALTER TABLE accounts ADD COLUMN display_name text;\n"
    contract = "ALTER TABLE accounts RENAME COLUMN name TO full_name;\n"
    folder = project(tmp_path, {"001_accounts.sql": ACCOUNTS, EXPAND: expand})
    applied = run_cli("--migrations-dir", str(folder), database_url=database_url)
    assert applied.returncode == ExitCode.OK, applied.stderr
    (folder / CONTRACT).write_text(contract, encoding="utf-8")
    pending = lint(
        "--migrations-dir", "migrations", "--json", cwd=tmp_path, database_url=database_url
    )
    assert pending.returncode == ExitCode.LINT_FINDINGS, pending.stderr
    assert json.loads(pending.stdout)["checked"] == [CONTRACT]
    assert [(f["line"], f["rule"]) for f in findings(pending)] == [(1, "renaming-column")]
    ledger = "CREATE TABLE public.schema_contracts (version bigint PRIMARY KEY);"
    asyncio.run(execute(database_url, ledger + " INSERT INTO public.schema_contracts VALUES (2);"))
    done = lint("--migrations-dir", "migrations", "--json", cwd=tmp_path, database_url=database_url)
    assert done.returncode == ExitCode.OK, done.stderr
    assert json.loads(done.stdout) == {"checked": [], "findings": []}


def test_readme_example_line_is_what_lint_prints(tmp_path: Path) -> None:
    accounts = "CREATE TABLE accounts (id bigint PRIMARY KEY, name text NOT NULL);\n"
    rename = "-- 004: display names\nALTER TABLE accounts RENAME COLUMN name TO display_name;\n"
    project(tmp_path, {"001_accounts.sql": accounts, "004_rename.sql": rename})
    result = lint("--migrations-dir", "migrations", cwd=tmp_path)
    assert result.returncode == ExitCode.LINT_FINDINGS
    (line,) = result.stdout.splitlines()
    readme = " ".join((REPO / "README.md").read_text(encoding="utf-8").split())
    assert f"`{line}`" in readme


def test_a_contract_part_that_is_not_utf8_is_refused_naming_it(tmp_path: Path) -> None:
    folder = project(tmp_path, {"001_accounts.sql": ACCOUNTS, EXPAND: "SELECT 1;\n"})
    (folder / CONTRACT).write_bytes(b"ALTER TABLE accounts DROP COLUMN caf\xe9;\n")
    result = lint("--migrations-dir", "migrations", cwd=tmp_path)
    assert result.returncode == ExitCode.USAGE
    assert f"{CONTRACT}: not valid UTF-8 at byte 36; save the file as UTF-8" in result.stderr


def test_a_file_that_does_not_parse_gets_squawks_syntax_error_alone() -> None:
    found = check({EXPAND: "ALTER TABLE accounts DROP COLUMN;\n"})
    assert [f.rule for f in found] == ["syntax-error"]
