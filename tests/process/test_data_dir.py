"""DATA_DIR does not depend on the working directory: commands run from two folders
reach the same embedded servers (the per-user default, and a relative value from an
env file, which is relative to the file)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ENV_DIR, ORCHESTRATOR, base_environ

pytestmark = pytest.mark.timeout(120)


def run(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ORCHESTRATOR, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip


def status(cwd: Path, env: dict[str, str]) -> dict[str, Any]:
    done = run(cwd, env, "services", "status", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def two_folders(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "a", tmp_path / "b" / "deeper"
    a.mkdir()
    b.mkdir(parents=True)
    return a, b


def environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = base_environ(tmp_path, ORCHESTRATOR_ENV="development", EMBEDDED_MONGODB_PORT="0",
                       EMBEDDED_SQS_PORT="0", XDG_DATA_HOME=str(tmp_path / "xdg"),
                       **extra)  # fmt: skip
    del env["DATA_DIR"]
    return env


@pytest.mark.parametrize("how", ["per-user default", "relative in the env file"])
def test_two_working_directories_reach_the_same_servers(tmp_path: Path, how: str) -> None:
    a, b = two_folders(tmp_path)
    if how == "per-user default":
        env = environment(tmp_path, ORCHESTRATOR_CONFIG_DIR=str(ENV_DIR))
        expected = tmp_path / "xdg" / "orchestrator"
    else:
        conf = tmp_path / "conf"
        conf.mkdir()
        (conf / "development.json").write_text(json.dumps({"DATA_DIR": "state"}))
        env = environment(tmp_path, ORCHESTRATOR_CONFIG_DIR=str(conf))
        expected = conf / "state"
    try:
        started = run(a, env, "services", "start")
        assert started.returncode == 0, started.stderr
        created = run(a, env, "queue", "create", "shared")
        assert created.returncode == 0, created.stderr
        from_a, from_b = status(a, env), status(b, env)
        assert from_a == from_b and from_b["dataDir"] == str(expected)
        assert from_b["mongodb"]["running"] and isinstance(from_b["mongodb"]["pid"], int)
        listed = run(b, env, "queue", "list", "--json")
        assert [q["name"] for q in json.loads(listed.stdout)] == ["shared"], listed.stderr
        shown = run(b, env, "config", "show", "--json")
        assert json.loads(shown.stdout)["DATA_DIR"] == str(expected), shown.stdout
    finally:
        for folder in (a, b):
            run(folder, env, "services", "stop")
    assert not any(p.name.startswith(".orchestrator") for p in (*a.iterdir(), *b.iterdir()))
    assert os.path.isfile(expected / "services.json")
