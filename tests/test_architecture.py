"""The layering rules hold: import-linter contracts pass on the installed packages, and the pure
core (``recsys``) has no import cycle, type-only imports (``if TYPE_CHECKING``) included."""

import subprocess
import sys
from pathlib import Path

import grimp

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


def import_cycles(package: str) -> list[list[str]]:
    """Every set of ``package``'s modules that import each other in a ring (strongly connected
    components of the import graph with more than one module, or a module importing itself),
    each sorted, with type-only imports counted as imports."""
    graph = grimp.build_graph(package, exclude_type_checking_imports=False, cache_dir=None)
    edges = {module: sorted(graph.find_modules_directly_imported_by(module)) for module in sorted(graph.modules)}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str) -> None:  # Tarjan's algorithm
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in edges[module]:
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1 or module in edges[module]:
                cycles.append(sorted(component))

    for module in edges:
        if module not in index:
            visit(module)
    return sorted(cycles)


def describe_cycles(package: str, cycles: list[list[str]]) -> str:
    graph = grimp.build_graph(package, exclude_type_checking_imports=False, cache_dir=None)
    lines = []
    for cycle in cycles:
        lines.append(" <-> ".join(cycle))
        for importer in cycle:
            for imported in sorted(graph.find_modules_directly_imported_by(importer)):
                if imported in cycle:
                    for detail in graph.get_import_details(importer=importer, imported=imported):
                        lines.append(f"    {importer}:{detail['line_number']} {detail['line_contents']}")
    return "\n".join(lines)


def test_recsys_has_no_import_cycles() -> None:
    cycles = import_cycles("recsys")
    assert cycles == [], "import cycles in recsys:\n" + describe_cycles("recsys", cycles)
