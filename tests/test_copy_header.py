"""A COPY data section's header: pg_dump's form is read without pglast, and reads as
pglast reads it; every other form goes to pglast, which refuses what a data section
cannot run (a WHERE clause, a query, an option copy_to_table lacks), naming file:line."""

from __future__ import annotations

import subprocess
import sys

import pglast.keywords
import pytest

from natlangchain_migrate import copy_header
from natlangchain_migrate.copy_header import copy_arguments
from natlangchain_migrate.errors import ConfigurationError

# pg_dump's forms and their neighbours: read without a parse tree, as pglast reads them.
PLAIN = [
    "COPY public.seed (id, name, body) FROM stdin;",
    "COPY seed FROM stdin;",
    "copy Seed(Id,Name) from STDIN;",
    "COPY public.seed (id) FROM stdin",
    "--\n-- Data for Name: seed; Type: TABLE DATA; Schema: public; Owner: -\n--\n\n"
    "COPY public.seed (id, name) FROM stdin;",
    '\n\nCOPY "My Schema"."Seed ""quoted""" ("Id", "a,b", "naïve", "select") FROM stdin;',
    'COPY public."order" ("from", "user", plain_one, "Mixed") FROM stdin;',
    "COPY s . t ( a , b ) FROM stdin ;",
    "COPY x$1 (_a9, b$) FROM stdin;",
    'COPY "' + "n" * 63 + '" FROM stdin;',
    "COPY " + "n" * 63 + " FROM stdin;",
    "COPY text (int, time, name) FROM stdin;",  # unreserved and column-name keywords
]

# Forms only pglast reads (or refuses): the plain reading says None.
PARSED = [
    "COPY t (a) FROM stdin WITH (FORMAT csv, HEADER);",
    "COPY t FROM stdin (DELIMITER '|', NULL 'x');",
    "COPY /* c */ t FROM stdin;",
    "COPY t (a) FROM stdin WHERE a > 0;",
    "COPY (SELECT 1) FROM stdin;",
    'COPY "' + "n" * 64 + '" FROM stdin;',
    "COPY " + "n" * 64 + " FROM stdin;",
    "COPY ÉTÉ FROM stdin;",
    "COPY t (select) FROM stdin;",
    "COPY user FROM stdin;",
    "COPY t () FROM stdin;",
    'COPY "" FROM stdin;',
    "COPY t FROM stdin\u00a0;",
    "COPY a.b.c FROM stdin;",
    "COPY BINARY t FROM stdin;",
]


@pytest.mark.parametrize("statement", PLAIN)
def test_pg_dumps_form_reads_as_pglast_reads_it(statement: str) -> None:
    plain = copy_header._plain(statement)
    assert plain is not None
    assert plain == copy_header._parsed(statement, "f.sql:1")
    assert copy_arguments(statement, "f.sql:1") == plain


@pytest.mark.parametrize("statement", PARSED)
def test_any_other_form_is_left_to_pglast(statement: str) -> None:
    assert copy_header._plain(statement) is None


def test_options_are_read_by_pglast() -> None:
    assert copy_arguments("COPY t (a) FROM stdin WITH (FORMAT csv, HEADER, NULL 'x');", "") == {
        "table_name": "t",
        "columns": ["a"],
        "format": "csv",
        "header": True,
        "null": "x",
    }


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ("COPY t (a) FROM stdin WHERE a > 0;", "f.sql:7: a COPY data section loads a table"),
        # COPY (query) only writes (TO): the parser refuses it with FROM.
        ("COPY (SELECT 1) FROM stdin;", "f.sql:7: this COPY ... FROM stdin does not parse"),
        ("COPY t FROM stdin (FREEZE, ON_ERROR ignore);", "f.sql:7: COPY option on_error"),
        ("COPY t (select) FROM stdin;", "f.sql:7: this COPY ... FROM stdin does not parse"),
        ("COPY t () FROM stdin;", "f.sql:7: this COPY ... FROM stdin does not parse"),
    ],
)
def test_what_a_data_section_cannot_run_is_refused_naming_its_line(
    statement: str, message: str
) -> None:
    with pytest.raises(ConfigurationError, match="^" + message.replace("(", r"\(")):
        copy_arguments(statement, "f.sql:7")


def test_the_keywords_kept_from_names_are_pglasts() -> None:
    expected = pglast.keywords.RESERVED_KEYWORDS | pglast.keywords.TYPE_FUNC_NAME_KEYWORDS
    assert expected == copy_header._NOT_NAMES


def test_pg_dumps_form_imports_no_pglast() -> None:
    code = (
        "import sys\n"
        "from natlangchain_migrate.copy_header import copy_arguments\n"
        "copy_arguments('COPY public.seed (id, name) FROM stdin;', 'f.sql:1')\n"
        "assert not [m for m in sys.modules if m.startswith('pglast')], 'pglast imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
