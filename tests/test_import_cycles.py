"""No import circle among the modules of ``dfkd_bench``: every import of one of its modules
by another counts, at module level or inside a function (a function-local import only
hides a circle until the function runs), relative or absolute."""
from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT


def module_names(package: Path) -> dict[str, Path]:
    """Dotted name inside the package (``report``, ``models.generator``; a subpackage by its
    own name) -> file."""
    names = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:
            names[".".join(parts)] = path
    return names


def imported(node: ast.ImportFrom | ast.Import, name: str, is_package: bool, package: str) -> list[str]:
    """The dotted names (inside the package, maybe not modules) an import statement of
    module ``name`` reaches."""
    if isinstance(node, ast.Import):
        return [a.name.removeprefix(f"{package}.") for a in node.names if a.name.startswith(f"{package}.")]
    if node.level:
        here = name.split(".") if is_package else name.split(".")[:-1]
        base = here[:len(here) - (node.level - 1)] + (node.module.split(".") if node.module else [])
    elif node.module and (node.module + ".").startswith(f"{package}."):
        base = node.module.split(".")[1:]
    else:
        return []
    return [".".join([*base, a.name]) for a in node.names]


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports anywhere in its file."""
    modules = module_names(package)
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in imported(node, name, path.name == "__init__.py", package.name):
                    while target and target not in modules:  # a name from a module: that module
                        target = target.rpartition(".")[0]
                    if target and target != name:
                        deps.add(target)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle (a path back to its start) through each group of modules that import
    each other, found by depth-first search."""
    found, done = [], set()
    for start in sorted(graph):
        stack, on_path = [(start, iter(sorted(graph[start])))], [start]
        while stack:
            node, deps = stack[-1]
            dep = next(deps, None)
            if dep is None:
                stack.pop()
                on_path.pop()
                done.add(node)
            elif dep in on_path:
                circle = on_path[on_path.index(dep):] + [dep]
                if not any(set(circle) == set(c) for c in found):
                    found.append(circle)
            elif dep not in done:
                stack.append((dep, iter(sorted(graph[dep]))))
                on_path.append(dep)
    return found


def test_no_import_circle_among_dfkd_bench_modules():
    circles = cycles(import_graph(ROOT / "dfkd_bench"))
    assert circles == [], "import circles: " + "; ".join(" -> ".join(c) for c in circles)


def test_the_search_finds_function_local_and_package_circles(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import thing\n")
    (pkg / "b.py").write_text("def f():\n    from pkg import a\n    from . import c\n")
    (pkg / "c.py").write_text("import os\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "x.py").write_text("from ..c import y\nfrom .y import z\n")
    (pkg / "sub" / "y.py").write_text("def g():\n    from ..sub import x\n")
    graph = import_graph(pkg)
    assert graph == {"a": {"b"}, "b": {"a", "c"}, "c": set(), "sub": set(),
                     "sub.x": {"c", "sub.y"}, "sub.y": {"sub.x"}}
    assert cycles(graph) == [["a", "b", "a"], ["sub.x", "sub.y", "sub.x"]]
