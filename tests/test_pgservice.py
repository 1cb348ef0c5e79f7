"""libpq's connection service file: ``service=`` in a URL or key=value DSN, else PGSERVICE,
read from PGSERVICEFILE, ~/.pg_service.conf or PGSYSCONFDIR/pg_service.conf, with libpq's
precedence (the DSN over the service, the service over the PG* environment; psql is the
oracle), never the embedded server, every mistake a one-line exit 2 naming the file, and
the service's password in no output."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import pytest

from harness.servers.pgcluster import PASSWORD, embedded_bindir
from harness.servers.sql import execute
from natlangchain_migrate.connection import connect
from natlangchain_migrate.dsn import as_url, redact, scrub, with_database
from natlangchain_migrate.errors import ExitCode
from natlangchain_migrate.pgservice import ServiceFileError
from tests.conftest import log_events, run_cli, table_names, write_migrations

FILES = {"001_a.sql": "CREATE TABLE a (id int);\n"}


def service_lines(url: str, name: str = "prod", **changes: str) -> str:
    """A ``[name]`` section that names the same database as ``url`` (``changes`` replace or
    add settings; an empty value leaves the setting out)."""
    parts = urlsplit(url)
    settings = {
        "host": parts.hostname or "",
        "port": str(parts.port or 5432),
        "dbname": parts.path.lstrip("/"),
        "user": unquote(parts.username or ""),
        "password": unquote(parts.password or ""),
    } | changes
    return f"[{name}]\n" + "".join(f"{k}={v}\n" for k, v in settings.items() if v)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An empty home directory (no ~/.pg_service.conf, no ~/.pgpass)."""
    directory = tmp_path / "home"
    directory.mkdir()
    return directory


@pytest.fixture
def clean_env(home: Path, tmp_path: Path) -> dict[str, str]:
    """The CLI's environment: this home, an empty system directory, no PG* of ours."""
    sysconf = tmp_path / "sysconf"
    sysconf.mkdir(exist_ok=True)
    return {"HOME": str(home), "PGSYSCONFDIR": str(sysconf)}


