"""The layering rules hold: import-linter contracts pass on the installed packages."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; "
         f"sys.exit(lint_imports(config_filename={str(ROOT / 'pyproject.toml')!r}))"],
        cwd=ROOT, capture_output=True, text=True,
    )
    if result.returncode != 0:  # show the broken contract, not just "exit 1"
        raise AssertionError(result.stdout + result.stderr)
    assert "0 broken" in result.stdout
