"""Several server processes on one home answer alike (``recsys serve --workers N``).

The pieces first, on files: the segment tail hands over exactly the complete new lines of
the other servers' segments (blanked, torn, rewritten and foreign files included), the peer
follower folds them into live state (only lines after ``data_end`` on a first look, never an
erased user's), and reload requests are acted on once, for the right source only.

Then the real thing: ``recsys serve --workers 2`` over a registry on disk. An interaction
posted to one worker shows in the other's answers within seconds, an admin reload on one
worker reaches both, and a worker killed with SIGKILL (and restarted by uvicorn) still knows
what was posted before.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.home import EngineHome
from recsys.settings import EngineSettings
from serving.config import ServingSettings
from serving.erasure import ErasedUsers
from serving.live import LiveInteractions
from serving.peers import PeerInteractions
from serving.reload_requests import ReloadRequests, source_key
from serving.segment_lines import parse_line
from serving.segment_tail import SegmentTail
from serving.segments import SegmentWriter
from serving.state import ServedModel
from tests.demo_store import prepare_mlflow_env
from tests.serving_fixtures import (
    KEY_HEADERS,
    ROOT,
    demo_data,
    free_port,
    keyed_env,
    register_version,
    write_bundle,
)
from training import registry

ADMIN_KEY = "workers-admin-key"
STARTED = dt.datetime(2026, 11, 20, 3, 0, tzinfo=dt.UTC)


def writer(directory: Path, pid: int, minute: int = 0) -> SegmentWriter:
    return SegmentWriter(directory, started=STARTED + dt.timedelta(minutes=minute), pid=pid)


def record(user: str, item: str, ts: str = "2026-11-20T10:00:00+00:00", action: str = "view") -> dict:
    return {"user_id": user, "item_id": item, "action": action, "ts": ts, "value": None}


def collect(tail: SegmentTail) -> list[dict]:
    lines: list[bytes] = []
    tail.read(lines.append)
    return [json.loads(line) for line in lines]


# ---- the segment tail -------------------------------------------------------------------
def test_tail_reads_only_complete_new_lines_of_the_other_servers(tmp_path):
    own, first, second = writer(tmp_path, 1), writer(tmp_path, 2, 1), writer(tmp_path, 3, 2)
    own.append([record("mine", "i1")])
    first.append([record("a", "i1"), record("a", "i2")])
    (tmp_path / "provider-drop.jsonl").write_text(json.dumps(record("tool", "i9")) + "\n")  # not a server's
    tail = SegmentTail(tmp_path, own.path)
    assert [(r["user_id"], r["item_id"]) for r in collect(tail)] == [("a", "i1"), ("a", "i2")]
    assert collect(tail) == []  # nothing new

    second.append([record("b", "i3")])
    with open(first.path, "ab") as fh:  # a line still being written
        fh.write(json.dumps(record("a", "i4")).encode()[:20])
    assert [(r["user_id"], r["item_id"]) for r in collect(tail)] == [("b", "i3")]
    with open(first.path, "ab") as fh:
        fh.write(json.dumps(record("a", "i4")).encode()[20:] + b"\n")
    assert [(r["user_id"], r["item_id"]) for r in collect(tail)] == [("a", "i4")]
    for w in (own, first, second):
        w.close()


def test_tail_skips_blanked_lines_and_survives_rewritten_files(tmp_path):
    other = writer(tmp_path, 2)
    other.append([record("erased", "i1"), record("kept", "i2"), record("erased", "i3")])
    # ingest blanks an erased user's lines in place: same length, spaces
    data = other.path.read_bytes()
    lines = data.split(b"\n")
    blanked = b"\n".join(b" " * len(line) if b'"erased"' in line else line for line in lines)
    assert len(blanked) == len(data)
    other.path.write_bytes(blanked)
    tail = SegmentTail(tmp_path, tmp_path / "own.jsonl")
    assert [r["user_id"] for r in collect(tail)] == ["kept"]

    # cut back and rewritten past our offset: the tail resynchronises at the next line
    size = other.path.stat().st_size
    with open(other.path, "r+b") as fh:
        fh.truncate(size - 10)
        fh.seek(0, os.SEEK_END)
        fh.write(b"y" * 15 + b"\n" + json.dumps(record("after", "i5")).encode() + b"\n" + b" " * 30)
    assert [r["user_id"] for r in collect(tail)] == ["after"]

    # replaced by another file (a new inode): followed from its end, nothing read twice
    replacement = tmp_path / "replacement"
    replacement.write_bytes(other.path.read_bytes() + b"\n" + json.dumps(record("old", "i6")).encode() + b"\n")
    os.replace(replacement, other.path)
    assert collect(tail) == []
    with open(other.path, "ab") as fh:
        fh.write(json.dumps(record("new", "i7")).encode() + b"\n")
    assert [r["user_id"] for r in collect(tail)] == ["new"]
    other.path.unlink()
    assert collect(tail) == [] and tail._cursors == {}


@settings(max_examples=60, deadline=None)
@given(writes=st.lists(st.tuples(st.integers(0, 3), st.binary(min_size=0, max_size=40)), min_size=1, max_size=25),
       looks=st.lists(st.booleans(), min_size=25, max_size=25))
def test_tail_hands_over_every_complete_line_once_in_order(tmp_path_factory, writes, looks):
    """Appends cut at arbitrary bytes, looked at between arbitrary appends: every complete
    non-blank line comes out exactly once, whole and in order."""
    directory = tmp_path_factory.mktemp("prop")
    path = directory / writer(directory, 7).path.name
    tail = SegmentTail(directory, directory / "own.jsonl")
    written = b""
    seen: list[bytes] = []
    for (newlines, body), look in zip(writes, looks, strict=False):
        chunk = body.replace(b"\n", b"") + b"\n" * newlines
        with open(path, "ab") as fh:
            fh.write(chunk)
        written += chunk
        if look:
            tail.read(seen.append)
    tail.read(seen.append)
    complete = written[: written.rfind(b"\n") + 1]
    assert seen == [line for line in complete.split(b"\n")[:-1] if line.strip()]


# ---- folding the others' posts into live state --------------------------------------------
def served_stub(data_end: str | None) -> SimpleNamespace:
    manifest = {"data_end": data_end} if data_end else {}
    stub = SimpleNamespace(bundle=SimpleNamespace(settings=EngineSettings()), manifest=manifest, version="1")
    stub.data_end = functools.partial(ServedModel.data_end, stub)  # the real reading of the manifest
    return stub


def test_first_look_replays_only_posts_after_data_end_and_never_erased_users(tmp_path):
    directory = tmp_path / "incoming"
    other = writer(directory, 2)
    other.append([record("old", "i1", ts="2026-10-31T10:00:00+00:00"),
                  record("new", "i2", ts="2026-11-02T10:00:00+00:00", action="reserve"),
                  record("gone", "i3", ts="2026-11-02T10:00:00+00:00")])
    erased = ErasedUsers(tmp_path / "tombstones.jsonl", refresh_seconds=0)
    live = LiveInteractions()
    erased.on_erased = live.forget
    served: list = [None]
    peers = PeerInteractions(SegmentTail(directory, directory / "own.jsonl"), live, erased, lambda: served[0])
    other.append([record("gone", "i4")])
    erased.erase("gone")
    stale = writer(directory, 3, 1)  # last written before data_end: not read on the first look
    stale.append([record("stale", "i1", ts="2026-11-02T10:00:00+00:00")])
    old_enough = dt.datetime(2026, 10, 30, tzinfo=dt.UTC).timestamp()
    os.utime(stale.path, (old_enough, old_enough))

    assert peers.poll().lines == 0 and not peers.caught_up  # no model yet: the lines wait
    served[0] = served_stub("2026-11-01 08:00:00+08:00")
    stats = peers.poll()
    assert (stats.lines, stats.applied, stats.trained, stats.erased) == (4, 1, 1, 2)
    assert live.of("new") == {"i2": EngineSettings().weight_of("reserve")}
    assert live.of("old") == {} and live.of("gone") == {} and live.of("stale") == {}

    other.append([record("old", "i5", ts="2020-01-01T00:00:00+00:00"), record("new", "i6")])
    stale.append([record("stale", "i2", ts="2020-01-01T00:00:00+00:00")])
    with open(other.path, "ab") as fh:
        fh.write(b'{"user_id": "x", "item_id": "i1", "action": "like", "ts": 1}\n')  # off contract
    stats = peers.poll()
    assert (stats.applied, stats.trained, stats.invalid) == (3, 0, 1)  # later posts count whatever their time
    assert set(live.of("old")) == {"i5"} and set(live.of("new")) == {"i2", "i6"} and set(live.of("stale")) == {"i2"}


def test_a_model_without_data_end_replays_nothing_but_follows_new_posts(tmp_path):
    other = writer(tmp_path, 2)
    other.append([record("u", "i1")])
    live = LiveInteractions()
    peers = PeerInteractions(SegmentTail(tmp_path, tmp_path / "own.jsonl"), live,
                             ErasedUsers(tmp_path / "none.jsonl"), lambda: served_stub(None))
    assert peers.poll().lines == 0 and live.of("u") == {}  # not even read
    other.append([record("u", "i2")])
    assert peers.poll().applied == 1 and set(live.of("u")) == {"i2"}


def test_parse_line_applies_the_contract():
    row, moment = parse_line(json.dumps(record("u", "i1", ts="2026-11-20T19:30:00+08:00")).encode(), "UTC")
    assert (row.user_id, row.item_id, row.action) == ("u", "i1", "view")
    assert moment == dt.datetime(2026, 11, 20, 11, 30, tzinfo=dt.UTC).timestamp()
    naive = parse_line(json.dumps(record("u", "i1", ts="2026-11-20T19:30:00")).encode(), "Asia/Shanghai")
    assert naive[1] == moment
    for bad in (b"not json", b"[1, 2]", b'{"user_id": "u"}', json.dumps(record("", "i1")).encode(),
                json.dumps(record("u", "i1", ts="yesterday")).encode(), b"\xff\xfe",
                json.dumps({**record("u", "i1"), "value": "NaN"}).encode()):
        assert parse_line(bad, "UTC") is None, bad


# ---- reload requests ----------------------------------------------------------------------
def test_reload_requests_are_acted_on_once_and_only_for_the_same_source(tmp_path):
    path = tmp_path / "serving" / "reload_request.json"
    publisher = ReloadRequests(path, "registry:m@champion")
    follower = ReloadRequests(path, "registry:m@champion", since=time.time() - 1)
    other_alias = ReloadRequests(path, "registry:m@challenger", since=time.time() - 1)
    late_starter = ReloadRequests(path, "registry:m@champion", since=time.time() + 3600)
    assert follower.pending() is None  # no request yet

    published = publisher.publish("7")
    assert publisher.pending() is None  # the publisher did it already
    assert other_alias.pending() is None and late_starter.pending() is None
    pending = follower.pending()
    assert pending is not None and (pending.id, pending.version, pending.pid) == (published.id, "7", os.getpid())
    assert math.isclose(pending.requested_at, published.requested_at, abs_tol=1e-3)
    assert follower.pending() is not None  # still pending until handled
    follower.handled(pending)
    assert follower.pending() is None and follower.pending() is None

    second = publisher.publish("8")
    assert follower.pending().id == second.id
    assert [p.name for p in path.parent.iterdir()] == ["reload_request.json"]  # no scratch files left
    path.write_text("{torn")
    assert ReloadRequests(path, "registry:m@champion", since=0).pending() is None


def test_source_key_names_what_is_served(tmp_path):
    assert source_key(ServingSettings(home=tmp_path, model_alias="champion")) == "registry:cultural-recsys@champion"
    assert source_key(ServingSettings(home=tmp_path, model_dir=tmp_path / "m")) == \
        f"directory:{(tmp_path / 'm').resolve()}"


def test_serve_command_passes_the_tail_interval(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from training.cli import app

    monkeypatch.setattr("uvicorn.run", lambda *args, **kwargs: None)
    for key in ("RECSYS_HOME", "RECSYS_RELOAD_INTERVAL", "RECSYS_TAIL_INTERVAL"):
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    result = CliRunner().invoke(app, ["serve", "--workers", "3", "--tail-interval", "0.25", "--home", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert os.environ["RECSYS_TAIL_INTERVAL"] == "0.25"


# ---- the real thing: recsys serve --workers 2 -----------------------------------------------
AT = "2026-11-01T10:00:00+08:00"
POSTED_TS = "2026-11-20T19:30:00+08:00"
"""After the demo data's end (2026-10-31): not in the model, so a restarted worker replays it."""


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory) -> dict:
    prepare_mlflow_env()
    root = tmp_path_factory.mktemp("workers")
    data = demo_data(users=800, items=150, days=30, seed=4)
    first = write_bundle(data, root / "bundle-1", trained_at="2026-11-01T02:00:00+00:00")
    second = write_bundle(data, root / "bundle-2", trained_at="2026-11-08T02:00:00+00:00",
                          params={"als": {"factors": 8, "iterations": 4, "num_threads": 1}})
    home = root / "home"
    versions = (register_version(home, first), register_version(home, second, champion=False))
    return {"home": home, "root": root, "versions": versions}