@pytest.fixture
def other_database(admin_url: str) -> Iterator[str]:
    """A second empty database on the suite's server, to tell which one was reached."""
    name = f"svc_{uuid.uuid4().hex[:10]}"
    asyncio.run(execute(admin_url, f'CREATE DATABASE "{name}" TEMPLATE template0'))
    try:
        yield name
    finally:
        asyncio.run(execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def migrated(result: subprocess.CompletedProcess[str], url: str) -> bool:
    assert result.returncode == 0, result.stderr[-2000:]
    assert "embedded_server_ready" not in result.stderr
    return "a" in asyncio.run(table_names(url))


def connecting_source(result: subprocess.CompletedProcess[str]) -> str:
    (event,) = [e for e in log_events(result.stderr) if e["event"] == "connecting"]
    assert PASSWORD not in event["target"]
    return str(event["source"])


def no_password(result: subprocess.CompletedProcess[str], password: str = PASSWORD) -> None:
    output = result.stdout + result.stderr
    for spelling in {password, quote(password, safe=""), quote(password)}:
        assert spelling not in output


# The spellings that name a service, each with the source the `connecting` event gives.
SPELLINGS = [
    ("url", "DATABASE_URL, service prod ("),
    ("key=value", "--database-url or dsn=, service prod ("),
    ("PGSERVICE", "PG* environment, service prod ("),
]


@pytest.mark.parametrize(("spelling", "source"), SPELLINGS, ids=[s for s, _ in SPELLINGS])
def test_each_spelling_of_a_service_migrates_its_database(
    spelling: str, source: str, database_url: str, tmp_path: Path, clean_env: dict[str, str]
) -> None:
    servicefile = tmp_path / "services.conf"
    servicefile.write_text("# ours\n" + service_lines(database_url), encoding="utf-8")
    env = clean_env | {"PGSERVICEFILE": str(servicefile)}
    folder = str(write_migrations(tmp_path / "m", FILES))
    if spelling == "url":
        result = run_cli(
            "--migrations-dir", folder, database_url="postgresql://?service=prod", env=env
        )
    elif spelling == "key=value":
        args = ("--migrations-dir", folder, "--database-url", "service=prod")
        result = run_cli(*args, database_url=None, env=env)
    else:
        result = run_cli(
            "--migrations-dir", folder, database_url=None, env=env | {"PGSERVICE": "prod"}
        )
    assert migrated(result, database_url)
    assert connecting_source(result) == f"{source}{servicefile})"
    no_password(result)


def test_the_users_file_is_found_in_home_and_the_log_names_it_with_a_tilde(
    database_url: str, tmp_path: Path, home: Path, clean_env: dict[str, str]
) -> None:
    (home / ".pg_service.conf").write_text(service_lines(database_url), encoding="utf-8")
    folder = str(write_migrations(tmp_path / "m", FILES))
    result = run_cli(
        "--migrations-dir", folder, database_url=None, env=clean_env | {"PGSERVICE": "prod"}
    )
    assert migrated(result, database_url)
    assert connecting_source(result) == "PG* environment, service prod (~/.pg_service.conf)"


def test_the_system_file_in_pgsysconfdir_serves_what_the_users_file_lacks(
    database_url: str, tmp_path: Path, home: Path, clean_env: dict[str, str]
) -> None:
    (home / ".pg_service.conf").write_text("[other]\nhost=elsewhere\n", encoding="utf-8")
    system = Path(clean_env["PGSYSCONFDIR"]) / "pg_service.conf"
    system.write_text(service_lines(database_url), encoding="utf-8")
    folder = str(write_migrations(tmp_path / "m", FILES))
    result = run_cli(
        "--migrations-dir", folder, database_url=None, env=clean_env | {"PGSERVICE": "prod"}
    )
    assert migrated(result, database_url)
    assert connecting_source(result) == f"PG* environment, service prod ({system})"


def test_the_users_file_wins_over_the_system_file(
    database_url: str, tmp_path: Path, home: Path, clean_env: dict[str, str]
) -> None:
    (home / ".pg_service.conf").write_text(service_lines(database_url), encoding="utf-8")
    system = Path(clean_env["PGSYSCONFDIR"]) / "pg_service.conf"
    system.write_text(service_lines(database_url, port="1"), encoding="utf-8")
    folder = str(write_migrations(tmp_path / "m", FILES))
    result = run_cli(
        "--migrations-dir", folder, database_url=None, env=clean_env | {"PGSERVICE": "prod"}
    )
    assert migrated(result, database_url)


def test_servicefile_in_the_dsn_names_the_file(
    database_url: str, tmp_path: Path, clean_env: dict[str, str]
) -> None:
    servicefile = tmp_path / "named.conf"
    servicefile.write_text(service_lines(database_url), encoding="utf-8")
    folder = str(write_migrations(tmp_path / "m", FILES))
    dsn = f"service=prod servicefile={servicefile}"
    result = run_cli(
        "--migrations-dir", folder, "--database-url", dsn, database_url=None, env=clean_env
    )
    assert migrated(result, database_url)


def test_values_in_the_dsn_win_over_the_services(
    database_url: str, other_database: str, tmp_path: Path, clean_env: dict[str, str]
) -> None:
    """The service names one database; the URL's path and the key=value dbname= another:
    theirs is migrated, with the service's host, port, user and password."""
    servicefile = tmp_path / "services.conf"
    servicefile.write_text(service_lines(database_url), encoding="utf-8")
    env = clean_env | {"PGSERVICEFILE": str(servicefile)}
    other_url = with_database(database_url, other_database)
    folder = str(write_migrations(tmp_path / "m", FILES))
    by_url = run_cli(
        "--migrations-dir",
        folder,
        database_url=f"postgresql:///{other_database}?service=prod",
        env=env,
    )
    assert migrated(by_url, other_url)
    assert "a" not in asyncio.run(table_names(database_url))
    by_pairs = f"dbname={other_database} service=prod"
    result = run_cli(
        "--migrations-dir",
        folder,
        "--check",
        "--database-url",
        by_pairs,
        database_url=None,
        env=env,
    )
    assert result.returncode == 0, result.stderr


def test_the_service_wins_over_the_pg_environment(
    database_url: str, other_database: str, tmp_path: Path, clean_env: dict[str, str]
) -> None:
    """PGHOST, PGPORT, PGDATABASE, PGUSER and PGPASSWORD all point elsewhere: the
    service's settings are used, as libpq uses them."""
    servicefile = tmp_path / "services.conf"
    servicefile.write_text(service_lines(database_url), encoding="utf-8")
    wrong = {
        "PGHOST": "no-such-host.invalid",
        "PGPORT": "1",
        "PGDATABASE": other_database,
        "PGUSER": "nobody",
        "PGPASSWORD": "not-the-password",
    }
    env = clean_env | wrong | {"PGSERVICEFILE": str(servicefile), "PGSERVICE": "prod"}
    folder = str(write_migrations(tmp_path / "m", FILES))
    result = run_cli("--migrations-dir", folder, database_url=None, env=env)
    assert migrated(result, database_url)


def test_the_environment_fills_what_the_service_leaves_out(
    database_url: str, tmp_path: Path, clean_env: dict[str, str]
) -> None:
    servicefile = tmp_path / "services.conf"
    servicefile.write_text(service_lines(database_url, password=""), encoding="utf-8")
    password = unquote(urlsplit(database_url).password or "")
    env = clean_env | {
        "PGSERVICEFILE": str(servicefile),
        "PGSERVICE": "prod",
        "PGPASSWORD": password,
    }
    folder = str(write_migrations(tmp_path / "m", FILES))
    assert migrated(run_cli("--migrations-dir", folder, database_url=None, env=env), database_url)


# (the DSN, the environment beyond PGSERVICEFILE, the service's changes)
ORACLE_CASES = [
    ("service=prod", {}, {}),
    ("service=prod dbname={other}", {}, {}),
    ("", {"PGSERVICE": "prod", "PGDATABASE": "{other}"}, {}),
    ("", {"PGSERVICE": "prod"}, {"dbname": ""}),
    ("dbname={other}", {"PGSERVICE": "prod"}, {}),
    ("postgresql:///{other}?service=prod", {"PGDATABASE": "postgres"}, {}),
    ("postgresql://?service=prod", {"PGDATABASE": "{other}"}, {"dbname": ""}),
]


@pytest.mark.parametrize(("dsn", "environment", "changes"), ORACLE_CASES)
def test_the_database_reached_is_the_one_psql_reaches(
    dsn: str,
    environment: dict[str, str],
    changes: dict[str, str],
    database_url: str,
    other_database: str,
    tmp_path: Path,
    clean_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same DSN, service file and environment: psql (libpq) and we reach one database."""
    servicefile = tmp_path / "services.conf"
    text = service_lines(database_url, **changes)
    servicefile.write_text(text.replace("{other}", other_database), encoding="utf-8")
    env = clean_env | {"PGSERVICEFILE": str(servicefile)}
    env |= {k: v.replace("{other}", other_database) for k, v in environment.items()}
    if "dbname" in changes and "PGDATABASE" not in env:
        env["PGDATABASE"] = urlsplit(database_url).path.lstrip("/")
    dsn = dsn.replace("{other}", other_database)
    psql = subprocess.run(
        [str(embedded_bindir() / "psql"), "-XAtc", "SELECT current_database()", dsn],
        capture_output=True,
        text=True,
        env=env | {"PATH": "/usr/bin:/bin"},
        timeout=60,
        check=False,
    )
    assert psql.returncode == 0, psql.stderr
    for key in ("PGSERVICE", "PGSERVICEFILE", "PGDATABASE", "PGSYSCONFDIR", "HOME"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert asyncio.run(current_database(dsn or "postgresql://")) == psql.stdout.strip()


async def current_database(dsn: str) -> str:
    conn = await connect(dsn)
    try:
        return str(await conn.fetchval("SELECT current_database()"))
    finally:
        await conn.close()


def test_an_unknown_service_is_one_line_naming_the_files_never_the_embedded_server(
    tmp_path: Path, home: Path, clean_env: dict[str, str]
) -> None:
    (home / ".pg_service.conf").write_text("[other]\nhost=db\n", encoding="utf-8")
    folder = str(write_migrations(tmp_path / "m", FILES))
    result = run_cli(
        "--migrations-dir", folder, database_url=None, env=clean_env | {"PGSERVICE": "prdo"}
    )
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert "embedded_server_ready" not in result.stderr
    (failed,) = [e for e in log_events(result.stderr) if e["event"] == "run_failed"]
    assert failed["error"].startswith(
        "PGSERVICE names service 'prdo', which no service file defines"
    )
    assert "~/.pg_service.conf (no [prdo] section)" in failed["error"]
    assert f"{clean_env['PGSYSCONFDIR']}/pg_service.conf (no such file)" in failed["error"]


def test_a_service_file_that_does_not_exist_is_named(
    tmp_path: Path, clean_env: dict[str, str]
) -> None:
    missing = tmp_path / "nowhere.conf"
    env = clean_env | {"PGSERVICEFILE": str(missing)}
    folder = str(write_migrations(tmp_path / "m", FILES))
    result = run_cli("--migrations-dir", folder, database_url="postgresql://?service=prod", env=env)
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert "service= names service 'prod', which no service file defines" in result.stderr
    assert f"{missing} (no such file)" in result.stderr


# (a line of the [prod] section, what the error says after "file:LINE: in service [prod],")
BAD_LINES = [
    ("host db.example", "the line is not key=value"),
    ("host = db.example", "'host ' has a blank beside '='"),
    ("hots=db.example", "'hots' is not a libpq connection setting"),
    ("service=other", "libpq does not nest services"),
    ("hostaddr=127.0.0.1", "hostaddr= is a libpq setting this tool cannot honour"),
    ("require_auth=scram-sha-256", "require_auth= is a libpq setting this tool cannot honour"),
    ("gssencmode=require", "gssencmode= is a libpq setting this tool cannot honour"),
    (f"pass word={PASSWORD}", "'pass word' is not a libpq connection setting"),
    (PASSWORD, "the line is not key=value"),
]


@pytest.mark.parametrize(("line", "said"), BAD_LINES)
def test_a_line_libpq_would_not_read_is_refused_naming_file_and_line(
    line: str, said: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    servicefile = tmp_path / "services.conf"
    servicefile.write_text(
        f"# comment\n[prod]\nuser=app\npassword={PASSWORD}\n{line}\n", encoding="utf-8"
    )
    monkeypatch.setenv("PGSERVICEFILE", str(servicefile))
    with pytest.raises(ServiceFileError) as raised:
        as_url("service=prod")
    message = str(raised.value)
    assert message == f"{servicefile}:5: in service [prod], {message.split('], ', 1)[1]}"
    assert said in message
    assert PASSWORD not in message
    assert "\n" not in message


def test_lines_outside_the_service_and_what_libpq_leaves_out_are_not_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As libpq: other sections are not read, the first of two [prod] sections and the
    first of two equal keys win, blanks around a line go, connect_timeout is left out."""
    servicefile = tmp_path / "services.conf"
    servicefile.write_text(
        "[other]\nnot a setting\n  [prod]  \n  host=db.example  \nhost=second\nport=6543\n"
        "connect_timeout=5\ngssencmode=disable\n[prod]\nhost=third\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("PGSERVICEFILE", str(servicefile))
    assert as_url("service=prod user=app") == "postgresql://app@db.example:6543"


def test_the_services_settings_are_written_into_each_form_of_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    servicefile = tmp_path / "services.conf"
    servicefile.write_text(
        "[prod]\nhost=db.example\nport=6543\ndbname=app\nuser=alice\npassword=p@ss w/rd%\n"
        "sslmode=require\n[sock]\nhost=/run/postgresql\nport=5433\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("PGSERVICEFILE", str(servicefile))
    full = "postgresql://alice:p%40ss%20w%2Frd%25@db.example:6543/app?sslmode=require"
    assert as_url("postgresql://?service=prod") == full
    assert as_url("service=prod") == full
    assert as_url("postgresql://bob@h/x?service=prod&sslmode=disable") == (
        "postgresql://bob:p%40ss%20w%2Frd%25@h:6543/x?sslmode=disable"
    )
    assert as_url("postgresql://[::1]/db?service=prod").startswith(
        "postgresql://alice:p%40ss%20w%2Frd%25@[::1]:6543/db?"
    )
    assert as_url("service=sock dbname=d") == "postgresql:///d?host=%2Frun%2Fpostgresql&port=5433"
    assert as_url("postgresql://u@h/d") == "postgresql://u@h/d"  # no service: unchanged
    for dsn in ("service=prod", "postgresql://?service=prod"):
        for shown in (redact(as_url(dsn)), scrub(f"near p@ss w/rd% in {full}", dsn)):
            assert "p@ss" not in shown
            assert "p%40ss" not in shown
    monkeypatch.setenv("PGSERVICE", "prod")
    assert "p@ss w/rd%" not in scrub("it said p@ss w/rd%", None)  # PGSERVICE's, no DSN


def test_a_service_password_is_never_printed_when_the_server_refuses_or_is_away(
    database_url: str, tmp_path: Path, clean_env: dict[str, str]
) -> None:
    wrong = "Wr0ng-service-Secret"
    servicefile = tmp_path / "services.conf"
    servicefile.write_text(
        service_lines(database_url, name="refused", password=wrong)
        + service_lines(database_url, name="away", port="1"),
        encoding="utf-8",
    )
    env = clean_env | {"PGSERVICEFILE": str(servicefile)}
    folder = str(write_migrations(tmp_path / "m", FILES))
    refused = run_cli(
        "--migrations-dir",
        folder,
        "--traceback",
        database_url=None,
        env=env | {"PGSERVICE": "refused"},
    )
    assert refused.returncode == ExitCode.CONNECTION_REJECTED, refused.stderr
    no_password(refused, wrong)
    no_password(refused)
    away = run_cli(
        "--migrations-dir",
        folder,
        "--traceback",
        database_url="postgresql://?service=away",
        env=env,
    )
    assert away.returncode == ExitCode.UNREACHABLE, away.stderr
    (failed,) = [e for e in log_events(away.stderr) if e["event"] == "run_failed"]
    assert f"from service away ({servicefile})" in failed["error"]
    no_password(away)


def test_a_fleet_targets_file_takes_service_lines(
    database_url: str, other_database: str, tmp_path: Path, clean_env: dict[str, str]
) -> None:
    servicefile = tmp_path / "services.conf"
    servicefile.write_text(service_lines(database_url), encoding="utf-8")
    targets = tmp_path / "targets.txt"
    targets.write_text(f"service=prod\nservice=prod dbname={other_database}\n", encoding="utf-8")
    env = clean_env | {"PGSERVICEFILE": str(servicefile)}
    folder = str(write_migrations(tmp_path / "m", FILES))
    args = ("fleet", "--migrations-dir", folder, "--targets", str(targets), "--json")
    result = run_cli(*args, database_url=None, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["databases"] == 2
    assert report["counts"]["applied"] == 2
    assert "a" in asyncio.run(table_names(database_url))
    assert "a" in asyncio.run(table_names(with_database(database_url, other_database)))
    no_password(result)


def test_a_fleet_targets_line_naming_an_unknown_service_is_refused_naming_the_line(
    tmp_path: Path, clean_env: dict[str, str]
) -> None:
    servicefile = tmp_path / "services.conf"
    servicefile.write_text("[prod]\nhost=db\n", encoding="utf-8")
    targets = tmp_path / "targets.txt"
    targets.write_text("service=prod\n# next\nservice=staging\n", encoding="utf-8")
    env = clean_env | {"PGSERVICEFILE": str(servicefile)}
    folder = str(write_migrations(tmp_path / "m", FILES))
    result = run_cli(
        "fleet", "--migrations-dir", folder, "--targets", str(targets), database_url=None, env=env
    )
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert f"{targets}:3: service= names service 'staging'" in result.stderr


COMMANDS = [
    ("--status",),
    ("dump-schema", "-"),
    ("verify",),
    ("contract", "--dry-run"),
    ("baseline", "1"),
]


@pytest.mark.parametrize("command", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_every_command_reaches_the_server_pgservice_names(
    command: tuple[str, ...], database_url: str, tmp_path: Path, clean_env: dict[str, str]
) -> None:
    """PGSERVICE alone, with no DATABASE_URL: each command works on that server (verify's
    scratch database too), never the embedded one, and prints no password."""
    servicefile = tmp_path / "services.conf"
    servicefile.write_text(service_lines(database_url), encoding="utf-8")
    env = clean_env | {"PGSERVICEFILE": str(servicefile), "PGSERVICE": "prod"}
    folder = write_migrations(tmp_path / "m", FILES | {"001_a.down.sql": "DROP TABLE a;\n"})
    folder_flag = () if command[0] == "dump-schema" else ("--migrations-dir", str(folder))
    result = run_cli(*command, *folder_flag, database_url=None, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "embedded_server_ready" not in result.stderr
    sources = [e["source"] for e in log_events(result.stderr) if e["event"] == "connecting"]
    assert sources or command[0] == "dump-schema"  # which logs no connecting event
    assert all(s.endswith(f"service prod ({servicefile})") for s in sources), sources
    no_password(result)


def test_a_password_with_every_awkward_character_reaches_the_server(
    admin_url: str, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service file's value is the password as written: no quoting, no
    percent-encoding; '@ : / ? # % & = + and a blank all reach the server intact."""
    role = f"svc_{uuid.uuid4().hex[:8]}"
    password = "p@ss:w/rd?#%25&x=1+ 'q'"
    literal = password.replace("'", "''")
    asyncio.run(execute(admin_url, f"CREATE ROLE {role} LOGIN PASSWORD '{literal}'"))
    try:
        servicefile = tmp_path / "services.conf"
        servicefile.write_text(
            service_lines(database_url, user=role, password=password), encoding="utf-8"
        )
        monkeypatch.setenv("PGSERVICEFILE", str(servicefile))
        for dsn in ("service=prod", "postgresql://?service=prod"):
            assert asyncio.run(current_user(dsn)) == role
            assert password not in redact(as_url(dsn))
    finally:
        asyncio.run(execute(admin_url, f"DROP ROLE {role}"))


async def current_user(dsn: str) -> str:
    conn = await connect(dsn)
    try:
        return str(await conn.fetchval("SELECT current_user"))
    finally:
        await conn.close()


@pytest.mark.parametrize("kind", ["directory", "not UTF-8"])
def test_a_service_file_that_cannot_be_read_is_named(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    servicefile = tmp_path / "services.conf"
    if kind == "directory":
        servicefile.mkdir()
    else:
        servicefile.write_bytes(b"[prod]\npassword=\xff\xfe\n")
    monkeypatch.setenv("PGSERVICEFILE", str(servicefile))
    with pytest.raises(ServiceFileError, match=f"^service file {servicefile}: cannot read it"):
        as_url("service=prod")
