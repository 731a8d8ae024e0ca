"""The shipped scheduling recipes (``training/ops/``) are well formed and run the same command.

crontab: a 5-field schedule in range and a ``recsys train`` command; systemd: the service and
timer pass ``systemd-analyze verify`` where the tool exists (else they parse as INI with the
keys a unit needs) and the timer's calendar parses; Kubernetes: the CronJob loads as YAML with
the keys ``batch/v1`` requires.
"""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
import yaml

CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
"""minute, hour, day of month, month, day of week (0 and 7 are Sunday)."""


def recipe(name: str) -> str:
    return resources.files("training").joinpath("ops", name).read_text(encoding="utf-8")


def cron_entries() -> list[tuple[list[str], str]]:
    """(schedule fields, command) of each entry of the shipped crontab."""
    entries = []
    for line in recipe("recsys-retrain.cron").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            fields = line.split(maxsplit=5)
            entries.append((fields[:5], fields[5]))
    return entries


def cron_field_ok(field: str, low: int, high: int) -> bool:
    for part in field.split(","):
        body, _, step = part.partition("/")
        if step and not (step.isdigit() and int(step) > 0):
            return False
        if body == "*":
            continue
        start, _, end = body.partition("-")
        bounds = [start, end] if end else [start]
        if not all(b.isdigit() and low <= int(b) <= high for b in bounds):
            return False
    return True


def train_arguments(command: str) -> list[str]:
    """The arguments a recipe gives ``recsys train`` (up to a shell redirection)."""
    words = shlex.split(command.replace("&&", " && "))
    start = next(i for i, word in enumerate(words) if word.endswith("recsys") and words[i + 1] == "train")
    arguments = []
    for word in words[start + 2:]:
        if word.startswith((">", "<", "|", "&", "2>")):
            break
        arguments.append(word)
    return arguments


def test_cron_line_has_a_valid_schedule_and_runs_recsys_train() -> None:
    entries = cron_entries()
    assert len(entries) == 1
    schedule, command = entries[0]
    assert all(cron_field_ok(field, *bounds) for field, bounds in zip(schedule, CRON_RANGES, strict=True)), schedule
    assert "--json" in train_arguments(command)
    assert not cron_field_ok("61", *CRON_RANGES[0]) and not cron_field_ok("*/0", *CRON_RANGES[0])


def test_every_recipe_runs_the_same_train_command() -> None:
    (_, command), = cron_entries()
    service = configparser.ConfigParser(interpolation=None)
    service.read_string(recipe("recsys-retrain.service"))
    cronjob = yaml.safe_load(recipe("recsys-retrain-cronjob.yaml"))
    container = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    expected = train_arguments(command)
    assert train_arguments(service["Service"]["ExecStart"]) == expected
    assert train_arguments(shlex.join(container["command"])) == expected


def test_kubernetes_cronjob_has_the_required_keys() -> None:
    job = yaml.safe_load(recipe("recsys-retrain-cronjob.yaml"))
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "CronJob" and job["metadata"]["name"]
    spec = job["spec"]
    fields = spec["schedule"].split()
    assert len(fields) == 5 and all(cron_field_ok(f, *b) for f, b in zip(fields, CRON_RANGES, strict=True))
    assert spec["concurrencyPolicy"] == "Forbid"
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] in ("Never", "OnFailure")
    assert all(container["name"] and container["image"] for container in pod["containers"])
    mounted = {mount["name"] for c in pod["containers"] for mount in c.get("volumeMounts", [])}
    assert mounted <= {volume["name"] for volume in pod.get("volumes", [])}


def test_systemd_units_parse_with_the_keys_a_unit_needs() -> None:
    service, timer = configparser.ConfigParser(interpolation=None), configparser.ConfigParser(interpolation=None)
    service.optionxform = timer.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    service.read_string(recipe("recsys-retrain.service"))
    timer.read_string(recipe("recsys-retrain.timer"))
    assert service["Service"]["Type"] == "oneshot" and service["Service"]["ExecStart"].startswith("/")
    assert timer["Timer"]["OnCalendar"] and timer["Install"]["WantedBy"] == "timers.target"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_units_pass_systemd_analyze(tmp_path: Path) -> None:
    # verify checks that ExecStart is executable: point it at this environment's recsys
    recsys = Path(sys.executable).with_name("recsys")
    binary = recsys if recsys.exists() else Path(shutil.which("true") or "/bin/true")
    service = recipe("recsys-retrain.service").replace("/srv/recsys/.venv/bin/recsys", str(binary))
    (tmp_path / "recsys-retrain.service").write_text(service, encoding="utf-8")
    (tmp_path / "recsys-retrain.timer").write_text(recipe("recsys-retrain.timer"), encoding="utf-8")
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(tmp_path / "recsys-retrain.service"),
                             str(tmp_path / "recsys-retrain.timer")], capture_output=True, text=True, timeout=60)
    complaints = [line for line in result.stderr.splitlines() if "recsys-retrain" in line]
    assert result.returncode == 0 and not complaints, result.stderr
    timer = configparser.ConfigParser(interpolation=None)
    timer.read_string(recipe("recsys-retrain.timer"))
    calendar = subprocess.run(["systemd-analyze", "calendar", timer["Timer"]["OnCalendar"]], capture_output=True,
                              text=True, timeout=60)
    assert calendar.returncode == 0, calendar.stderr
