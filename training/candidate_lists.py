"""A training job's candidate lists (:mod:`recsys.candidates`), scored by several processes.

A training job computes the lists after saving the bundle (:func:`save_with_candidates`): for
a large bundle, several processes each load the saved bundle and score a share of the chunks
(:mod:`training.candidate_worker`), with the same calls as one process
(:func:`recsys.candidate_scoring.score_share`), so the lists do not depend on how many took
part. A job covers at most :data:`recsys.candidates.DEFAULT_MAX_USERS` users, the most active.

The pool lives with the jobs, not in the core: it starts interpreters, writes temporary
files and waits on them, which a server (that scores lists in a thread of its own) never does.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recsys.bundle import ModelBundle
from recsys.candidate_scoring import (
    DEFAULT_K,
    Scored,
    add_scored,
    chunk_size,
    empty_lists,
    finished_lists,
    most_active_users,
    precompute_candidates,
    split_into_chunks,
)
from recsys.candidates import DEFAULT_MAX_USERS, FILE_NAME, Candidates

log = logging.getLogger(__name__)

PARALLEL_MIN_USERS = 20_000
"""Below this many users a training job scores them in its own process (starting workers costs
a few seconds: each imports the engine and loads the bundle)."""
MAX_WORKERS = 8
"""Processes at most: each holds its own copy of the bundle."""
PROGRESS_SECONDS = 30.0
"""How often the waiting parent logs that its workers are still scoring."""


class CandidateWorkersFailed(RuntimeError):
    """A worker process of :func:`precompute_in_processes` did not finish."""


def save_with_candidates(bundle: ModelBundle, directory: Path, k: int = DEFAULT_K,
                         workers: int | None = None, max_users: int = DEFAULT_MAX_USERS) -> Path:
    """Save ``bundle`` to ``directory``, then compute its candidate lists and save them with it.

    Lists are made for at most ``max_users`` users, the most active
    (:func:`recsys.candidate_scoring.most_active_users`); the others are served by full
    scoring. With ``PARALLEL_MIN_USERS`` users or more and more than one core, ``workers``
    processes (default: the cores, at most ``MAX_WORKERS``) each load the saved bundle and
    score a share of the chunks (:func:`precompute_in_processes`); each chunk is the same
    one-BLAS-thread call, so the lists are identical to
    :func:`recsys.candidate_scoring.precompute_candidates`' (asserted in the tests).
    Processes, not threads: selecting and explaining each user's list are many small numpy
    calls that hold the GIL. If a worker fails, this process scores everyone itself.
    """
    path = bundle.save(directory)
    rows = most_active_users(bundle, max_users)
    if len(rows) < int((np.diff(bundle.weights.indptr) > 0).sum()):
        log.info("candidate lists for the %d most active users; the others are scored per request", len(rows))
    workers = min(workers or os.cpu_count() or 1, MAX_WORKERS)
    bundle.candidates = None
    if workers > 1 and len(rows) >= PARALLEL_MIN_USERS:
        try:
            bundle.candidates = precompute_in_processes(bundle, path, rows, k, workers)
        except (CandidateWorkersFailed, OSError) as exc:  # e.g. a worker killed for memory: do it here instead
            log.warning("candidate worker processes failed (%s); scoring in this process", exc)
    if bundle.candidates is None:
        bundle.candidates = precompute_candidates(bundle, k, users=rows)
    if bundle.candidates is not None:  # (None only if asked to stop, which nobody does here)
        bundle.candidates.save(path / FILE_NAME)
    return path


def precompute_in_processes(bundle: ModelBundle, directory: Path, rows: np.ndarray, k: int,
                            workers: int, chunk: int | None = None) -> Candidates:
    """:func:`recsys.candidate_scoring.precompute_candidates` for ``rows`` by ``workers``
    processes reading the bundle saved at ``directory`` (``bundle`` is that bundle, in this process).

    Each worker is a fresh interpreter running :mod:`training.candidate_worker` on every
    ``workers``-th chunk (of ``chunk`` users, default
    :func:`recsys.candidate_scoring.chunk_size`): it never imports the caller's ``__main__``
    (as multiprocessing's spawn would, running an unguarded script's training again) nor
    inherits its threads and locks (as fork would). Raises :class:`CandidateWorkersFailed`
    when a worker fails.
    """
    lists = empty_lists(bundle, k, rows)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="recsys-candidates-") as tmp:
        jobs: list[_Worker] = []
        size = chunk or chunk_size(bundle)
        chunks = split_into_chunks(rows, size)
        try:
            for number in range(workers):
                share = np.concatenate([rows[:0], *chunks[number::workers]])
                jobs.append(_Worker.start(Path(tmp), number, directory, share, lists.k, size))
            _wait_for(jobs, started)
        finally:
            for job in jobs:
                job.stop()
        for job in jobs:
            with np.load(job.out, allow_pickle=False) as stored:
                add_scored(lists, Scored(**{name: stored[name] for name in Scored.__dataclass_fields__}))
    log.info("candidates for %d users (k=%d) in %.1fs by %d processes", len(rows), lists.k,
             time.perf_counter() - started, workers)
    return finished_lists(lists)


@dataclass(frozen=True)
class _Worker:
    """One ``python -m training.candidate_worker`` process and its files."""

    process: subprocess.Popen[bytes]
    out: Path
    errors: Path

    @classmethod
    def start(cls, tmp: Path, number: int, directory: Path, rows: np.ndarray, k: int, chunk: int) -> _Worker:
        share, out, errors = (tmp / f"{name}-{number}{ext}" for name, ext in
                              (("rows", ".npy"), ("lists", ".npz"), ("stderr", ".txt")))
        np.save(share, rows)
        command = [sys.executable, "-m", "training.candidate_worker", str(directory), str(share), str(k), str(out),
                   str(chunk)]
        with open(errors, "wb") as stderr:  # a file, not a pipe: a chatty worker never blocks on a full pipe
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        return cls(process, out, errors)

    def failure(self) -> str | None:
        code = self.process.poll()
        if code in (None, 0):
            return None
        tail = self.errors.read_text(encoding="utf-8", errors="replace").strip()[-2000:]
        return f"a candidate worker exited with {code}: {tail}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def _wait_for(jobs: list[_Worker], started: float) -> None:
    """Wait for every worker, logging progress; raise as soon as one fails."""
    last_report = time.perf_counter()
    while True:
        codes = [job.process.poll() for job in jobs]
        problem = next((failure for job in jobs if (failure := job.failure()) is not None), None)
        if problem is not None:
            raise CandidateWorkersFailed(problem)
        if all(code is not None for code in codes):
            return
        if time.perf_counter() - last_report >= PROGRESS_SECONDS:
            log.info("candidates: %d of %d processes still scoring (%.0fs)", codes.count(None), len(jobs),
                     time.perf_counter() - started)
            last_report = time.perf_counter()
        time.sleep(0.2)
