"""The embedded servers: start, reuse, race, status, stop; each test in its own DATA_DIR."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from orchestrator import config
from orchestrator.embedded import servers as embedded
from orchestrator.errors import ConfigError, EmbeddedServerError
from tests.conftest import ORCHESTRATOR, base_environ


def our_servers(data_dir: Path) -> list[psutil.Process]:
    """Live server processes started for this DATA_DIR (by pid records)."""
    records = json.loads((data_dir / "services.json").read_text() or "{}")
    procs = []
    for record in records.values():
        with contextlib.suppress(psutil.NoSuchProcess):
            procs.append(psutil.Process(record["pid"]))
    return procs


def test_start_reuse_status_stop(tmp_path: Path) -> None:
    settings = config.load(environ=base_environ(tmp_path))
    first = embedded.ensure(settings)
    records = json.loads((tmp_path / "services.json").read_text())
    assert set(records) == {"mongodb", "sqs"}
    assert first.mongodb_uri == f"mongodb://127.0.0.1:{records['mongodb']['port']}/"

    again = embedded.ensure(settings)  # reuses: same ports, same processes
    assert again == first
    assert json.loads((tmp_path / "services.json").read_text()) == records

    status = embedded.status(settings)
    assert status["mongodb"] == {
        "uri": first.mongodb_uri,
        "pid": records["mongodb"]["pid"],
        "running": True,
    }
    assert status["sqs"] == {
        "endpoint": first.sqs_endpoint,
        "pid": records["sqs"]["pid"],
        "running": True,
    }

    procs = our_servers(tmp_path)
    assert len(procs) == 2
    assert sorted(embedded.stop(settings)) == ["mongodb", "sqs"]
    _gone, alive = psutil.wait_procs(procs, timeout=5)
    assert not alive
    assert embedded.status(settings)["mongodb"]["running"] is False
    assert embedded.stop(settings) == []


def test_concurrent_starts_share_one_server_each(tmp_path: Path) -> None:
    env = base_environ(tmp_path)
    procs = [
        subprocess.Popen(
            [ORCHESTRATOR, "services", "start"], env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    outputs = {p.communicate(timeout=60)[0] for p in procs}
    try:
        assert all(p.returncode == 0 for p in procs)
        assert len(outputs) == 1  # every process was told the same endpoints
        nx = [
            p
            for p in psutil.process_iter(["cmdline"])
            if "orchestrator.embedded.nxserver" in (p.info["cmdline"] or [])
            and str(tmp_path / "mongodb") in p.info["cmdline"]
        ]
        assert len(nx) == 1
    finally:
        embedded.stop(config.load(environ=env))


def test_second_mongodb_server_on_the_same_files_refuses(tmp_path: Path) -> None:
    settings = config.load(environ=base_environ(tmp_path))
    embedded.ensure(settings)
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        argv = [sys.executable, "-m", "orchestrator.embedded.nxserver", str(tmp_path / "mongodb")]
        argv += ["--port", str(port), "--pid-file", str(tmp_path / "x.pid")]
        argv += ["--log-file", str(tmp_path / "x.log")]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        assert result.returncode == 3
        assert "already serves" in result.stderr
    finally:
        embedded.stop(settings)


def test_configured_port_in_use_by_a_stranger_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as stranger:
        stranger.bind(("127.0.0.1", 0))
        stranger.listen()
        port = stranger.getsockname()[1]
        settings = config.load(environ=base_environ(tmp_path, EMBEDDED_MONGODB_PORT=str(port)))
        with pytest.raises(
            EmbeddedServerError, match=f"port {port} .*EMBEDDED_MONGODB_PORT.* in use"
        ):
            embedded.ensure(settings)
    embedded.stop(settings)


def test_status_of_external_services_reports_no_pid(tmp_path: Path) -> None:
    settings = config.load(
        environ=base_environ(
            tmp_path,
            MONGODB_URI="mongodb://u:pw@127.0.0.1:1/",
            AWS_SQS_ENDPOINT="http://127.0.0.1:1",
        )
    )
    status = embedded.status(settings)
    assert status == {
        "mongodb": {"uri": "mongodb://***@127.0.0.1:1/", "pid": None, "running": False},
        "sqs": {"endpoint": "http://127.0.0.1:1", "pid": None, "running": False},
    }
    assert embedded.ensure(settings).mongodb_uri == "mongodb://u:pw@127.0.0.1:1/"
    assert not (tmp_path / "services.json").exists()


def test_localstack_not_installed_is_a_clear_error(tmp_path: Path) -> None:
    settings = config.load(
        environ=base_environ(
            tmp_path, AWS_SQS_ENDPOINT="localstack", MONGODB_URI="mongodb://127.0.0.1:1/"
        )
    )
    with pytest.raises(EmbeddedServerError, match="services install-localstack"):
        embedded.ensure(settings)


def test_switching_sqs_kind_does_not_reuse_the_other_server(tmp_path: Path) -> None:
    settings = config.load(environ=base_environ(tmp_path))
    embedded.ensure(settings)
    try:
        other = config.load(environ=base_environ(tmp_path, AWS_SQS_ENDPOINT="localstack"))
        with pytest.raises(EmbeddedServerError, match="runs a moto sqs server but the settings"):
            embedded.ensure(other)
    finally:
        embedded.stop(settings)


def test_a_stranger_on_the_port_is_not_taken_for_our_server(tmp_path: Path) -> None:
    settings = config.load(environ=base_environ(tmp_path))
    with socket.socket() as stranger:
        stranger.bind(("127.0.0.1", 0))
        stranger.listen()
        port = stranger.getsockname()[1]
        server = embedded._server(settings, "mongodb", port)
        with pytest.raises(EmbeddedServerError, match=r"exited with code|did not answer"):
            embedded._launch(tmp_path, server, port)


def test_a_server_that_never_answers_is_killed_not_left_behind(tmp_path: Path) -> None:
    server = embedded._Server(
        "sqs", "moto", [sys.executable, "-c", "import time; time.sleep(60)"], {}, 0.5
    )
    with pytest.raises(EmbeddedServerError, match="did not answer"):
        embedded._launch(tmp_path, server, 1)
    sleepers = [
        p for p in psutil.process_iter(["cmdline"])
        if p.info["cmdline"] and p.info["cmdline"][-1] == "import time; time.sleep(60)"
    ]  # fmt: skip
    assert psutil.wait_procs(sleepers, timeout=5)[1] == []


def test_unusable_data_dir_is_a_setting_error(tmp_path: Path) -> None:
    settings = config.load(environ=base_environ(tmp_path, DATA_DIR="/proc/orchestrator-test"))
    with pytest.raises(ConfigError, match="DATA_DIR: cannot use /proc/orchestrator-test"):
        embedded.ensure(settings)
