"""A real history with down files, written by others: OpenMeter's golang-migrate folder
(tests/data/openmeter/README.txt names the repository, commit and licence), 101 versions in
14-digit timestamps, each with its ``.down.sql``. Applied whole, rolled back whole (every
down file, newest first), applied again: the schema must come back byte for byte. The few
places where upstream's down files do not restore the schema exactly are pinned here by
name, as ``verify`` reports them; they are findings about that history, not about the runner.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import shutil
from pathlib import Path

import pytest

from natlangchain_migrate.errors import ExitCode
from natlangchain_migrate.schema_dump import dump_schema
from tests.conftest import log_events, run_cli, table_names

HISTORY = Path(__file__).parent / "data" / "openmeter" / "migrations"
FIRST = "20240826120919_init"
NEWEST = "20250605102416_subscription-cascade"
# What 20250605102416's up creates and its down leaves: the trigger (dropped later with its
# table, subscription_items, by 20241204162012's down) and its function (left for good).
LEFT_FUNCTION = "public.delete_entitlement_on_subscription_item_delete()"
LEFT_TRIGGER = "trigger_delete_entitlement_on_subscription_item_delete"


def _copy(tmp_path: Path, below: str = "99999999999999") -> Path:
    """The vendored files (never touched in place), those of versions below ``below``."""
    folder = tmp_path / f"migrations-{below}"
    folder.mkdir()
    for path in HISTORY.iterdir():
        if path.name < below:
            shutil.copyfile(path, folder / path.name)
    return folder


def _versions() -> list[int]:
    return sorted({int(path.name.partition("_")[0]) for path in HISTORY.glob("*.up.sql")})


def _changed_lines(before: str, after: str) -> list[str]:
    diff = difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
    return [
        line
        for line in diff
        if line[:1] in "+-" and line[1:].strip() and not line.startswith(("+++", "---"))
    ]


def test_the_vendored_history_is_whole() -> None:
    """Every version has its up and its down file, and nothing else is there: the test
    below rolls back every one of them."""
    names = sorted(path.name for path in HISTORY.iterdir())
    ups = [name.removesuffix(".up.sql") for name in names if name.endswith(".up.sql")]
    downs = [name.removesuffix(".down.sql") for name in names if name.endswith(".down.sql")]
    assert ups == downs
    assert len(names) == 2 * len(ups) == 202
    assert (ups[0], ups[-1]) == (FIRST, NEWEST)
    assert all(len(name.partition("_")[0]) == 14 for name in ups)


def test_real_history_applies_rolls_back_and_reapplies_to_an_identical_schema(
    database_url: str, tmp_path: Path
) -> None:
    """The whole round trip with the runner's own commands, as a user would run them."""
    folder = _copy(tmp_path)
    flags = ("--migrations-dir", str(folder))
    versions = _versions()
    empty = asyncio.run(dump_schema(database_url))

    pending = run_cli("--status", *flags, database_url=database_url)
    assert pending.returncode == 0, pending.stderr[-2000:]
    assert f"{FIRST}: PENDING" in pending.stdout, pending.stdout[-2000:]
    up = run_cli(*flags, database_url=database_url, timeout=600)
    assert up.returncode == 0, up.stderr[-3000:]
    assert f'"applied_count": {len(versions)},' in up.stderr, up.stderr[-500:]
    assert run_cli("--check", *flags, database_url=database_url).returncode == 0
    first = asyncio.run(dump_schema(database_url))
    assert len(asyncio.run(table_names(database_url))) > 40

    down = run_cli("--rollback", "--to", "0", *flags, database_url=database_url, timeout=600)
    assert down.returncode == 0, down.stderr[-3000:]
    undone = [e["version"] for e in log_events(down.stderr) if e["event"] == "rollback_done"]
    assert undone == versions[::-1]  # every down file ran, newest first
    status = run_cli("--status", *flags, database_url=database_url)
    assert f"{NEWEST}: PENDING" in status.stdout
    assert ": APPLIED" not in status.stdout
    assert asyncio.run(table_names(database_url)) == {"schema_migrations"}
    # Back to an empty schema but for one object upstream's down files never drop.
    left = _changed_lines(empty, asyncio.run(dump_schema(database_url)))
    assert left[0] == f"+CREATE OR REPLACE FUNCTION {LEFT_FUNCTION}", left
    assert all(line.startswith("+") for line in left), left
    assert sum("CREATE" in line for line in left) == 1, left

    again = run_cli(*flags, database_url=database_url, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f'"applied_count": {len(versions)},' in again.stderr, again.stderr[-500:]
    assert asyncio.run(dump_schema(database_url)) == first


# ``verify`` on the history, and on the history as it stood at three earlier versions (the
# files below a version, as the folder was before it was added): the first difference it
# finds, newest first, or none. Each is upstream's, checked by hand against the files.
VERIFIED = {
    # 20250605102416's up creates a trigger and its function; its down drops neither.
    "whole": ("99999999999999", NEWEST, [f"+CREATE TRIGGER {LEFT_TRIGGER} ", LEFT_FUNCTION]),
    # Its down re-creates the column its up drops, but not the index on it.
    "index-lost": (
        "20240926164233",
        "20240924164504_billing-profile",
        ["-CREATE INDEX billingprofile_namespace_key ON public.billing_profiles "],
    ),
    # Its down adds back the four columns its up drops, at the end of the table, in another
    # order (the most common difference in this history: thirteen versions have it).
    "column-order": (
        "20240923180033",
        "20240923170525_customer_drop_providers",
        ["-    tax_provider character varying,", "+    tax_provider character varying"],
    ),
    # The history's first six versions pass.
    "first-six": ("20240923170525", None, []),
}


@pytest.mark.parametrize(("below", "fails", "diff"), VERIFIED.values(), ids=VERIFIED.keys())
def test_verify_names_each_down_file_that_does_not_restore_the_schema(
    database_url: str, tmp_path: Path, below: str, fails: str | None, diff: list[str]
) -> None:
    """verify (every down file checked against the schema before its version) on the real
    history: the first version, newest first, whose down file leaves another schema."""
    folder = _copy(tmp_path, below)
    result = run_cli(
        "verify",
        "--json",
        "--migrations-dir",
        str(folder),
        database_url=database_url,
        timeout=600,
    )
    report = json.loads(result.stdout)
    if fails is None:
        assert result.returncode == 0, result.stderr[-3000:]
        assert len(report["verified"]) == len(list(folder.glob("*.up.sql"))) == 6
        return
    assert result.returncode == ExitCode.SCHEMA_NOT_RESTORED, result.stderr[-3000:]
    failure = report["failure"]
    assert (failure["name"], failure["step"]) == (fails, "down"), failure
    assert failure["file"] == f"{fails}.down.sql"
    for line in diff:
        assert line in failure["diff"], failure["diff"]
