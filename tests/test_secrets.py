"""A password never appears in any output, whatever form the DSN takes: URL user-info
(plain or percent-encoded), a ``password=`` query parameter, libpq key=value strings
(plain or quoted), PGPASSWORD, a passfile; in log lines, errors, tracebacks and the
library's exceptions."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from harness.servers.pgcluster import PgCluster
from natlangchain_migrate import MigrateError, migrate
from natlangchain_migrate.dsn import as_url, parse_key_value, redact, scrub
from natlangchain_migrate.errors import ExitCode
from tests.conftest import run_cli

WRONG = "Wr0ng p@ss/w:rd'x"  # every character a URL or key=value string must escape


def _spellings(secret: str) -> list[str]:
    return [secret, quote(secret, safe=""), secret.replace("'", "\\'")]


def _forms(host: str, port: int, password: str) -> dict[str, tuple[str, dict[str, str]]]:
    """DSN form -> (DSN, extra environment)."""
    quoted = password.replace("\\", "\\\\").replace("'", "\\'")
    encoded = quote(password, safe="")
    return {
        "url-userinfo": (f"postgresql://postgres:{encoded}@{host}:{port}/postgres", {}),
        "url-query": (f"postgresql://postgres@{host}:{port}/postgres?password={encoded}", {}),
        "key-value": (
            f"host={host} port={port} dbname=postgres user=postgres password='{quoted}'",
            {},
        ),
        "pgpassword": (
            f"postgresql://postgres@{host}:{port}/postgres",
            {"PGPASSWORD": password},
        ),
    }


@pytest.fixture(scope="module")
def suite_port(pg_cluster: PgCluster | None) -> int:
    if pg_cluster is None:
        pytest.skip("needs the suite's own server (its password is known)")
    return pg_cluster.port


@pytest.mark.parametrize("form", ["url-userinfo", "url-query", "key-value", "pgpassword"])
@pytest.mark.parametrize(
    ("case", "exit_code"),
    [("wrong-password", ExitCode.CONNECTION_REJECTED), ("unreachable", ExitCode.UNREACHABLE)],
)
def test_no_output_carries_the_password(
    suite_port: int, form: str, case: str, exit_code: ExitCode
) -> None:
    port = suite_port if case == "wrong-password" else 1
    dsn, env = _forms("127.0.0.1", port, WRONG)[form]
    result = run_cli("--traceback", database_url=dsn, env=env)
    assert result.returncode == exit_code, result.stderr
    output = result.stdout + result.stderr
    assert "run_failed" in output
    for spelling in _spellings(WRONG):
        assert spelling not in output


def test_passfile_password_stays_out_of_output(suite_port: int, tmp_path: Path) -> None:
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:{suite_port}:*:postgres:{WRONG}\n")
    passfile.chmod(0o600)
    dsn = f"postgresql://postgres@127.0.0.1:{suite_port}/postgres"
    result = run_cli("--traceback", database_url=dsn, env={"PGPASSFILE": str(passfile)})
    assert result.returncode == ExitCode.CONNECTION_REJECTED, result.stderr
    assert WRONG not in result.stdout + result.stderr


@pytest.mark.parametrize("form", ["url-userinfo", "url-query", "key-value"])
def test_every_dsn_form_connects(pg_cluster: PgCluster | None, form: str, tmp_path: Path) -> None:
    """Accepting key=value strings: they are what many platforms hand out."""
    if pg_cluster is None:
        pytest.skip("needs the suite's own server")
    from harness.servers.pgcluster import PASSWORD

    dsn, env = _forms("127.0.0.1", pg_cluster.port, PASSWORD)[form]
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "001_t.sql").write_text("SELECT 1;\n")
    result = run_cli("--check", "--migrations-dir", str(folder), database_url=dsn, env=env)
    assert result.returncode in (ExitCode.OK, ExitCode.CHECK_PENDING), result.stderr
    assert PASSWORD not in result.stdout + result.stderr


@pytest.mark.anyio
@pytest.mark.parametrize("form", ["url-userinfo", "url-query", "key-value"])
async def test_library_exceptions_and_their_chain_do_not_carry_the_password(
    suite_port: int, form: str
) -> None:
    dsn, _ = _forms("127.0.0.1", suite_port, WRONG)[form]
    with pytest.raises(MigrateError) as raised:
        await migrate(dsn)
    chain: list[BaseException] = []
    error: BaseException | None = raised.value
    while error is not None:
        chain.append(error)
        error = error.__cause__ or error.__context__
    for link in chain:
        for spelling in _spellings(WRONG):
            assert spelling not in str(link)
            assert spelling not in repr(link.args)


_passwords = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), min_size=6
)


@given(password=_passwords)
def test_redact_hides_any_password_in_any_form(password: str) -> None:
    skeletons = [redact(dsn) for dsn, _ in _forms("db.example", 5432, "X").values()]
    # What redaction keeps on purpose (scheme, keys such as "password=", host, user) may
    # contain any short text: such a password cannot be told from the structure.
    assume(not any(password in skeleton for skeleton in skeletons))
    for dsn, env in _forms("db.example", 5432, password).values():
        if env:
            continue  # PGPASSWORD: the DSN has no password to redact
        shown = redact(dsn)
        for spelling in _spellings(password):
            assert spelling not in shown
        assert password not in scrub(f"error near {password!s} in {dsn}", dsn)


@given(password=_passwords)
def test_key_value_strings_become_the_same_url(password: str) -> None:
    dsn, _ = _forms("db.example", 5432, password)["key-value"]
    assert parse_key_value(dsn)["password"] == password
    url, _ = _forms("db.example", 5432, password)["url-userinfo"]
    assert as_url(dsn) == url


def test_an_unreadable_key_value_string_is_refused_without_echoing_it() -> None:
    result = run_cli("--check", database_url="host=x password=S3cr3tPW 'broken")
    assert result.returncode == ExitCode.USAGE
    assert "S3cr3tPW" not in result.stdout + result.stderr
    assert "neither a postgresql:// URL nor libpq key=value" in result.stderr


def test_an_unencoded_password_in_a_url_stays_out_of_output(suite_port: int) -> None:
    """Users paste passwords with @ : / into URLs unencoded; the URL then misparses, and
    the parser's message must not quote the fragments."""
    for password in (WRONG, "p@ss:w/rd%41", "Wr@ng:pw%", "a/b?c#d@e"):
        dsn = f"postgresql://postgres:{password}@127.0.0.1:{suite_port}/postgres"
        result = run_cli("--check", "--traceback", database_url=dsn)
        # A misparsed URL may name a host that does not resolve: any of these, never 0.
        assert result.returncode in (
            ExitCode.USAGE,
            ExitCode.CONNECTION_REJECTED,
            ExitCode.UNREACHABLE,
        )
        output = result.stdout + result.stderr
        assert "run_failed" in output
        for fragment in {password, *password.replace("@", "/").split("/")} - {""}:
            if len(fragment) >= 3:
                assert fragment not in output, fragment


@given(password=_passwords)
def test_redact_hides_an_unencoded_password(password: str) -> None:
    # What redaction keeps on purpose (scheme, user name) may contain any short text.
    assume(password not in "postgresql://app:")
    dsn = f"postgresql://app:{password}@db.example:5432/app"
    shown = redact(dsn)
    assert password not in shown
    assert shown.startswith("postgresql://app:")


@pytest.mark.parametrize("password", ["postgr", "ql://", "sql", "postgresql"])
def test_a_password_that_is_part_of_the_scheme_leaves_the_url_readable(password: str) -> None:
    shown = redact(f"postgresql://app:{password}@db.example:5432/app")
    assert shown == "postgresql://app:***@db.example:5432/app"


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("postgresql:///app", "postgresql:///app"),  # host, user from PGHOST, PGUSER
        ("postgres:///app?host=/run/pg&password=x", "postgres:///app?host=/run/pg&password=***"),
        ("postgresql://", "postgresql://"),
    ],
)
def test_a_url_without_a_host_is_shown_as_written(dsn: str, shown: str) -> None:
    """Before, ``postgresql:///app`` was logged as ``postgresql:/app`` (urlunsplit drops the
    empty authority), a URL that names another thing."""
    assert redact(dsn) == shown
