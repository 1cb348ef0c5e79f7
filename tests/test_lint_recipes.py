"""README's recipes for changing the schema without downtime, run against PostgreSQL.

Each recipe in examples/recipes/ is a folder: ``001`` (the schema before), ``002`` (the
expand part) and ``002 ... .contract.sql``. Two connections play the two releases: the
old one is opened before the expand part and keeps its prepared statements, as a running
replica does. The SQL is applied with asyncpg, each file in one transaction, as the
runner applies it; lint must find nothing in any recipe.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import NamedTuple

import asyncpg
import pytest

from natlangchain_migrate.errors import ExitCode
from tests.test_lint import REPO, lint

pytestmark = pytest.mark.anyio
RECIPES = REPO / "examples" / "recipes"


class Releases(NamedTuple):
    """The old release's connection, the new one's, and one that applies the files."""

    old: asyncpg.Connection
    new: asyncpg.Connection
    folder: Path
    admin: asyncpg.Connection

    async def apply(self, suffix: str) -> None:
        """Apply the folder's file whose name ends in ``suffix``, in one transaction."""
        (path,) = (p for p in self.folder.iterdir() if p.name.endswith(suffix))
        async with self.admin.transaction():
            await self.admin.execute(path.read_text(encoding="utf-8"))


async def releases(database_url: str, recipe: str) -> AsyncIterator[Releases]:
    admin = await asyncpg.connect(database_url)
    connections = [admin]
    try:
        folder = RECIPES / recipe
        (before,) = folder.glob("001_*.sql")
        await admin.execute(before.read_text(encoding="utf-8"))
        connections += [await asyncpg.connect(database_url), await asyncpg.connect(database_url)]
        yield Releases(connections[1], connections[2], folder, admin)
    finally:
        for connection in connections:
            await connection.close()


async def row(connection: asyncpg.Connection, query: str, *args: object) -> tuple[object, ...]:
    """One row as a tuple; a missing row fails the test."""
    record = await connection.fetchrow(query, *args)
    assert record is not None
    return tuple(record)


@pytest.fixture
async def rename_column(database_url: str) -> AsyncIterator[Releases]:
    async for pair in releases(database_url, "rename_column"):
        yield pair


@pytest.fixture
async def change_column_type(database_url: str) -> AsyncIterator[Releases]:
    async for pair in releases(database_url, "change_column_type"):
        yield pair


@pytest.fixture
async def add_not_null_column(database_url: str) -> AsyncIterator[Releases]:
    async for pair in releases(database_url, "add_not_null_column"):
        yield pair


@pytest.fixture
async def split_table(database_url: str) -> AsyncIterator[Releases]:
    async for pair in releases(database_url, "split_table"):
        yield pair


@pytest.mark.parametrize("recipe", sorted(p.name for p in RECIPES.iterdir() if p.is_dir()))
def test_every_recipe_lints_clean(recipe: str) -> None:
    """The advice and the rules agree: each recipe's expand and contract parts pass."""
    result = lint("--all", "--migrations-dir", str(RECIPES / recipe), "--json", cwd=REPO)
    assert result.returncode == ExitCode.OK, result.stdout + result.stderr
    assert len(result.stdout.split(".sql")) > 3  # 001, 002 and its contract part were checked


