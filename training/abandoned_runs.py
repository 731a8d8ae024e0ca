"""MLflow runs left ``RUNNING`` by a training that was killed are closed as ``FAILED``.

A run ends ``FINISHED`` or ``FAILED`` only if its process lives to say so; a training killed
(SIGKILL, out of memory, a reboot) leaves it ``RUNNING`` for ever, and the MLflow UI shows a
training in progress that is not. Every run the engine starts carries who runs it
(:func:`owner_tags`: process id, host and the process's start time, which tells a reused
pid from the original). At the start of the next training, :func:`fail_abandoned` closes
as ``FAILED`` each ``RUNNING`` run of the experiment whose process is gone from this host,
with its nested runs (the search's trials); runs of another host, of a live process, or
without the tags (started by something else) are left alone.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Run, RunStatus

log = logging.getLogger(__name__)

PID_TAG = "recsys.pid"
HOST_TAG = "recsys.host"
STARTED_TAG = "recsys.process_started"
"""The process's start time in clock ticks after boot (Linux ``/proc/<pid>/stat``), when known."""
REASON_TAG = "recsys.failed_reason"
PARENT_TAG = "mlflow.parentRunId"
MAX_RUNS = 1000


def owner_tags() -> dict[str, str]:
    """Tags naming this process, for every run the engine starts."""
    tags = {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}
    started = process_started(os.getpid())
    if started is not None:
        tags[STARTED_TAG] = started
    return tags


def process_started(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks after boot), or None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # the command name may hold spaces and parentheses
    return fields[19] if len(fields) > 19 else None  # field 22 of stat; the first two precede ")"


def process_gone(pid: int, started: str | None) -> bool:
    """Whether process ``pid`` (started at ``started``, if known) no longer runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # someone else's live process
        pass
    if started:
        now = process_started(pid)
        return now is not None and now != started  # the pid was reused by another process
    return False


def _abandoned(run: Run, host: str) -> bool:
    tags = run.data.tags
    if tags.get(HOST_TAG) != host or not tags.get(PID_TAG, "").isdigit():
        return False
    return process_gone(int(tags[PID_TAG]), tags.get(STARTED_TAG))


def fail_abandoned(client: MlflowClient, experiment_id: str) -> list[str]:
    """Close every ``RUNNING`` run of a process gone from this host (and its nested runs) as
    ``FAILED``; returns their ids."""
    running = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'",
                                 max_results=MAX_RUNS)
    host = socket.gethostname()
    dead = {run.info.run_id for run in running if _abandoned(run, host)}
    children = {run.info.run_id for run in running
                if run.data.tags.get(PARENT_TAG) in dead and PID_TAG not in run.data.tags}
    closed = sorted(dead | children)
    for run_id in closed:
        client.set_tag(run_id, REASON_TAG, "its process ended without closing the run (killed?)")
        client.set_terminated(run_id, status=RunStatus.to_string(RunStatus.FAILED))
    if closed:
        log.warning("marked %d run(s) left RUNNING by a process that is gone as FAILED: %s", len(closed),
                    ", ".join(closed))
    return closed
