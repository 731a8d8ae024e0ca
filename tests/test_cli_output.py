"""CLI messages are whole lines, whatever the terminal or pipe width.

Scripts and tests match the CLI's errors; a console that wraps at 80 columns would break a
long path across lines (``...none.csv: no\\nsuch file``) depending on where the files live.
The command runs as a real subprocess writing to pipes, with a narrow ``COLUMNS`` to make
any wrapping show.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def run_recsys(*args: str, columns: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": str(columns), "TERM": "xterm"}
    return subprocess.run([sys.executable, "-c", "from training.cli import main; main()", *args],
                          capture_output=True, text=True, env=env, timeout=120, check=False)


def long_missing_path(root: Path, length: int = 300) -> Path:
    """A path of exactly ``length`` characters (nested folders, so no name exceeds 255)."""
    path = root
    while len(str(path)) < length - 60:
        path = path / ("d" * 50)
    tail = length - len(str(path)) - 1
    return path / ("u" * (tail - len(".csv")) + ".csv")


@pytest.mark.parametrize("columns", [40, 80, 200])
def test_a_failing_command_prints_its_whole_error_on_one_line(tmp_path: Path, columns: int) -> None:
    missing = long_missing_path(tmp_path)
    assert len(str(missing)) == 300
    result = run_recsys("recommend", "--home", str(tmp_path / "home"), "--users", str(missing),
                        "--out", str(tmp_path / "out.csv"), columns=columns)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [f"error: {missing}: no such file"], result.stderr


def test_markup_like_text_in_a_message_is_printed_as_is(tmp_path: Path) -> None:
    missing = tmp_path / "[red]bracketed[/red]" / "users.csv"
    result = run_recsys("recommend", "--home", str(tmp_path / "home"), "--users", str(missing),
                        "--out", str(tmp_path / "out.csv"), columns=80)
    assert result.returncode == 2
    assert f"{missing}: no such file" in result.stderr