@pytest.fixture(scope="module")
def workers(two_versions) -> Iterator[dict]:
    port = free_port()
    env = {**os.environ, **keyed_env({"RECSYS_ADMIN_KEY": ADMIN_KEY, "PYTHONUNBUFFERED": "1",
                                      "MLFLOW_DISABLE_TELEMETRY": "true",
                                      "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"})}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = open(two_versions["root"] / "workers.log", "ab")  # noqa: SIM115 - the server writes to it
    process = subprocess.Popen(
        [sys.executable, "-c", "from training.cli import main; main()", "serve", "--workers", "2",
         "--port", str(port), "--home", str(two_versions["home"]), "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        pids = ready_workers(base, 2, process, timeout=60)
        yield {"base": base, "pids": pids, "process": process, **two_versions}
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the supervisor and its workers (its own session)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        log.close()


def get(base: str, path: str, **params) -> httpx.Response:
    """One request on a fresh connection, so the kernel may hand it to either worker."""
    return httpx.get(base + path, params=params, timeout=10, headers=KEY_HEADERS)


def served_by(response: httpx.Response) -> int:
    return int(response.headers["x-served-by"])


def ready_workers(base: str, count: int, process: subprocess.Popen, timeout: float,
                  exclude: frozenset[int] = frozenset()) -> set[int]:
    """The pids of ``count`` ready workers other than ``exclude`` (asking until each answered)."""
    deadline = time.monotonic() + timeout
    ready: set[int] = set()
    while len(ready) < count:
        assert process.poll() is None, "the server exited"
        assert time.monotonic() < deadline, f"only {ready} ready after {timeout}s"
        try:
            response = get(base, "/readyz")
            if response.status_code == 200 and served_by(response) not in exclude:
                ready.add(served_by(response))
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    return ready


def answers_from_each(base: str, path: str, pids: set[int], check, timeout: float, **params) -> dict[int, dict]:
    """Ask until every pid in ``pids`` gave an answer passing ``check``; the last such answer per pid."""
    deadline = time.monotonic() + timeout
    good: dict[int, dict] = {}
    last: dict[int, dict] = {}
    while set(good) != pids:
        assert time.monotonic() < deadline, f"after {timeout}s only {sorted(good)} of {sorted(pids)} agree: " + \
            "; ".join(f"{pid}: {str(body)[:300]}" for pid, body in last.items())
        response = get(base, path, **params)
        assert response.status_code == 200, response.text
        pid, body = served_by(response), response.json()
        last[pid] = body
        if check(body):
            good[pid] = body
    return good


def ids(body: dict) -> list[str]:
    return [item["item_id"] for item in body["items"]]


@pytest.mark.slow
def test_workers_follow_each_others_posts_reloads_and_restarts(workers):
    base, pids = workers["base"], workers["pids"]
    first, second = workers["versions"]
    assert len(pids) == 2
    user = "跨进程的新用户"
    path = f"/v1/users/{quote(user, safe='')}/recommendations"
    before = get(base, path, n=40, at=AT, diversity=0.0).json()
    assert before["fallback"] == "popularity" and before["model_version"] == first
    candidates = ids(before)

    # one item per post, until each worker accepted at least one: each must learn the other's
    accepted_by: dict[int, list[str]] = {}
    for item in candidates:
        response = httpx.post(base + "/v1/interactions", timeout=10, headers=KEY_HEADERS, json=[
            {"user_id": user, "item_id": item, "action": "reserve", "ts": POSTED_TS}])
        assert response.status_code == 202 and response.json()["accepted"] == 1, response.text
        accepted_by.setdefault(served_by(response), []).append(item)
        if set(accepted_by) == pids:
            break
    assert set(accepted_by) == pids, f"all posts went to one worker: {accepted_by}"
    posted = {item for items in accepted_by.values() for item in items}
    started = time.monotonic()

    def reflects(body: dict) -> bool:
        return body["fallback"] is None and not posted & set(ids(body))

    answers = answers_from_each(base, path, pids, reflects, timeout=5, n=20, at=AT, diversity=0.0)
    assert time.monotonic() - started < 5
    assert all(len(body["items"]) == 20 for body in answers.values())

    # an admin reload on one worker reaches the other
    registry.promote(registry.connect(EngineHome.at(workers["home"])), second)
    reload = httpx.post(base + "/v1/admin/reload", headers={"X-API-Key": ADMIN_KEY}, timeout=60)
    assert reload.status_code == 200 and reload.json()["version"] == second, reload.text
    answers_from_each(base, "/v1/model", pids, lambda body: body["version"] == second, timeout=10)
    request = json.loads((workers["home"] / "serving" / "reload_request.json").read_text())
    assert request["version"] == second and request["pid"] == served_by(reload)

    # a worker killed outright is restarted by uvicorn and still knows the earlier posts
    victim = sorted(pids)[0]
    os.kill(victim, signal.SIGKILL)
    survivor = pids - {victim}
    fresh = ready_workers(base, 1, workers["process"], timeout=40, exclude=frozenset(pids))
    assert len(fresh) == 1
    restarted = fresh | survivor
    answers = answers_from_each(base, path, restarted, reflects, timeout=10, n=20, at=AT, diversity=0.0)
    assert all(body["model_version"] == second for body in answers.values())
