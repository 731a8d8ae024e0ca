"""One worker of :func:`training.candidate_lists.precompute_in_processes`, as its own interpreter.

    python -m training.candidate_worker BUNDLE_DIR ROWS.npy K OUT.npz [CHUNK]

Loads the saved bundle, scores the users listed in ``ROWS.npy`` (whole chunks of the
parent's, end to end) with :func:`recsys.candidate_scoring.score_share` (one model call per
chunk of ``CHUNK`` users: the chunks a single process would cut) and writes their lists to
``OUT.npz``, through a temporary name so that a half-written file never exists under the
final one. Exits non-zero, with the reason on stderr, when anything fails.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np


def main(argv: list[str]) -> int:
    if len(argv) not in (4, 5):
        sys.stderr.write(__doc__ or "")
        return 2
    directory, rows_file, k, out = Path(argv[0]), Path(argv[1]), int(argv[2]), Path(argv[3])
    chunk = int(argv[4]) if len(argv) == 5 else None
    from recsys.bundle import ModelBundle
    from recsys.candidate_scoring import score_share

    bundle = ModelBundle.load(directory)
    rows = np.load(rows_file, allow_pickle=False)
    partial = out.with_name(out.name + ".partial.npz")
    arrays: dict[str, Any] = score_share(bundle, rows, k, chunk)  # Any: numpy's stub reads **values as allow_pickle
    np.savez(partial, **arrays)
    os.replace(partial, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
