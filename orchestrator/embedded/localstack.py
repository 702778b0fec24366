"""LocalStack on the host: install it into DATA_DIR with the Python and pins it needs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from orchestrator.config import Settings
from orchestrator.errors import EmbeddedServerError

# What LocalStack's own requirements miss (docs/design.md §13).
LOCALSTACK_PINS = ["cbor2==5.6.5", "cryptography==45.0.7", "pyopenssl==25.1.0", "service_identity"]
LOCALSTACK_PACKAGE = "localstack-core[runtime]"


def localstack_python(data: Path) -> Path:
    return data / "localstack" / "venv" / "bin" / "python"


def find_python313() -> Path | None:
    """Python 3.13 from pyenv, which LocalStack needs (docs/design.md §13)."""
    roots = []
    if shutil.which("pyenv"):
        out = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=False)
        roots.append(Path(out.stdout.strip()))
    roots.append(Path.home() / ".pyenv")
    for root in roots:
        for candidate in sorted(root.glob("versions/3.13*/bin/python"), reverse=True):
            return candidate
    found = shutil.which("python3.13")
    return Path(found) if found else None


def install_localstack(settings: Settings, python: Path | None = None) -> Path:
    """Create DATA_DIR/localstack/venv and install LocalStack with the pins it misses."""
    python = python or find_python313()
    if python is None or not python.exists():
        raise EmbeddedServerError(
            "LocalStack needs Python 3.13 and none was found (looked in pyenv and PATH); "
            "pass --python PATH"
        )
    venv = settings.data_path / "localstack" / "venv"
    venv.parent.mkdir(parents=True, exist_ok=True)
    steps = [
        [str(python), "-m", "venv", str(venv)],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
         LOCALSTACK_PACKAGE, *LOCALSTACK_PINS],
    ]  # fmt: skip
    for step in steps:
        result = subprocess.run(step, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
            raise EmbeddedServerError(
                f"installing LocalStack failed ({' '.join(step[:3])}…):\n" + "\n".join(tail)
            )
    return venv
