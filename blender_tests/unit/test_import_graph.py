"""The code's layout: no import cycle in the backend or the add-on (imports inside functions count: a late import
hides a cycle, it does not remove it), the process boundary (no torch in the add-on, no bpy in the backend, no bpy in
addon/core), and docs/ARCHITECTURE.md's map naming exactly the backend's folders and modules. Reads files only."""

from __future__ import annotations

import ast
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TREES = {"backend": (os.path.join(REPO, "backend", "sheg"), "sheg"), "addon": (os.path.join(REPO, "addon"), "addon")}


def modules_of(folder: str, package: str) -> dict[str, str]:
    """Dotted module name -> file, for every .py below `folder` (a package's __init__ is the package's name)."""
    found = {}
    for base, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(base, name), folder)[:-3].split(os.sep)
                if rel[-1] == "__init__":
                    rel = rel[:-1]
                found[".".join([package, *rel])] = os.path.join(base, name)
    return found


def imports_of(path: str, module: str, is_package: bool) -> list[tuple[str, list[str]]]:
    """(imported module, names taken from it) for every import statement in the file, at any depth."""
    here = module.split(".") if is_package else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = here[:len(here) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            found.append((target, [alias.name for alias in node.names]))
    return found


def import_graph(tree: str) -> tuple[dict[str, set[str]], dict[str, list[str]]]:
    """Edges between the tree's own modules, and every module's imported top-level packages."""
    folder, package = TREES[tree]
    modules = modules_of(folder, package)
    edges, externals = {m: set() for m in modules}, {m: [] for m in modules}
    for module, path in modules.items():
        for target, names in imports_of(path, module, path.endswith("__init__.py")):
            externals[module].append(target.split(".")[0])
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules]
            if submodules:
                edges[module].update(submodules)
            elif target in modules and target != module:
                edges[module].add(target)
    return edges, externals


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path [a, b, ..., a], or None (depth-first search with colours)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_find_cycle_finds_a_late_import_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("tree", sorted(TREES))
def test_no_import_cycle(tree):
    edges, _ = import_graph(tree)
    assert len(edges) > 10 and sum(map(len, edges.values())) > 10  # the walker sees the real tree
    cycle = find_cycle(edges)
    assert cycle is None, f"import cycle in {tree}: {' -> '.join(cycle)}"


def test_the_process_boundary_holds():
    _, backend = import_graph("backend")
    _, addon = import_graph("addon")
    assert not [m for m, pkgs in backend.items() if "bpy" in pkgs], "the backend never imports bpy"
    assert not [m for m, pkgs in addon.items() if "torch" in pkgs], "the add-on never imports torch"
    assert not [m for m, pkgs in addon.items() if m.startswith("addon.core") and {"bpy", "mathutils"} & set(pkgs)], \
        "addon/core imports no bpy"


def test_architecture_map_names_the_backend_folders_and_modules():
    text = open(os.path.join(REPO, "docs", "ARCHITECTURE.md"), encoding="utf-8").read()
    block = text[text.index("backend/sheg/"):text.index("blender_tests/")]
    # Entries are "  name.py", "  folder/" or "    name.py" under a folder (indented one step further).
    named, folder = set(), None
    for line in block.splitlines()[1:]:
        m = re.match(r"^( +)([\w.]+/?)\s", line + " ")
        if not m:
            continue
        depth, name = len(m.group(1)), m.group(2)
        if depth == 2:
            folder = name.rstrip("/") if name.endswith("/") else None
            named.add(name.rstrip("/") if name.endswith("/") else name)
        elif depth == 4 and folder:
            named.add(f"{folder}/{name}")
    root, _ = TREES["backend"]
    on_disk = set()
    for base, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        rel = os.path.relpath(base, root)
        if rel == "models" or rel.startswith("models" + os.sep):
            continue
        if rel != ".":
            on_disk.add(rel)
        on_disk.update(os.path.join(rel, f) if rel != "." else f for f in files
                       if f.endswith(".py") and f != "__init__.py")
    on_disk.add("models")
    assert named == on_disk, (f"in docs/ARCHITECTURE.md but not on disk: {sorted(named - on_disk)}; "
                              f"on disk but not in the map: {sorted(on_disk - named)}")
