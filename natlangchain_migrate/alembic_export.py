"""alembic's revisions as this runner's files, exported with alembic's own offline mode.

alembic keeps a revision graph of Python files and records its head in
``alembic_version``; this runner needs SQL files in an order. For each revision, from the
first to the head, alembic writes the SQL of that one step (``alembic upgrade PREV:REV
--sql``) and of its undo (``alembic downgrade REV:PREV --sql``); we keep the statements and
drop alembic's own (``BEGIN``/``COMMIT``, which would end our transaction early, and every
statement on ``alembic_version``, which stays alembic's). The files are named
``NNN_<revision>_<message>.sql`` and ``.down.sql``: the revision in the name is how
``adopt --from alembic`` finds the head's file (adopt.py).

It runs the project's env.py in offline mode: this needs the project's environment (its
models and alembic installed), not a database. A branched graph (several heads, or a
merge revision) has no single order and is refused before anything is written.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

from natlangchain_migrate.errors import ConfigurationError

_SLUG = re.compile(r"[^a-z0-9]+")
_REVISION = re.compile(r"^[A-Za-z0-9]+$")


def export_alembic(
    ini: Path, directory: Path, *, version_table: str = "alembic_version"
) -> list[Path]:
    """Write one up and one down file per revision of the project at ``ini`` into
    ``directory``; returns the files written. Existing files are never overwritten."""
    try:
        from alembic.util import CommandError
    except ImportError:
        raise ConfigurationError(
            "--export-from needs alembic in this environment (the project's, where env.py "
            "imports its models): pip install alembic"
        ) from None
    if not ini.is_file():
        raise ConfigurationError(f"--export-from {ini}: no such file; name the alembic.ini")
    try:
        return _export(ini, directory, version_table)
    except CommandError as error:
        raise ConfigurationError(f"alembic: {error}; fix the alembic project") from None


def _export(ini: Path, directory: Path, version_table: str) -> list[Path]:
    from alembic import command
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config(str(ini))
    if not config.get_main_option("sqlalchemy.url"):  # offline mode needs only the dialect
        config.set_main_option("sqlalchemy.url", "postgresql://")
    script = ScriptDirectory.from_config(config)
    revisions = _in_order(script)
    directory.mkdir(parents=True, exist_ok=True)
    width = max(3, len(str(len(revisions))))
    planned = []
    for number, revision in enumerate(revisions, start=1):
        slug = _SLUG.sub("_", (revision.doc or "").lower()).strip("_")[:60] or "revision"
        stem = f"{number:0{width}d}_{revision.revision}_{slug}"
        planned.append((revision, directory / f"{stem}.sql", directory / f"{stem}.down.sql"))
    taken = [path for _, up, down in planned for path in (up, down) if path.exists()]
    if taken:
        raise ConfigurationError(
            f"{taken[0]} already exists; export into an empty folder (nothing was written)"
        )
    written: list[Path] = []
    for revision, up, down in planned:
        before = revision.down_revision or "base"
        step = revision.revision if before == "base" else f"{before}:{revision.revision}"
        # One line: a message's own line break would end the comment, and its next line
        # would run as SQL.
        message = " ".join((revision.doc or "").split()) or "no message"
        header = f"-- alembic revision {revision.revision} ({message})\n"
        up.write_text(header + _offline(command.upgrade, config, step, version_table))
        back = _offline(command.downgrade, config, f"{revision.revision}:{before}", version_table)
        down.write_text(f"-- undoes alembic revision {revision.revision}\n" + back)
        written += [up, down]
    return written


def _in_order(script: Any) -> list[Any]:
    """The revisions from the first to the single head; a branched graph is refused."""
    heads = script.get_heads()
    if len(heads) > 1:
        raise ConfigurationError(
            f"the alembic history has {len(heads)} heads ({', '.join(heads)}); merge them "
            "(alembic merge heads) so it has one order, then export"
        )
    revisions = list(reversed(list(script.walk_revisions("base", "heads"))))
    for revision in revisions:
        if isinstance(revision.down_revision, tuple | list):
            raise ConfigurationError(
                f"alembic revision {revision.revision} merges {', '.join(revision.down_revision)}"
                "; a branched history has no single order here: export from a linear one"
            )
        if not _REVISION.match(revision.revision):
            raise ConfigurationError(
                f"alembic revision id {revision.revision!r} is not letters and digits; the "
                "file name carries it between underscores: use alembic's generated ids"
            )
    return revisions


def _offline(step: Any, config: Any, target: str, version_table: str) -> str:
    """One step's SQL as alembic writes it offline, without alembic's own statements."""
    import pglast.parser

    buffer = io.StringIO()
    config.output_buffer = buffer
    step(config, target, sql=True)
    kept = []
    for statement in pglast.parser.split(buffer.getvalue(), with_parser=True):
        tree = pglast.parser.parse_sql_json(statement)
        if '"TransactionStmt"' in tree or f'"relname":"{version_table}"' in tree:
            continue
        kept.append(statement.strip() + ";\n")
    return "\n".join(kept)
