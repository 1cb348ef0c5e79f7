"""Lint migrations with squawk, under the runner's semantics.

squawk (PyPI ``squawk-cli``) parses PostgreSQL and keeps the rules; this module
runs it the way the runner runs each file (a transactional file inside a
transaction, a ``no-transaction`` file not), drops the rules that the runner's
own settings satisfy, and maps squawk's 0-based lines and byte columns back to
the file as an editor counts them. The rules for two releases at once
(lint_releases.py) join squawk's here, one finding per statement and rule.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sysconfig
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from natlangchain_migrate.discovery import Migration
from natlangchain_migrate.errors import ConfigurationError, SquawkUnavailableError
from natlangchain_migrate.lint_config import TABLE, LintConfig
from natlangchain_migrate.lint_releases import (
    RECIPES,
    adapt_squawk_message,
    owned_rules,
    release_findings,
)
from natlangchain_migrate.lint_streamed import LineMap, lint_view
from natlangchain_migrate.statements import line_and_column

SQUAWK_VARIABLE = "NATLANGCHAIN_MIGRATE_SQUAWK"
RULES_URL = "https://squawkhq.com/docs/rules"

# Rules that ask every file to set something the runner already sets for it.
RUNNER_SATISFIED = {
    "require-lock-timeout": "the runner sets lock_timeout for each migration "
    "(--pg-lock-timeout, default 5s, or the file's lock-timeout directive)",
    "require-statement-timeout": "statement_timeout is the runner's setting "
    "(--statement-timeout, or the file's statement-timeout directive)",
}


# What squawk is shown after a transactional file: the runner's ledger row, which commits
# with it. squawk takes a one-statement file for a standalone migration that a tool may
# run outside a transaction; ours never is (a lone CREATE INDEX CONCURRENTLY fails).
# The ';' ends a last statement left without one; lines and columns above are unchanged.
_LEDGER_ROW = "\n;\nSELECT 1; -- natlangchain-migrate: the ledger row\n"


class Finding(NamedTuple):
    """One problem squawk found, placed as an editor counts: lines and columns from 1."""

    file: str
    line: int
    column: int
    end_line: int
    end_column: int
    rule: str
    level: str
    message: str
    help: str | None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column} {self.rule} {self.message}"


def locate_squawk(environ: Mapping[str, str] = os.environ, scripts_dir: str | None = None) -> str:
    """squawk's path: the variable, else beside this Python's scripts, else on PATH."""
    override = environ.get(SQUAWK_VARIABLE)
    if override:
        if os.path.isfile(override) and os.access(override, os.X_OK):
            return override
        raise SquawkUnavailableError(
            f"{SQUAWK_VARIABLE}={override} is not an executable file; point it at squawk "
            "or unset it"
        )
    scripts = sysconfig.get_path("scripts") if scripts_dir is None else scripts_dir
    found = shutil.which("squawk", path=scripts)
    if found is None and environ.get("PATH"):
        found = shutil.which("squawk", path=environ["PATH"])
    if found is None:
        raise SquawkUnavailableError(
            "squawk is not installed: pip install 'natlangchain-migrate[lint]' (it brings "
            f"squawk-cli), or set {SQUAWK_VARIABLE} to squawk's path"
        )
    return found


def lint_migrations(
    migrations: Sequence[Migration], config: LintConfig, *, shown_dir: str, squawk: str
) -> list[Finding]:
    """squawk's findings in ``migrations`` with the expand/contract rules' verdicts, less
    excluded and ignored rules, in file order.

    One squawk process per kind of file (transactional, no-transaction), each for
    many files. ``shown_dir`` prefixes the file names in the findings. A streamed (big)
    file is read statement by statement for what is not data (lint_streamed.py).
    """
    _check_rule_names(squawk, migrations, config)
    line_maps: dict[str, LineMap] = {}
    viewed = []
    for migration in migrations:
        if migration.source is not None:
            migration, line_maps[migration.filename] = lint_view(migration)
        viewed.append(migration)
    migrations = viewed
    excluded = sorted({*RUNNER_SATISFIED, *config.exclude})
    reported: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="natlangchain-lint-") as scratch:
        folder = Path(scratch)
        for migration in migrations:
            text = _as_squawk_reads(migration)
            if not migration.directives.no_transaction:
                text += _LEDGER_ROW
            written = folder / migration.filename  # prisma's <folder>/migration.sql too
            written.parent.mkdir(parents=True, exist_ok=True)
            written.write_bytes(text.encode("utf-8"))
        for no_transaction in (False, True):
            group = [m for m in migrations if m.directives.no_transaction is no_transaction]
            if group:
                command = [
                    squawk,
                    "--reporter=json",
                    "--no-assume-in-transaction" if no_transaction else "--assume-in-transaction",
                    "--exclude=" + ",".join(excluded),
                    *([f"--pg-version={config.pg_version}"] if config.pg_version else []),
                    *(str(folder / m.filename) for m in group),
                ]
                reported.extend(_run_report(command, folder))
    by_name = {m.filename: m for m in migrations}
    order = {os.path.join(shown_dir, m.filename): at for at, m in enumerate(migrations)}
    from_squawk: dict[str, list[Finding]] = {m.filename: [] for m in migrations}
    for item in reported:
        migration = by_name[_reported_name(item["file"], folder, by_name)]
        from_squawk[migration.filename].append(_finding(item, migration, shown_dir))
    findings = []
    for migration in migrations:
        ignored = {ignore.rule for ignore in migration.directives.lint_ignores}
        ignored |= set(config.exclude)
        lines = line_maps.get(migration.filename)
        for finding in _with_release_rules(migration, from_squawk[migration.filename], shown_dir):
            if finding.rule in ignored:
                continue
            if lines is not None:
                line, end_line = lines.line(finding.line), lines.line(finding.end_line)
                finding = finding._replace(line=line, end_line=end_line)
            findings.append(finding)
    findings.sort(key=lambda f: (order[f.file], f.line, f.column, f.rule))
    return findings


def _reported_name(file: str, folder: Path, names: dict[str, Migration]) -> str:
    """The migration's filename for a path squawk reports: from the scratch folder, so
    that prisma's ``<folder>/migration.sql`` files stay apart."""
    path = Path(file)
    if path.is_absolute() and path.is_relative_to(folder):
        path = path.relative_to(folder)
    name = path.as_posix()
    return name if name in names else path.name


