"""The engine's layout holds: packages import only the packages below them, and the pure ones stay torch-free.

The import graph is read from the source (every `import`, also those inside
functions), so a lazy import cannot slip past the order; torch-freedom is
checked in a fresh interpreter, as a user's `tui-lm estimate` would start.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENGINE = ROOT / "engine"
# Bottom up: a package may import those before it, never those after it.
ORDER = ["config", "data", "model", "memory", "speed", "optim", "runs", "artifacts", "train"]
# What every package shares: they import each other and no package (events carries the torch-free schedule).
SHARED = {"events": {"config"}, "errors": set(), "files": set(), "control": set()}
TORCH_FREE = ["config", "memory", "speed", "runs", "data.sources", "data.tokenizers", "data.token_cache"]


def _engine_imports(path: Path) -> set[str]:
    """The engine modules `path` imports, as dotted names below `engine.`."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] if node.module != "engine" else [f"engine.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found |= {n.removeprefix("engine.") for n in names if n.startswith("engine.")}
    return found


def _modules() -> dict[str, Path]:
    return {".".join(p.relative_to(ENGINE).with_suffix("").parts): p for p in ENGINE.rglob("*.py")}


def test_every_module_is_in_a_package_or_shared() -> None:
    for name in _modules():
        top = name.split(".")[0]
        assert top in ORDER or top in SHARED or name == "__init__", f"engine/{name}.py is outside the layout"


def test_packages_import_only_the_packages_below_them() -> None:
    wrong = []
    for name, path in _modules().items():
        top = name.split(".")[0]
        for imported in _engine_imports(path):
            target = imported.split(".")[0]
            if target == top or target in SHARED:
                continue
            if top in SHARED:
                ok = target in SHARED[top]
            else:
                ok = target in ORDER and ORDER.index(target) < ORDER.index(top)
            if not ok:
                wrong.append(f"engine.{name} imports engine.{imported}")
    assert wrong == []


def test_runs_never_import_the_model() -> None:
    for name, path in _modules().items():
        if name.startswith("runs."):
            assert not {i for i in _engine_imports(path) if i.startswith("model")}, name


@pytest.mark.parametrize("package", TORCH_FREE)
def test_pure_packages_import_without_torch(package: str) -> None:
    base = ENGINE.joinpath(*package.split("."))
    names = ([f"engine.{package}"] if base.with_suffix(".py").is_file() else
             [f"engine.{package}.{p.stem}" for p in sorted(base.glob("*.py")) if p.stem != "__init__"])
    code = f"import sys; import {', '.join(names)}; print(sorted({{'torch', 'textual'}} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", names
