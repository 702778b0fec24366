"""The package's layout is its architecture: imports point one way, down.

    cli/    (the console script)
      ↓
    roles/  (the processes; roles/process/child.py, the process entry, also starts the API):
            master/  worker/  consumer/  (none imports another)
              ↓
            process/ (the plumbing every process shares; only its child.py imports a role)
      ↓
    http/   (API, dashboard, /metrics)
      ↓
    backends/ (MongoDB, SQS, queue admin)   embedded/ (the local servers)
      ↓
    orchestrator/*.py (what everything shares)

Nothing imports `orchestrator.cli` (the CLI, on top of all); pymongo is imported by the
store alone and boto3 by sqs.py alone; and no module imports, however indirectly, itself.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "orchestrator"
# Each layer, and the layers it may import from (besides itself).
MAY_IMPORT = {
    "core": set(),
    "backends": {"core"},
    "embedded": {"core"},
    "http": {"core", "backends"},
    "client": {"core", "backends", "embedded"},
    "roles": {"core", "backends", "embedded", "http"},
    "cli": {"core", "backends", "embedded", "http", "roles", "client"},
}
CLI = "orchestrator.cli"  # the console script's package: the top, imported by nothing
ENTRY = "orchestrator.roles.process.child"  # the process entry: the one role module that uses http


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in MAY_IMPORT else "core"


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """Every module `path` imports (absolute names), at any depth of its code."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_point_down(path: Path) -> None:
    name = module_name(path)
    own = layer(name)
    wrong = []
    for target in imports(path):
        if own != "cli" and (target == CLI or target.startswith(CLI + ".")):
            wrong.append(target)
        if not target.startswith("orchestrator.") or _is_package_module(target) is False:
            continue
        other = layer(target)
        allowed = {own} | MAY_IMPORT[own]
        if other == "http" and own == "roles" and name != ENTRY:
            wrong.append(target)  # only the process entry starts the API
        elif other not in allowed:
            wrong.append(target)
    assert not wrong, f"{name} ({own}) imports against the layering: {sorted(wrong)}"


def _is_package_module(target: str) -> bool:
    """Whether `target` names a module or package of ours (not a name inside one)."""
    path = PACKAGE.parent.joinpath(*target.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def role_of(module: str) -> str | None:
    """`master`, `worker`, `consumer` or `process` for a module under orchestrator.roles."""
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[:2] == ["orchestrator", "roles"] else None


@pytest.mark.parametrize("path", [p for p in MODULES if role_of(module_name(p))],
                         ids=lambda p: module_name(p))  # fmt: skip
def test_roles_import_only_the_process_plumbing(path: Path) -> None:
    name = module_name(path)
    own = role_of(name)
    wrong = []
    for target in imports(path):
        other = role_of(target) if _is_package_module(target) else None
        if other is None or other == own or other == "process":
            continue
        if name != ENTRY:  # the entry starts whichever role it is asked for
            wrong.append(target)
    assert not wrong, f"{name} imports another role: {sorted(wrong)}"


@pytest.mark.parametrize(("library", "owner"), [("pymongo", "orchestrator.backends.store"),
                                                ("bson", "orchestrator.backends.store"),
                                                ("boto3", "orchestrator.backends.sqs"),
                                                ("botocore", "orchestrator.backends.sqs")])
def test_one_module_owns_each_client_library(library: str, owner: str) -> None:
    users = {module_name(p) for p in MODULES
             if any(i == library or i.startswith(library + ".") for i in imports(p))}
    assert users <= {owner} | {m for m in users if m.startswith(owner + ".")}, users


def test_no_module_imports_itself_through_others() -> None:
    """No import circle among our modules, with the imports of `if TYPE_CHECKING:` blocks
    and inside functions counted: a circle means two modules that are one, or a type
    that lives in the wrong one (a spec imported from the engine that runs it)."""
    graph = {module_name(p): {t for t in imports(p) if t.split(".")[0] == "orchestrator"
                              and _is_package_module(t)} - {module_name(p)}
             for p in MODULES}  # fmt: skip
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        pytest.fail(f"import circle: {' → '.join(exc.args[1])}")
