"""Dependencies point one way: the low layers never import the inference or command layers."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "mirnet"
HIGH = {"mirnet.inference", "mirnet.enhance", "mirnet.serve", "mirnet.cli", "mirnet.export"}
LOW = [
    p
    for p in PACKAGE.rglob("*.py")
    if p.parts[-2] in ("archs", "data", "training")
    or p.name in ("weights.py", "io.py", "device.py", "tiling.py", "metrics.py", "losses.py", "classical.py")
]


@pytest.mark.parametrize("path", LOW, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_low_layers_do_not_import_high_ones(path):
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    assert not imported & HIGH, f"{path.name} imports {sorted(imported & HIGH)}"
