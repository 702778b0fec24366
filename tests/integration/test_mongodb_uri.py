"""MONGODB_URI mistakes that pymongo reports outside its own error tree: each is a clear
error (a ConfigError, or ServiceUnavailable for a server that cannot take the URI's
credentials), never a traceback, and /health still answers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from orchestrator import config
from orchestrator.backends.sqs import Sqs
from orchestrator.backends.store import Store
from orchestrator.config import Endpoints
from orchestrator.embedded import servers as embedded
from orchestrator.errors import ConfigError, ServiceUnavailable
from orchestrator.roles.master.master import Master

pytestmark = pytest.mark.timeout(60)
Run = Callable[..., Result]


def with_credentials(endpoints: Endpoints) -> str:
    return endpoints.mongodb_uri.replace("mongodb://", "mongodb://someone:pa55word@", 1)


def test_a_missing_tls_ca_file_is_a_setting_error() -> None:
    with pytest.raises(ConfigError, match=r"MONGODB_URI is not usable: .*not readable"):
        Store("mongodb://127.0.0.1:9/?tls=true&tlsCAFile=/nonexistent", "x", job_ttl_days=1)


def test_credentials_the_server_cannot_check_are_an_outage_not_a_key_error(
    endpoints: Endpoints,
) -> None:
    store = Store(with_credentials(endpoints), "x", job_ttl_days=1, timeout_ms=1000)
    with pytest.raises(ServiceUnavailable, match="does the server support authentication") as e:
        store.ping()
    assert "pa55word" not in str(e.value)


def test_health_answers_when_the_credentials_do_not_work(
    endpoints: Endpoints, sqs: Sqs, settings: config.Settings
) -> None:
    store = Store(with_credentials(endpoints), "x", job_ttl_days=1, timeout_ms=1000)
    health = Master(settings, store, sqs).health(store)
    assert health["mongodb"] is False


def test_the_cli_says_what_is_wrong(run_cli: Run, endpoints: Endpoints) -> None:
    result = run_cli("queue", "list", env={"MONGODB_URI": with_credentials(endpoints)})
    assert result.exit_code == 1
    assert "does the server support authentication" in result.stderr
    assert "Traceback" not in result.output and "pa55word" not in result.output


def test_services_status_with_a_malformed_uri(tmp_path: Path) -> None:
    settings = config.load(environ={"MONGODB_URI": "mongodb://u:p@[::1",
                                    "DATA_DIR": str(tmp_path)})  # fmt: skip
    assert embedded.status(settings)["mongodb"]["running"] is False
