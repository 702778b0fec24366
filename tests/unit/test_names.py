"""One name per concept: no two public classes (or union types) of the package share a
name, so that an import never has to ask "which Settings?"."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "orchestrator"
# Names that may be defined more than once, each with the reason (none today).
ALLOWED: dict[str, str] = {}


def public_types(tree: ast.Module) -> list[str]:
    """The module's public classes and unions (`A = B | C`), at its top level."""
    names = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            names.append(node.name)
        elif (isinstance(node, ast.Assign) and isinstance(node.value, ast.BinOp)
              and isinstance(node.value.op, ast.BitOr)):  # fmt: skip
            names.extend(t.id for t in node.targets if isinstance(t, ast.Name))
    return [n for n in names if not n.startswith("_")]


def test_no_two_public_types_share_a_name() -> None:
    where: dict[str, list[str]] = defaultdict(list)
    for path in sorted(PACKAGE.rglob("*.py")):
        for name in public_types(ast.parse(path.read_text())):
            where[name].append(str(path.relative_to(PACKAGE.parent)))
    shared = {n: paths for n, paths in where.items() if len(paths) > 1 and n not in ALLOWED}
    assert not shared, shared
