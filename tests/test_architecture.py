"""The layout's rules, checked statically by walking every import with `ast` (docs/architecture.md).

- No import cycle between the project's modules (imports inside functions count too).
- No private name (``_x``) imported from another module; a private *module* may be imported only
  by its own package (the compiled ``core.render._rasterize`` by ``core.render.rasterize``,
  ``utils.io._text`` by ``utils.io.text``).
- Layers: ``core`` imports neither ``utils`` nor ``models``; ``utils`` does not import ``models``;
  ``models`` imports ``utils`` only from ``models.training`` (the synthetic training data).
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "models", "utils")
SCRIPTS = ("demo.py", "train.py", "calibrate_landmarks.py")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def project_files(root: Path) -> Dict[str, Path]:
    """Module name -> file of every Python file of the packages, tests, benchmarks and scripts."""
    files = {}
    for folder in (*PACKAGES, "tests", "benchmarks"):
        for path in sorted((root / folder).rglob("*.py")):
            files[module_name(path, root)] = path
    for folder in PACKAGES:  # compiled modules
        for path in sorted((root / folder).rglob("*.pyx")):
            files[module_name(path, root)] = path
    for script in SCRIPTS:
        if (root / script).is_file():
            files[module_name(root / script, root)] = root / script
    return files


def imports(path: Path, name: str) -> Iterator[Tuple[str, List[str], int]]:
    """(imported module, imported names, line) of every import statement in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            yield module, [a.name for a in node.names], node.lineno


def resolve(module: str, names: List[str], known: Set[str]) -> List[str]:
    """The project modules an import statement reaches (``from pkg import mod`` reaches pkg.mod)."""
    out = [module] if module in known else []
    out += [f"{module}.{n}" for n in names if f"{module}.{n}" in known]
    return out


def import_graph(root: Path) -> Tuple[Dict[str, Set[str]], List[str]]:
    """Edges between project modules, and the rule breaches found on the way."""
    files = project_files(root)
    known = set(files)
    graph: Dict[str, Set[str]] = {m: set() for m in files}
    breaches = []
    for name, path in files.items():
        if path.suffix != ".py":
            continue
        layer = name.split(".")[0]
        for module, names, line in imports(path, name):
            top = module.split(".")[0]
            if top not in PACKAGES:
                continue
            where = f"{path.relative_to(root)}:{line}"
            targets = resolve(module, names, known)
            graph[name].update(t for t in targets if t != name)
            if layer == "core" and top in ("utils", "models"):
                breaches.append(f"{where}: core imports {module}")
            if layer == "utils" and top == "models":
                breaches.append(f"{where}: utils imports {module}")
            if layer == "models" and top == "utils" and not name.startswith("models.training"):
                breaches.append(f"{where}: {name} imports {module} (only models.training may)")
            for target in targets:
                leaf = target.rsplit(".", 1)[-1]
                own_package = target.rpartition(".")[0] == name.rpartition(".")[0]
                if leaf.startswith("_") and not leaf.startswith("__") and not own_package:
                    breaches.append(f"{where}: private module {target} imported from outside its package")
            for n in names:
                if n.startswith("_") and not n.startswith("__") and f"{module}.{n}" not in known:
                    breaches.append(f"{where}: private name {n} imported from {module}")
    return graph, breaches


def find_cycle(graph: Dict[str, Set[str]]) -> List[str]:
    """One import cycle as a list of modules (first == last), or [] when the graph is acyclic."""
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(node: str) -> List[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


def test_no_import_cycle_private_import_or_layer_breach():
    graph, breaches = import_graph(REPO_ROOT)
    assert not breaches, "\n".join(breaches)
    cycle = find_cycle(graph)
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def _write(root: Path, files: Dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.mark.parametrize("files, expected", [
    ({"core/a.py": "from core.b import x\n", "core/b.py": "def f():\n    from core.a import y\n"},
     "cycle"),
    ({"core/a.py": "from core.b import _hidden\n", "core/b.py": "_hidden = 1\n"}, "private name _hidden"),
    ({"core/a.py": "from utils.b import x\n", "utils/b.py": "x = 1\n"}, "core imports utils.b"),
    ({"utils/a.py": "import models.b\n", "models/b.py": ""}, "utils imports models.b"),
    ({"models/a.py": "from utils.b import x\n", "utils/b.py": "x = 1\n"}, "only models.training may"),
    ({"utils/a.py": "from core.render import _kernel\n", "core/render/__init__.py": "",
      "core/render/_kernel.py": ""}, "private module core.render._kernel"),
])
def test_the_check_catches_each_breach(tmp_path, files, expected):
    root = _write(tmp_path, {"core/__init__.py": "", "utils/__init__.py": "", "models/__init__.py": "", **files})
    graph, breaches = import_graph(root)
    found = breaches + (["cycle"] if find_cycle(graph) else [])
    assert any(expected in b for b in found), found


def test_the_check_passes_a_clean_tree(tmp_path):
    root = _write(tmp_path, {
        "core/__init__.py": "", "utils/__init__.py": "", "models/__init__.py": "",
        "core/render/__init__.py": "", "core/render/_kernel.py": "",
        "core/render/raster.py": "from core.render import _kernel\nfrom core import camera\n",
        "core/camera.py": "def project():\n    pass\n",
        "utils/a.py": "from core.camera import project\n",
        "models/training/__init__.py": "", "models/training/data.py": "from utils.a import project\n",
    })
    graph, breaches = import_graph(root)
    assert breaches == [] and find_cycle(graph) == []
    assert "core.render._kernel" in graph["core.render.raster"]