@pytest.mark.parametrize("recipe", sorted(p.name for p in RECIPES.iterdir() if p.is_dir()))
def test_every_recipe_done_in_one_step_is_flagged(recipe: str, tmp_path: Path) -> None:
    """The contract part pasted into the expand part breaks the old release: lint says so."""
    folder = tmp_path / "migrations"
    folder.mkdir()
    (before,) = (RECIPES / recipe).glob("001_*.sql")
    (contract,) = (RECIPES / recipe).glob("002_*.contract.sql")
    expand = contract.with_name(contract.name.replace(".contract", ""))
    (folder / before.name).write_text(before.read_text(encoding="utf-8"), encoding="utf-8")
    both = expand.read_text(encoding="utf-8") + contract.read_text(encoding="utf-8")
    (folder / expand.name).write_text(both, encoding="utf-8")
    (tmp_path / "pyproject.toml").write_text(
        (REPO / "pyproject.toml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    result = lint("--all", "--migrations-dir", "migrations", cwd=tmp_path)
    assert result.returncode == ExitCode.LINT_FINDINGS, result.stdout + result.stderr
    assert all(line.startswith(f"migrations/{expand.name}:") for line in result.stdout.splitlines())
    assert expand.name.removesuffix(".sql") + ".contract.sql" in result.stdout


@pytest.mark.parametrize(
    "part",
    sorted(str(p.relative_to(RECIPES)) for p in RECIPES.glob("*/002_*.sql")),
)
def test_readme_shows_each_part_as_it_is_in_examples(part: str) -> None:
    """README's recipes are these files, word for word."""
    sql = (RECIPES / part).read_text(encoding="utf-8").rstrip("\n")
    assert f"```sql\n{sql}\n```" in (REPO / "README.md").read_text(encoding="utf-8")


async def test_rename_a_column(rename_column: Releases) -> None:
    old, new = rename_column.old, rename_column.new
    old_insert = "INSERT INTO accounts (name) VALUES ($1) RETURNING id"
    old_read = "SELECT name FROM accounts WHERE id = $1"
    old_update = "UPDATE accounts SET name = $2 WHERE id = $1"
    before = await old.fetchval(old_insert, "before")
    assert await old.fetchval(old_read, before) == "before"

    await rename_column.apply("_rename_name.sql")
    new_insert = "INSERT INTO accounts (display_name) VALUES ($1) RETURNING id"
    new_read = "SELECT display_name FROM accounts WHERE id = $1"
    new_update = "UPDATE accounts SET display_name = $2 WHERE id = $1"
    from_old = await old.fetchval(old_insert, "old")
    from_new = await new.fetchval(new_insert, "new")
    assert [await new.fetchval(new_read, i) for i in (before, from_old, from_new)] == [
        "before",
        "old",
        "new",
    ]
    assert [await old.fetchval(old_read, i) for i in (before, from_old, from_new)] == [
        "before",
        "old",
        "new",
    ]
    await old.execute(old_update, from_new, "renamed by old")
    await new.execute(new_update, from_old, "renamed by new")
    assert await new.fetchval(new_read, from_new) == "renamed by old"
    assert await old.fetchval(old_read, from_old) == "renamed by new"
    with pytest.raises(asyncpg.IntegrityConstraintViolationError):
        await new.execute("INSERT INTO accounts (display_name) VALUES (NULL)")

    await rename_column.apply("_rename_name.contract.sql")
    after = await new.fetchval(new_insert, "after")
    await new.execute(new_update, before, "still here")
    assert [await new.fetchval(new_read, i) for i in (before, from_old, after)] == [
        "still here",
        "renamed by new",
        "after",
    ]
    with pytest.raises(asyncpg.UndefinedColumnError):
        await old.fetchval(old_read, before)
    with pytest.raises(asyncpg.CheckViolationError):
        await new.execute("INSERT INTO accounts (display_name) VALUES (NULL)")


async def test_change_a_column_type(change_column_type: Releases) -> None:
    old, new = change_column_type.old, change_column_type.new
    old_insert = "INSERT INTO articles (title) VALUES ($1) RETURNING id"
    old_read = "SELECT views FROM articles WHERE id = $1"
    old_count = "UPDATE articles SET views = views + 1 WHERE id = $1"
    before = await old.fetchval(old_insert, "before")
    await old.execute(old_count, before)

    await change_column_type.apply("_view_count_bigint.sql")
    new_insert = "INSERT INTO articles (title, view_count) VALUES ($1, $2) RETURNING id"
    new_read = "SELECT view_count FROM articles WHERE id = $1"
    new_count = "UPDATE articles SET view_count = view_count + 1 WHERE id = $1"
    from_old = await old.fetchval(old_insert, "old")
    from_new = await new.fetchval(new_insert, "new", 40)
    for article in (before, from_old, from_new):
        await old.execute(old_count, article)
        await new.execute(new_count, article)
    assert [await new.fetchval(new_read, i) for i in (before, from_old, from_new)] == [3, 2, 42]
    assert [await old.fetchval(old_read, i) for i in (before, from_old, from_new)] == [3, 2, 42]
    assert await new.fetchval("SELECT pg_typeof(view_count)::text FROM articles LIMIT 1") == (
        "bigint"
    )
    # An insert may leave view_count out: views' default comes across.
    default = await new.fetchval("INSERT INTO articles (title) VALUES ('new') RETURNING id")
    assert await new.fetchval(new_read, default) == 0
    # The old column still bounds the new one until the contract part.
    with pytest.raises(asyncpg.NumericValueOutOfRangeError):
        await new.execute("UPDATE articles SET view_count = 3000000000 WHERE id = $1", from_new)

    await change_column_type.apply("_view_count_bigint.contract.sql")
    await new.execute("UPDATE articles SET view_count = 3000000000 WHERE id = $1", from_new)
    assert await new.fetchval(new_read, from_new) == 3_000_000_000
    counted = await new.fetchval("INSERT INTO articles (title) VALUES ('after') RETURNING id")
    assert await new.fetchval(new_read, counted) == 0
    with pytest.raises(asyncpg.UndefinedColumnError):
        await old.fetchval(old_read, before)


async def test_add_a_not_null_column(add_not_null_column: Releases) -> None:
    old, new = add_not_null_column.old, add_not_null_column.new
    old_insert = "INSERT INTO orders (customer, total_cents) VALUES ($1, $2) RETURNING id"
    old_read = "SELECT customer, total_cents FROM orders WHERE id = $1"
    before = await old.fetchval(old_insert, "ann", 100)

    await add_not_null_column.apply("_order_currency.sql")
    new_insert = (
        "INSERT INTO orders (customer, total_cents, currency) VALUES ($1, $2, $3) RETURNING id"
    )
    new_read = "SELECT currency FROM orders WHERE id = $1"
    from_old = await old.fetchval(old_insert, "bob", 200)
    from_new = await new.fetchval(new_insert, "cy", 300, "USD")
    assert [await new.fetchval(new_read, i) for i in (before, from_old, from_new)] == [
        "EUR",
        "EUR",
        "USD",
    ]
    assert await row(old, old_read, from_new) == ("cy", 300)
    with pytest.raises(asyncpg.NotNullViolationError):
        await new.execute(new_insert, "dee", 400, None)

    await add_not_null_column.apply("_order_currency.contract.sql")
    after = await new.fetchval(new_insert, "eve", 500, "GBP")
    assert await new.fetchval(new_read, after) == "GBP"
    # The old release's insert, which leaves currency out, is refused now.
    with pytest.raises(asyncpg.NotNullViolationError):
        await old.fetchval(old_insert, "fay", 600)


async def test_split_a_table(split_table: Releases) -> None:
    old, new = split_table.old, split_table.new
    old_insert = "INSERT INTO users (name, street, city) VALUES ($1, $2, $3) RETURNING id"
    old_read = "SELECT street, city FROM users WHERE id = $1"
    old_move = "UPDATE users SET street = $2, city = $3 WHERE id = $1"
    before = await old.fetchval(old_insert, "ann", "1 Elm St", "Oslo")
    homeless = await old.fetchval(old_insert, "bob", None, None)

    await split_table.apply("_split_addresses.sql")
    new_insert_user = "INSERT INTO users (name) VALUES ($1) RETURNING id"
    new_insert_address = "INSERT INTO addresses (user_id, street, city) VALUES ($1, $2, $3)"
    new_read = (
        "SELECT a.street, a.city FROM users u LEFT JOIN addresses a ON a.user_id = u.id "
        "WHERE u.id = $1"
    )
    new_move = "UPDATE addresses SET street = $2, city = $3 WHERE user_id = $1"
    from_old = await old.fetchval(old_insert, "cy", "2 Oak Rd", "Rome")
    async with new.transaction():
        from_new = await new.fetchval(new_insert_user, "dee")
        await new.execute(new_insert_address, from_new, "3 Pine Ave", "Lima")
    both = (before, homeless, from_old, from_new)
    expected = [("1 Elm St", "Oslo"), (None, None), ("2 Oak Rd", "Rome"), ("3 Pine Ave", "Lima")]
    assert [await row(new, new_read, i) for i in both] == expected
    assert [await row(old, old_read, i) for i in both] == expected
    await old.execute(old_move, from_new, "4 Ash Ln", "Kyiv")
    await new.execute(new_move, from_old, "5 Fir Ct", "Pune")
    await old.execute(old_move, homeless, "6 Yew Way", "Baku")
    await new.execute("DELETE FROM addresses WHERE user_id = $1", before)
    moved = [(None, None), ("6 Yew Way", "Baku"), ("5 Fir Ct", "Pune"), ("4 Ash Ln", "Kyiv")]
    assert [await row(new, new_read, i) for i in both] == moved
    assert [await row(old, old_read, i) for i in both] == moved
    await old.execute("DELETE FROM users WHERE id = $1", from_old)
    assert await new.fetchval("SELECT count(*) FROM addresses WHERE user_id = $1", from_old) == 0

    await split_table.apply("_split_addresses.contract.sql")
    async with new.transaction():
        after = await new.fetchval(new_insert_user, "eve")
        await new.execute(new_insert_address, after, "7 Oak Rd", "Cork")
    await new.execute(new_move, from_new, "8 Elm St", "Oslo")
    assert await row(new, new_read, after) == ("7 Oak Rd", "Cork")
    assert await row(new, new_read, from_new) == ("8 Elm St", "Oslo")
    with pytest.raises(asyncpg.UndefinedColumnError):
        await old.fetchrow(old_read, from_new)
