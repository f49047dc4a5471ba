"""The package's layers import downward only: no circle, no upward import, and no project
import hidden in a function body. Read from the source with ``ast``, nothing is imported."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "analysis"
# floor of each room, lowest first; a module may import its own floor or lower ones
FLOORS = [
    {"config", "cache", "workers", "provenance", "reference"},
    {"data"},
    {"models"},
    {"train"},
    {"finetune"},
    {"checkpoints"},
    {"evaluation", "leads", "probing", "interpret"},
    {"claims", "ledger", "plots"},
    {"book", "bench"},
]
FLOOR = {room: k for k, rooms in enumerate(FLOORS) for room in rooms}
# imports allowed inside a function body: optional or GPU-only dependencies, with the reason
LAZY_OK = {
    "mamba_ssm": "CUDA only: cannot be installed or imported on a CPU machine",
    "mamba_ssm.ops": "CUDA only, as above",
    "mamba_ssm.ops.selective_scan_interface": "CUDA only, as above",
    "causal_conv1d": "CUDA only, as above",
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    if node.level == 0:
        base = node.module or ""
    else:
        parts = module.split(".") if is_package else module.split(".")[:-1]
        parts = parts[:len(parts) - (node.level - 1)]
        base = ".".join(parts + ([node.module] if node.module else []))
    if node.module is None:  # "from . import x": each name may be a submodule
        return [f"{base}.{a.name}" for a in node.names]
    return [base]


def _imports():
    """(importer, imported, inside a function?) for every import of the package."""
    for path in sorted(PACKAGE.rglob("*.py")):
        module, is_package = _module_name(path), path.name == "__init__.py"
        tree = ast.parse(path.read_text())
        functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        inner = {id(n) for f in functions for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                targets = _resolve(module, is_package, node)
            else:
                continue
            for target in targets:
                yield module, target, id(node) in inner


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "analysis" and len(parts) > 1 else None


def test_every_room_has_a_floor():
    rooms = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())}
    assert rooms <= set(FLOOR), f"rooms without a floor in this test: {sorted(rooms - set(FLOOR))}"


def test_imports_point_down_only():
    upward = [(a, b) for a, b, _ in _imports()
              if _room(a) and _room(b) and _room(a) != _room(b) and FLOOR[_room(b)] > FLOOR[_room(a)]]
    assert not upward, f"imports that run up the layers: {upward}"


def test_no_import_circle_between_modules():
    edges = {}
    for a, b, _ in _imports():
        if b.startswith("analysis") and a != b:
            edges.setdefault(a, set()).add(b)
    modules = set(edges) | {b for bs in edges.values() for b in bs}
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(edges.get(m, ())):
            # a package imports its own submodules to re-export them: not a circle
            if n.startswith(m + "."):
                continue
            if state.get(n) == "open":
                pytest.fail("import circle: " + " -> ".join(stack[stack.index(n):] + [n]))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = "done"

    for m in sorted(modules):
        if m not in state:
            visit(m)


def test_no_import_inside_a_function_body_without_a_reason():
    hidden = [(a, b) for a, b, inner in _imports() if inner and b not in LAZY_OK]
    assert not hidden, f"imports inside function bodies: {hidden}"


def test_the_checker_sees_a_planted_upward_import_and_circle(tmp_path, monkeypatch):
    """The checks above can fail: a planted package with a circle and an upward import."""
    pkg = tmp_path / "analysis"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "__init__.py").write_text("from ..models import build\n")
    (pkg / "models.py").write_text("from .data import x\n\ndef f():\n    from . import train\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", pkg)
    found = list(_imports())
    assert ("analysis.data", "analysis.models", False) in found
    assert ("analysis.models", "analysis.train", True) in found
    with pytest.raises(AssertionError, match="run up the layers"):
        test_imports_point_down_only()
    with pytest.raises(pytest.fail.Exception, match="import circle"):
        test_no_import_circle_between_modules()
