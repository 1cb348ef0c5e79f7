"""A real app server (uvicorn, gunicorn) started as a user would, for tests and benchmarks.

Several workers share one port and the kernel picks which one accepts a
connection, so "every worker answers" is seen by polling ``/healthz``, whose JSON
names the answering worker's pid, in bursts of concurrent requests until the
expected number of distinct pids has answered.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from harness.pgcluster import free_port

ROOT = Path(__file__).resolve().parent.parent
_BIN = Path(sys.executable).parent

# What each server logs once per worker it starts, with the worker's pid.
_WORKER_STARTED = {
    "uvicorn": re.compile(r"Started server process \[(\d+)\]"),
    "gunicorn": re.compile(r"Booting worker with pid: (\d+)"),
}


def server_command(
    server: str, app: str, workers: int, port: int, options: Sequence[str] = ()
) -> list[str]:
    """The command line a user types, with the venv's own server scripts."""
    if server == "uvicorn":
        return [
            str(_BIN / "uvicorn"), app, "--workers", str(workers),
            "--host", "127.0.0.1", "--port", str(port), *options,
        ]  # fmt: skip
    if server == "gunicorn":
        # No control socket: its default path (~/.gunicorn/gunicorn.ctl) is one per user,
        # shared by every gunicorn that runs at once.
        return [
            str(_BIN / "gunicorn"), "-w", str(workers), "-b", f"127.0.0.1:{port}",
            "--no-control-socket", *options, app,
        ]  # fmt: skip
    raise ValueError(f"unknown server {server!r}")


class ServerFailedError(Exception):
    """The server exited, or not every worker answered in time; carries its log."""


class AppServer:
    """One server process with its workers, its output in a file (a pipe could fill up)."""

    def __init__(
        self,
        server: str,
        app: str,
        *,
        workers: int,
        database_url: str,
        options: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        """``env``: variables beside DATABASE_URL, on top of this process's environment."""
        self.server = server
        self.workers = workers
        self.port = free_port()
        self.command = server_command(server, app, workers, self.port, options)
        self.env = {**os.environ, **(env or {}), "DATABASE_URL": database_url}
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (kept open until stop())
            "w+", prefix=f"{server}-", suffix=".log"
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self._final_log: str | None = None

    def start(self) -> AppServer:
        self.started_at = time.perf_counter()
        self.process = subprocess.Popen(
            self.command,
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so stop() reaches every worker
        )
        return self

    def wait_for_all_workers(self, deadline_s: float = 120.0) -> dict[int, dict[str, Any]]:
        """Poll /healthz until ``workers`` distinct pids have answered; each pid's JSON.

        Raises ServerFailedError when the server exits or the deadline passes first.
        """
        assert self.process is not None
        answers: dict[int, dict[str, Any]] = {}
        give_up = time.monotonic() + deadline_s
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            while len(answers) < self.workers:
                if self.process.poll() is not None:
                    raise ServerFailedError(
                        f"{self.server} exited {self.process.returncode}:\n{self._tail()}"
                    )
                if time.monotonic() > give_up:
                    raise ServerFailedError(
                        f"only {len(answers)} of {self.workers} workers answered /healthz:\n"
                        f"{self._tail()}"
                    )
                for answer in pool.map(self._healthz, range(self.workers)):
                    if answer is not None:
                        answers[int(answer["pid"])] = answer
                if len(answers) < self.workers:
                    time.sleep(0.02)
        return answers

    def _healthz(self, _: int) -> dict[str, Any] | None:
        url = f"http://127.0.0.1:{self.port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                if response.status != 200:
                    return None
                answer: dict[str, Any] = json.loads(response.read())
                return answer
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None  # not listening yet, or every worker still starting

    def log(self) -> str:
        """Everything the server and its workers printed so far."""
        if self._final_log is not None:
            return self._final_log
        self._log.flush()
        return Path(self._log.name).read_text(errors="replace")

    def _tail(self, lines: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def started_workers(self) -> set[int]:
        """The pids of the workers the server's own log says it started."""
        return {int(pid) for pid in _WORKER_STARTED[self.server].findall(self.log())}

    def stop(self) -> str:
        """SIGTERM the server (both shut their workers down gracefully on it); its log."""
        if self._final_log is not None:
            return self._final_log
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._final_log = self.log()
        self._log.close()
        return self._final_log

    def __enter__(self) -> AppServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def json_events(log: str) -> list[dict[str, Any]]:
    """Our structlog events in a server's log: the JSON object each stdlib record carries."""
    events = []
    for line in log.splitlines():
        start = line.find('{"')
        if start >= 0:
            try:
                events.append(json.loads(line[start:]))
            except json.JSONDecodeError:
                continue
    return events