def _as_squawk_reads(migration: Migration) -> str:
    """The text squawk is given: a backfill's settings are checked as a run checks them,
    and its bounds ``:lo`` / ``:hi`` become ``$1`` / ``$2`` (squawk's parser knows those;
    padded to the same length, so findings keep their columns)."""
    if not migration.directives.backfill:
        return migration.sql
    from natlangchain_migrate.backfill import parse
    from natlangchain_migrate.backfill_batch import BOUND

    parse(migration)
    return BOUND.sub(lambda bound: "$1 " if bound[1] == "lo" else "$2 ", migration.sql)


def _with_release_rules(
    migration: Migration, squawks: list[Finding], shown_dir: str
) -> list[Finding]:
    """squawk's findings plus the expand/contract ones, one per statement and rule.

    For the rules lint_releases owns, its verdict on the statement wins: squawk's
    finding keeps its place and takes the release advice, or goes when the statement
    is fine in this file (a table the file creates; a drop in a contract part).
    """
    ours = release_findings(migration)
    # A file that does not parse gets squawk's syntax error and nothing of ours.
    owned = owned_rules(migration.filename) if ours is not None else frozenset()
    starts = _line_starts(migration.sql)
    unused = list(ours or ())
    kept = []
    for finding in squawks:
        if finding.rule not in owned:
            message = adapt_squawk_message(migration.filename, finding.rule, finding.message)
            if message is not None:
                kept.append(finding._replace(message=message))
            continue
        offset = starts[finding.line - 1] + finding.column - 1
        match = next(
            (
                o
                for o in unused
                if o.rule == finding.rule and o.start <= offset < max(o.end, 1 + o.start)
            ),
            None,
        )
        if match is not None:
            unused.remove(match)
            kept.append(finding._replace(message=match.message, help=RECIPES, level="warning"))
    for release in unused:
        line, column = line_and_column(migration.sql, release.start)
        end_line, end_column = line_and_column(migration.sql, release.end)
        kept.append(
            Finding(
                file=os.path.join(shown_dir, migration.filename),
                line=line,
                column=column,
                end_line=end_line,
                end_column=end_column,
                rule=release.rule,
                level="warning",
                message=release.message,
                help=RECIPES,
            )
        )
    return kept


