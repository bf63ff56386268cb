"""Imports point one way: services and the Mac worker import the shared package, never each other; the
shared package imports no service; the API imports no ML framework; the Mac worker imports no torch.

Read from the source (every import statement, lazy ones inside functions included), so a violation in a
code path the runtime tests do not reach is caught too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "ktoforge": ROOT / "shared" / "ktoforge",
    "ktoforge_api": ROOT / "services" / "api" / "ktoforge_api",
    "ktoforge_worker": ROOT / "services" / "worker-cuda" / "ktoforge_worker",
    "ktoforge_mlx": ROOT / "native-mac" / "ktoforge_mlx",
}
SERVICES = {"ktoforge_api", "ktoforge_worker", "ktoforge_mlx"}
FORBIDDEN = {
    "ktoforge": SERVICES,
    "ktoforge_api": SERVICES - {"ktoforge_api"} | {"torch", "trl", "transformers", "peft", "unsloth", "mlx", "mlx_lm"},
    "ktoforge_worker": SERVICES - {"ktoforge_worker"} | {"mlx", "mlx_lm"},
    "ktoforge_mlx": SERVICES - {"ktoforge_mlx"} | {"torch", "trl", "peft", "unsloth"},
}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_imports_point_one_way(package):
    files = sorted(PACKAGES[package].rglob("*.py"))
    assert files, f"no sources found for {package}"
    wrong = {f"{path.relative_to(ROOT)}: {sorted(bad)}" for path in files
             if (bad := imported_roots(path) & FORBIDDEN[package])}
    assert not wrong, wrong


def test_the_check_sees_lazy_imports(tmp_path):
    source = tmp_path / "lazy.py"
    source.write_text("def f():\n    import torch.nn\n    from ktoforge_api.main import app\n")
    assert imported_roots(source) == {"torch", "ktoforge_api"}
