"""The layout shows the architecture (docs/architecture.md): packages by stage, data flowing down.

Every import of a flexopt module, at module level or inside a function (a lazy import hides a
cycle, it does not remove it), is read with `ast` from the source files, so the test needs no
import of flexopt itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "flexopt"

# The stages, earliest first. A module imports only from its own stage or earlier ones.
STAGES = (
    ("base", ("errors", "files", "hub", "_version", "_lazy")),  # what every stage may use
    ("space", ("space",)),  # what a candidate is; Schedule and its files
    ("models", ("models",)),  # loading a MODEL, conditioning, the embedded teacher
    ("run", ("run",)),  # scheduler, executor, hook, prefix reuse, batching, MACs and budgets
    ("metrics", ("metrics",)),  # features, Fréchet, KID, CLIP, teacher cache
    ("search", ("search",)),  # Objective, sampler, pruning, study, storage, workers, validate
    ("report", ("report",)),  # data, figures, html, png, dashboard
    ("cli", ("cli",)),  # flag parsing over the library
    ("api", ("", "__main__", "testing")),  # the public facade `flexopt` and test helpers
)
MAX_TOP_LEVEL_MODULES = 8


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _resolve(module: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The flexopt modules an import statement loads (a name imported from a package that is
    one of its submodules counts as that submodule)."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in MODULES}
    if node.level:
        package = module.split(".")
        if MODULES[module].name != "__init__.py":
            package = package[:-1]
        base = ".".join(package[: len(package) - node.level + 1])
        target = f"{base}.{node.module}" if node.module else base
    else:
        target = node.module or ""
    if target not in MODULES:
        return set()
    subs = {f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES}
    plain = [a for a in node.names if f"{target}.{a.name}" not in MODULES]
    return subs | ({target} if plain else set())


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for module, path in MODULES.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                deps |= _resolve(module, node)
        deps.discard(module)
        graph[module] = deps
    return graph


def stage_of(module: str) -> int:
    first = module.split(".")[1] if "." in module else ""
    for i, (_, names) in enumerate(STAGES):
        if first in names:
            return i
    raise AssertionError(f"{module} is in no stage of tests/test_layout.py")


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as a path that comes back to its start; None when there is none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                return [*path[path.index(d):], d]
            if d not in state and (found := visit(d)):
                return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_the_graph_sees_lazy_and_relative_imports():
    graph = import_graph()
    assert "flexopt.errors" in graph["flexopt.space.segment"]
    assert "flexopt.models.loading" in graph["flexopt.models.train"]  # inside a function
    assert "flexopt.cli" in graph["flexopt.__main__"]


def test_no_import_cycle():
    cycle = _cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_every_module_has_a_stage():
    for module in MODULES:
        stage_of(module)


def test_imports_flow_from_earlier_stages_only():
    bad = [
        f"{m} ({STAGES[stage_of(m)][0]}) imports {d} ({STAGES[stage_of(d)][0]})"
        for m, deps in import_graph().items() for d in sorted(deps)
        if stage_of(d) > stage_of(m)
    ]
    assert not bad, "imports from a later stage:\n" + "\n".join(sorted(bad))


def test_few_modules_at_the_top_level():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


@pytest.mark.parametrize("path", sorted((PACKAGE / "cli").glob("*.py")), ids=lambda p: p.name)
def test_cli_modules_are_thin(path):
    """A command module parses flags and calls one library function (~120 lines at most)."""
    n = len(path.read_text().splitlines())
    assert n <= 125, f"{path.name} has {n} lines: move its logic into the library"


def test_one_objective():
    defs = [
        f"{m}" for m, path in MODULES.items()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef) and node.name == "Objective"
    ]
    assert defs == ["flexopt.search.objective"]


def test_public_api_is_importable_from_flexopt():
    import flexopt

    for name in flexopt.__all__:
        assert getattr(flexopt, name) is not None, name


def test_help_loads_no_torch():
    """`flexopt --help` (and `import flexopt`) stay light: torch and diffusers load only when a
    command runs (the metrics package and the CLI import them lazily)."""
    import subprocess
    import sys

    code = ("import sys; from click.testing import CliRunner; import flexopt.cli as c; "
            "r = CliRunner().invoke(c.main, ['--help']); assert r.exit_code == 0, r.output; "
            "print(sorted(m for m in ('torch', 'diffusers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout.strip()
    assert out == "[]"
