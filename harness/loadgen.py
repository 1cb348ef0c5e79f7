"""A closed-loop HTTP load generator over the replicas in rotation, as a load balancer sees it.

Many concurrent workers each send a request, wait for its answer, and send the next: 70%
reads of an item a write created, 15% inserts, 15% updates, to a replica picked at random
from those in rotation. HTTP/1.1 with keep-alive over asyncio streams (one small parser,
no client library: the generator shares two cores with the servers and PostgreSQL).

A replica leaves rotation before it is stopped and its in-flight requests finish first
(a load balancer's drain; Kubernetes removes a terminating pod from its Service). A request
fails when it gets no answer, a status other than 200, or a read whose item has no text.
A connection idle for 2 s is not reused (the servers keep them 30 s). One resend is made, as
HTTP clients do, only when a reused connection turns out to be closed before any byte of the
answer came back (uvicorn closes a connection after an unhandled error's 500), and counted.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field

_TIMEOUT_S = 10.0
# A kept-alive connection idle this long is not reused: well under the servers' keep-alive
# timeout (harness/rolling.py starts uvicorn with 30 s), as a load balancer's idle timeout
# sits under its backends'.
IDLE_LIMIT_S = 2.0


@dataclass
class Sample:
    """One request: when it started, how long it took, whether and why it failed."""

    phase: str
    started: float
    latency_s: float
    replica: str
    kind: str
    failure: str | None


@dataclass
class _Replica:
    name: str
    port: int
    # kept-alive connections: reader, writer, when last answered (time.monotonic())
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = field(
        default_factory=list
    )
    in_flight: int = 0
    quiet: asyncio.Event = field(default_factory=asyncio.Event)  # set when in_flight is 0


class _ClosedBeforeAnswerError(Exception):
    """A reused connection was closed by the server before any byte of the answer."""


class LoadGenerator:
    """Sends requests from ``concurrency`` workers until ``stop()``; keeps every sample."""

    def __init__(self, concurrency: int = 24, seed: int = 17) -> None:
        self.concurrency = concurrency
        self.phase = "start"
        self.samples: list[Sample] = []
        # requests sent again, by replica: a kept-alive connection closed before answering
        self.resent: Counter[str] = Counter()
        self._replicas: dict[str, _Replica] = {}
        self._ids: list[int] = []
        self._random = random.Random(seed)
        self._workers: list[asyncio.Task[None]] = []
        self._stopping = False
        self._changed = asyncio.Event()
        self._wanted = 0
        self._reached = asyncio.Event()

    def add(self, name: str, port: int) -> None:
        """Put a replica (ready: it answered /healthz) into rotation."""
        self._replicas[name] = _Replica(name, port)
        self._changed.set()

    async def drain(self, name: str) -> None:
        """Take a replica out of rotation and wait for its in-flight requests to finish."""
        replica = self._replicas.pop(name)
        if replica.in_flight:
            await replica.quiet.wait()
        for _, writer, _ in replica.idle:
            writer.close()
        replica.idle.clear()

    def start(self) -> None:
        self._workers = [asyncio.create_task(self._work()) for _ in range(self.concurrency)]

    async def stop(self) -> None:
        self._stopping = True
        self._changed.set()
        await asyncio.gather(*self._workers)
        for name in list(self._replicas):
            await self.drain(name)

    async def _work(self) -> None:
        while not self._stopping:
            if not self._replicas:
                self._changed.clear()
                await self._changed.wait()
                continue
            replica = self._random.choice(list(self._replicas.values()))
            method, path, body, kind = self._next_request()
            phase, started = self.phase, time.perf_counter()
            replica.in_flight += 1
            replica.quiet.clear()
            try:
                failure = await self._send(replica, method, path, body, kind)
            finally:
                replica.in_flight -= 1
                if not replica.in_flight:
                    replica.quiet.set()
            latency = time.perf_counter() - started
            self.samples.append(Sample(phase, started, latency, replica.name, kind, failure))
            if len(self.samples) >= self._wanted:
                self._reached.set()

    async def until(self, count: int) -> None:
        """Return once ``count`` requests have been answered (or have failed)."""
        self._wanted = count
        if len(self.samples) < count:
            self._reached.clear()
            await self._reached.wait()

    def _next_request(self) -> tuple[str, str, bytes | None, str]:
        draw = self._random.random()
        text = json.dumps({"text": f"item {self._random.randrange(10**9)}"}).encode()
        if not self._ids or draw < 0.15:
            return "POST", "/items", text, "insert"
        item = self._random.choice(self._ids)
        if draw < 0.30:
            return "PUT", f"/items/{item}", text, "update"
        return "GET", f"/items/{item}", None, "read"

    async def _send(
        self, replica: _Replica, method: str, path: str, body: bytes | None, kind: str
    ) -> str | None:
        """None when the request succeeded, else why it failed (one line)."""
        try:
            async with asyncio.timeout(_TIMEOUT_S):
                try:
                    status, answer = await self._exchange(replica, method, path, body, True)
                except _ClosedBeforeAnswerError:
                    self.resent[replica.name] += 1
                    status, answer = await self._exchange(replica, method, path, body, False)
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as error:
            return f"{type(error).__name__}: {error}"
        if status != 200:
            return f"HTTP {status}: {answer[:200].decode(errors='replace')}"
        try:
            document = json.loads(answer)
        except ValueError:
            return f"HTTP 200 with a body that is not JSON: {answer[:200]!r}"
        if kind == "insert":
            self._ids.append(int(document["id"]))
        elif kind == "read" and not (document.get("name") or document.get("title")):
            return f"read of {path} has no text: {document}"
        return None

    async def _exchange(
        self, replica: _Replica, method: str, path: str, body: bytes | None, reuse: bool
    ) -> tuple[int, bytes]:
        """One request and its answer on a kept-alive connection (or a new one)."""
        connection = self._kept_alive(replica) if reuse else None
        reused = connection is not None
        if connection is not None:
            reader, writer = connection
        else:
            reader, writer = await asyncio.open_connection("127.0.0.1", replica.port)
        try:
            head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            if body is not None:
                head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            writer.write(head.encode() + b"\r\n" + (body or b""))
            await writer.drain()
            try:
                header = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionResetError) as error:
                partial = getattr(error, "partial", b"")
                if reused and not partial:
                    raise _ClosedBeforeAnswerError from error
                raise
            status, length, close = _parse_head(header)
            answer = await reader.readexactly(length)
        except BaseException:
            writer.close()
            raise
        if close or self._stopping or replica.name not in self._replicas:
            writer.close()
        else:
            replica.idle.append((reader, writer, time.monotonic()))
        return status, answer

    @staticmethod
    def _kept_alive(
        replica: _Replica,
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """The most recently used idle connection; those idle too long are closed (the
        server may be closing them at this very moment)."""
        while replica.idle:
            reader, writer, since = replica.idle.pop()
            if time.monotonic() - since < IDLE_LIMIT_S:
                return reader, writer
            writer.close()
        return None


def _parse_head(header: bytes) -> tuple[int, int, bool]:
    """(status, Content-Length, whether the server closes the connection)."""
    lines = header.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    if "content-length" not in fields:
        raise ValueError(f"answer without Content-Length: {lines[0]}")
    return status, int(fields["content-length"]), fields.get("connection") == "close"


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile (``fraction`` in 0..1) of ``values``; 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]
