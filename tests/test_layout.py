"""The package is layered: no module inside `drat/` imports, directly or through others, a module that
imports it back, and no module reaches into a layer above its own."""

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "drat"

# Lower number = lower layer. A module may import only modules of its own layer or below.
LAYERS = {
    "runtime": 0, "provenance": 0, "sites": 0, "costs": 0, "search": 1, "recompute": 0, "offload": 0,
    "runs": 0, "strategies": 1, "model": 2, "accounting": 3, "oracle": 2, "gates": 3, "measure": 4, "wrap": 4,
    "budget": 4, "data": 1, "train": 5, "bench": 5, "analysis": 5, "cli": 6, "validate": 0,
}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every `drat.*` module a file imports, anywhere in it (module level or inside functions)."""
    me = module_name(path)
    pkg = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod == "drat" or mod.startswith("drat."):
                out.add(mod)
                out.update(f"{mod}.{a.name}" for a in node.names)  # `from . import recompute`
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("drat"))
    return out


@functools.cache  # parsed once: every parametrized test reads the same graph
def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in ROOT.rglob("*.py")}
    g = {}
    for name, path in files.items():
        g[name] = {m for m in imports_of(path) if m in files and m != name}
    return g


def test_no_import_cycles():
    g = graph()
    # a package's __init__ re-exports its modules: edges into a package from its own members are fine
    # only if they don't close a loop through the package's __init__, which is what this search finds
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(g[n]):
            if state.get(m) == 1:
                cycles.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(g):
        if n not in state:
            visit(n)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def layer(mod: str) -> int:
    parts = mod.split(".")
    return LAYERS[parts[1]] if len(parts) > 1 else 99


@pytest.mark.parametrize("mod", sorted(graph()))
def test_no_upward_imports(mod):
    if mod == "drat":
        return
    up = [m for m in graph()[mod] if m != "drat" and layer(m) > layer(mod)]
    assert not up, f"{mod} (layer {layer(mod)}) imports a higher layer: {up}"


def test_every_module_has_a_layer():
    missing = {m.split(".")[1] for m in graph() if m != "drat"} - set(LAYERS)
    assert not missing, f"modules without a layer in LAYERS: {missing}"