def _line_starts(text: str) -> list[int]:
    """The character offset where each line of ``text`` starts."""
    starts = [0]
    for position, character in enumerate(text):
        if character == "\n":
            starts.append(position + 1)
    return starts


def _finding(item: dict[str, Any], migration: Migration, shown_dir: str) -> Finding:
    lines = migration.sql.split("\n")
    # Only a syntax error the file leaves open (a quote, a comment) lands in the ledger
    # row's lines: it belongs to the file's end.
    last = len(lines) - 1
    line = min(int(item["line"]), last)
    end_line = min(int(item.get("line_end", item["line"])), last)
    return Finding(
        file=os.path.join(shown_dir, migration.filename),
        line=line + 1,
        column=_char_column(lines, line, int(item["column"])),
        end_line=end_line + 1,
        end_column=_char_column(lines, end_line, int(item.get("column_end", item["column"]))),
        rule=str(item["rule_name"]),
        level=str(item.get("level", "Warning")).lower(),
        message=str(item["message"]),
        help=item.get("help"),
    )


def _char_column(lines: list[str], line: int, byte_column: int) -> int:
    """squawk's 0-based byte offset in a line as a 1-based character column."""
    text = lines[line] if 0 <= line < len(lines) else ""
    return len(text.encode("utf-8")[:byte_column].decode("utf-8", "ignore")) + 1


def _run_report(command: list[str], folder: Path) -> list[dict[str, Any]]:
    """squawk's JSON report; it exits 0 when clean and 1 when it found something."""
    try:
        # cwd: a .squawk.toml of wherever the user stands must not change the rules.
        result = subprocess.run(command, capture_output=True, text=True, cwd=folder, check=False)
    except OSError as error:
        raise SquawkUnavailableError(f"could not run squawk ({command[0]}): {error}") from error
    if result.returncode not in (0, 1):
        raise SquawkUnavailableError(
            f"squawk failed (exit {result.returncode}): {_first_line(result.stderr)}"
        )
    try:
        report = json.loads(result.stdout)
    except ValueError as error:
        raise SquawkUnavailableError(
            f"squawk printed no JSON report: {_first_line(result.stdout)}"
        ) from error
    if not isinstance(report, list):
        raise SquawkUnavailableError("squawk's JSON report is not a list of findings")
    return report


def _check_rule_names(squawk: str, migrations: Sequence[Migration], config: LintConfig) -> None:
    """Refuse a rule name squawk does not have, naming the key or file:line that gave it."""
    named: dict[str, str] = {}
    for rule in config.exclude:
        named.setdefault(rule, f"{config.source}: lint.exclude in [{TABLE}]")
    for migration in migrations:
        for ignore in migration.directives.lint_ignores:
            named.setdefault(ignore.rule, f"{migration.filename}:{ignore.line}: lint-ignore")
    if not named or _squawk_knows(squawk, list(named)):
        return
    for rule, where in named.items():
        if not _squawk_knows(squawk, [rule]):
            raise ConfigurationError(
                f"{where} names '{rule}', which is not a squawk rule; see {RULES_URL}"
            )


def _squawk_knows(squawk: str, rules: list[str]) -> bool:
    """squawk checks ``--exclude`` names itself: exit 0 on empty input, 2 for a bad name."""
    try:
        result = subprocess.run(
            [squawk, "--reporter=json", "--exclude=" + ",".join(rules)],
            input="",
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError as error:
        raise SquawkUnavailableError(f"could not run squawk ({squawk}): {error}") from error
    if result.returncode not in (0, 2):
        raise SquawkUnavailableError(
            f"squawk failed (exit {result.returncode}): {_first_line(result.stderr)}"
        )
    return result.returncode == 0


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "no output")
