"""A/B test on ``recsys serve --workers 2``: both workers assign every user alike (the salted hash, so a
restart cannot change it), serve the challenger's version to its arm, and a stopped experiment
sends everyone to the champion within a second on both workers."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from recsys.experiment import CHALLENGER, CHAMPION, assign, read_state
from recsys.home import EngineHome
from tests.test_workers import get, served_by, two_versions, workers  # noqa: F401 - shared fixtures
from training.experiments_ab import start, stop

USERS = [f"u{i}" for i in range(1, 41)]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def variants_by_worker(base: str, user: str, pids: set[int], timeout: float) -> dict[int, dict]:
    """Ask for ``user``'s list until each worker answered once."""
    answers: dict[int, dict] = {}
    deadline = time.monotonic() + timeout
    while set(answers) != pids:
        assert time.monotonic() < deadline, f"only {sorted(answers)} answered"
        response = get(base, f"/v1/users/{user}/recommendations", n=5)
        assert response.status_code == 200, response.text
        answers[served_by(response)] = response.json()
    return answers


@pytest.mark.slow
def test_assignment_is_shared_by_workers_and_a_stop_reaches_them_within_a_second(workers: dict) -> None:  # noqa: F811
    base, pids = workers["base"], workers["pids"]
    first, second = workers["versions"]
    home = EngineHome.at(workers["home"])
    before = {pid: rss_kib(pid) for pid in pids}
    state = start(home, second, 0.5)
    in_challenger = [u for u in USERS if assign(state, u) == CHALLENGER]
    assert 8 < len(in_challenger) < 32
    deadline = time.monotonic() + 60  # each worker loads the challenger's bundle in the background
    while True:
        answers = variants_by_worker(base, in_challenger[0], pids, 10)
        if all(a["variant"] == CHALLENGER for a in answers.values()):
            break
        assert time.monotonic() < deadline, answers
        time.sleep(0.2)
    after = {pid: rss_kib(pid) for pid in pids}
    print(f"RSS per worker before/after loading the challenger (KiB): "
          f"{ {pid: (before[pid], after[pid]) for pid in pids} }")
    for user in USERS:
        for answer in variants_by_worker(base, user, pids, 10).values():
            assert answer["variant"] == assign(state, user)
            assert answer["model_version"] == (second if answer["variant"] == CHALLENGER else first)
    stop(home)
    stopped_at = time.monotonic()
    assert read_state(home.experiment) is not None
    seen: set[int] = set()
    while seen != pids and time.monotonic() - stopped_at < 5:  # each worker's answers after its next look
        response = get(base, f"/v1/users/{in_challenger[0]}/recommendations", n=5)
        if response.json()["variant"] == CHAMPION:
            seen.add(served_by(response))
        else:
            seen.discard(served_by(response))
    assert seen == pids and time.monotonic() - stopped_at < 1.0
