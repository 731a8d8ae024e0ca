"""The demo cloud: a synthetic Beijing cultural cloud to try, test and benchmark the engine on.

Not a feature pipeline: it makes the provider files (users, catalog, behaviour log) that a
real platform would send, with planted regional effects whose ground truth is known. The
demo commands, the tests and the experiments use it; the engine itself (``recsys``,
``features``, ``serving``) never does (an import-linter contract keeps it so).
"""

from democloud.generator import (
    CATEGORIES,
    EFFECTS,
    KINDS,
    STAGES,
    TIMEZONE,
    DemoConfig,
    DemoData,
    Progress,
    SegmentEffect,
    generate,
    ground_truth,
    resolve_end_date,
    write_demo,
)

__all__ = [
    "CATEGORIES", "EFFECTS", "KINDS", "STAGES", "TIMEZONE", "DemoConfig", "DemoData", "Progress", "SegmentEffect",
    "generate", "ground_truth", "resolve_end_date", "write_demo",
]
