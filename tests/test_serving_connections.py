"""Connection limits and read timeouts in a real ``recsys serve`` process (loopback only).

A flood of slow connections (slowloris: headers that never end) must not lock real clients
out: with as many open as the file-descriptor limit allows (target 20,000), ``/healthz``
still answers within a second. A connection slower than ``--header-timeout`` is closed;
a body slower than ``--body-timeout`` gets a JSON 408; past ``--max-connections`` the
connection that has waited longest for its request makes room for the newcomer.

Each test bounds its connection count and time; every socket is opened to 127.0.0.1 and
closed before the test ends.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.connections import RESERVED_FDS, raise_fd_limit
from tests.serving_fixtures import APP_KEY, ROOT, free_port, keyed_env, rules_data, write_bundle

pytestmark = pytest.mark.slow

TARGET_CONNECTIONS = 20_000
CLIENT_RESERVE_FDS = 200
"""Descriptors the test process keeps for itself (pytest, the log, the probes)."""
OPEN_BATCH = 500
SLOW_REQUEST = b"GET /v1/model HTTP/1.1\r\nHost: loopback\r\nX-Slow: "
"""Headers that never end: each slow connection sends this, then a byte now and then."""


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bundle(rules_data(seed=0), tmp_path_factory.mktemp("connections") / "bundle")


class Serve:
    """``recsys serve`` (the real command, its protocol and limits) in a subprocess."""

    def __init__(self, bundle: Path, home: Path, *options: str) -> None:
        self.port = free_port()
        self.base = ("127.0.0.1", self.port)
        self.log = home.parent / f"serve-{self.port}.log"
        env = {**os.environ, **keyed_env({"PYTHONUNBUFFERED": "1", "MLFLOW_DISABLE_TELEMETRY": "true"})}
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-c", "from training.cli import main; main()", "serve", "--model-dir", str(bundle),
                 "--home", str(home), "--port", str(self.port), "--log-level", "warning", *options],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 90.0) -> Serve:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                status, _, _ = asyncio.run(request(self.base, b"GET /readyz HTTP/1.1\r\nHost: t\r\n\r\n", 2.0))
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(self.log.read_text())

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


@pytest.fixture
def serve(bundle: Path, tmp_path: Path) -> Iterator:
    started: list[Serve] = []

    def start(*options: str) -> Serve:
        server = Serve(bundle, tmp_path / f"home-{len(started)}", *options)
        started.append(server)
        return server.wait_ready()

    yield start
    for server in started:
        server.stop()


async def request(address: tuple[str, int], raw: bytes, timeout: float) -> tuple[int, bytes, float]:
    """Send one raw request on a fresh connection: (status, body, seconds to the whole answer)."""
    started = time.perf_counter()
    reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), timeout)
    try:
        writer.write(raw)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        body = await asyncio.wait_for(reader.readexactly(length), timeout)
        return int(head.split(b" ")[1]), body, time.perf_counter() - started
    finally:
        writer.close()


async def open_slow(address: tuple[str, int], count: int,
                    batch_size: int = OPEN_BATCH) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """``count`` connections that each sent the start of a request that never ends (in batches:
    the listen backlog is finite, and a refused SYN would only be retried later)."""
    connections = []
    for start in range(0, count, batch_size):
        batch = await asyncio.gather(*(asyncio.open_connection(*address)
                                       for _ in range(min(batch_size, count - start))))
        for _, writer in batch:
            writer.write(SLOW_REQUEST)
        connections.extend(batch)
    return connections


def still_open(connections: list) -> int:
    return sum(not reader.at_eof() and not writer.is_closing() for reader, writer in connections)


async def close_all(connections: list) -> None:
    for _, writer in connections:
        writer.close()
    await asyncio.sleep(0)


HEALTH = b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"


@pytest.mark.timeout(420)
def test_healthz_answers_within_a_second_under_a_flood_of_slow_connections(serve) -> None:
    fds = raise_fd_limit()  # the server, started after this, inherits the raised limit
    count = min(TARGET_CONNECTIONS, fds - CLIENT_RESERVE_FDS, fds - RESERVED_FDS - 64)
    assert count >= 1000, f"file-descriptor limit {fds} is too low for this test"
    server = serve("--max-connections", str(TARGET_CONNECTIONS), "--header-timeout", "300")
    rss_before = server.rss_mb()

    async def flood() -> dict:
        started = time.perf_counter()
        slow = await open_slow(server.base, count)
        opened = time.perf_counter() - started
        await asyncio.sleep(1.0)  # every connection accepted and parked by the server
        latencies = []
        for round_ in range(3):
            for _ in range(5):
                status, body, seconds = await request(server.base, HEALTH, timeout=5)
                assert status == 200 and json.loads(body) == {"status": "ok"}
                latencies.append(seconds)
            for _, writer in slow:  # the flood trickles on: a byte on every slow connection
                writer.write(b"x")
            await asyncio.sleep(0.5 if round_ < 2 else 0)
        figures = {"connections": count, "open_seconds": round(opened, 1), "still_open": still_open(slow),
                   "healthz_max_ms": round(max(latencies) * 1000, 1),
                   "healthz_median_ms": round(sorted(latencies)[len(latencies) // 2] * 1000, 1),
                   "server_rss_mb": round(server.rss_mb(), 1), "server_rss_before_mb": round(rss_before, 1)}
        await close_all(slow)
        return figures

    figures = asyncio.run(flood())
    sys.stdout.write(f"\nslow-connection flood: {json.dumps(figures)}\n")
    assert figures["still_open"] == count  # the server held them all, and still answered
    assert figures["healthz_max_ms"] < 1000
    status, _, _ = asyncio.run(request(server.base, HEALTH, timeout=5))
    assert status == 200 and server.process.poll() is None


@pytest.mark.timeout(120)
def test_slow_headers_and_slow_bodies_are_cut_off(serve) -> None:
    server = serve("--header-timeout", "1", "--body-timeout", "1")

    async def scenario() -> tuple[int, float, bytes]:
        slow = await open_slow(server.base, 20)
        started = time.perf_counter()
        for reader, _ in slow:  # the server closes each after the header timeout
            assert await asyncio.wait_for(reader.read(), 10) == b""
        closed_after = time.perf_counter() - started
        reader, writer = await asyncio.open_connection(*server.base)
        # a body announced and never sent past its first byte
        writer.write(b"POST /v1/interactions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                     b"X-API-Key: " + APP_KEY.encode() + b"\r\nContent-Length: 1000\r\n\r\n[")
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        return len(slow), closed_after, answer

    count, closed_after, answer = asyncio.run(scenario())
    assert count == 20 and 0.5 < closed_after < 5
    assert answer.startswith(b"HTTP/1.1 408 ") and b'"detail"' in answer
    status, _, _ = asyncio.run(request(server.base, HEALTH, timeout=5))
    assert status == 200


@pytest.mark.timeout(120)
def test_past_the_connection_cap_the_longest_waiting_connection_makes_room(serve) -> None:
    server = serve("--max-connections", "40", "--header-timeout", "60")

    async def scenario() -> tuple[list[bool], list[bool], float]:
        async def one_by_one(count: int) -> list:
            opened = []
            for _ in range(count):  # one at a time, so the server parks them in this order
                opened += await open_slow(server.base, 1)
                await asyncio.sleep(0.02)
            return opened

        first = await one_by_one(40)  # the cap, reached
        later = await one_by_one(10)  # each closes the oldest parked connection to get in
        await asyncio.sleep(0.3)
        status, _, seconds = await request(server.base, HEALTH, timeout=5)  # and so does the probe
        assert status == 200
        await asyncio.sleep(0.5)
        gone = [reader.at_eof() for reader, _ in first]
        open_later = [not reader.at_eof() for reader, _ in later]
        await close_all(first + later)
        return gone, open_later, seconds

    gone, open_later, seconds = asyncio.run(scenario())
    assert gone == [True] * 11 + [False] * 29  # the eleven that waited longest, in order
    assert all(open_later) and seconds < 1.0
    assert "closed to make room" in server.log.read_text()  # and said so (once, not once per connection)
