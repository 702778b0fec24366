"""Settings: loading, overrides, validation and redaction, without servers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from orchestrator import config
from orchestrator.backends.sqs import Sqs
from orchestrator.backends.store.base import Connection
from orchestrator.config import Settings
from orchestrator.errors import ConfigError, ServiceUnavailable

ENV_DIR = Path(__file__).resolve().parents[2] / "env"


def load(tmp_path: Path, file: dict[str, object] | None = None, **environ: str) -> Settings:
    """Load env 'x' from a file in tmp_path (or the repo's env/ when file is None)."""
    folder = ENV_DIR
    if file is not None:
        (tmp_path / "x.json").write_text(json.dumps(file))
        folder = tmp_path
    name = "x" if file is not None else environ.pop("ENV", "development")
    return config.load(name, {"ORCHESTRATOR_CONFIG_DIR": str(folder), **environ}, cwd=tmp_path)


def test_development_file_lists_every_key_with_its_default() -> None:
    listed = json.loads((ENV_DIR / "development.json").read_text())
    defaults = {f.name.upper(): f.default for f in config.settings_fields()}
    assert listed == defaults


@pytest.mark.parametrize("env", ["development", "test", "production"])
def test_every_shipped_env_file_loads(tmp_path: Path, env: str) -> None:
    # production binds the API and probes beyond loopback (a container's): a token is a must
    assert load(tmp_path, ENV=env, API_TOKEN="t").env_name == env


def test_production_without_a_token_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="API_TOKEN is empty"):
        load(tmp_path, ENV="production")


def test_environment_overrides_file(tmp_path: Path) -> None:
    s = load(tmp_path, {"MAX_LOAD": 3}, MAX_LOAD="7", MASTER_INTERVAL="0.5", API_HOST="0.0.0.0",
             API_TOKEN="t")
    assert (s.max_load, s.master_interval, s.api_host) == (7, 0.5, "0.0.0.0")


def test_file_values_apply_and_ints_are_accepted_for_durations(tmp_path: Path) -> None:
    s = load(tmp_path, {"MAX_LOAD": 3, "LEASE_TTL": 4})
    assert (s.max_load, s.lease_ttl) == (3, 4.0)
    assert isinstance(s.lease_ttl, float)


def load_from(folder: Path, cwd: Path, file: dict[str, object], **environ: str) -> Settings:
    """Load env 'x' from a file in `folder` while the working directory is `cwd`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "x.json").write_text(json.dumps(file))
    return config.load("x", {"ORCHESTRATOR_CONFIG_DIR": str(folder), **environ}, cwd=cwd)


def test_a_relative_data_dir_from_the_file_is_relative_to_the_file(tmp_path: Path) -> None:
    for cwd in (tmp_path / "a", tmp_path / "b"):
        s = load_from(tmp_path / "conf", cwd, {"DATA_DIR": "state"})
        assert s.data_dir == str(tmp_path / "conf" / "state")


def test_a_relative_data_dir_from_the_environment_is_relative_to_the_cwd(tmp_path: Path) -> None:
    s = load_from(tmp_path / "conf", tmp_path / "a", {"DATA_DIR": "x"}, DATA_DIR="state")
    assert s.data_dir == str(tmp_path / "a" / "state")


def test_the_default_data_dir_is_per_user_whatever_the_cwd(tmp_path: Path) -> None:
    xdg = load_from(tmp_path / "c", tmp_path / "a", {}, XDG_DATA_HOME=str(tmp_path / "xdg"))
    assert xdg.data_dir == str(tmp_path / "xdg" / "orchestrator")
    home = load_from(tmp_path / "c", tmp_path / "b", {}, XDG_DATA_HOME="relative/ignored")
    assert home.data_dir == str(Path.home() / ".local" / "share" / "orchestrator")


def test_handler_pythonpath_is_made_absolute_once(tmp_path: Path) -> None:
    s = load_from(tmp_path / "conf", tmp_path / "a", {"HANDLER_PYTHONPATH": "app:/abs/lib"})
    assert s.handler_path_entries == [str(tmp_path / "conf" / "app"), "/abs/lib"]


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::", "api.example.com"])
def test_an_api_beyond_loopback_without_a_token_is_refused(tmp_path: Path, host: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, {}, API_HOST=host)
    assert "API_HOST" in str(err.value) and "API_TOKEN" in str(err.value)
    assert load(tmp_path, {}, API_HOST=host, API_TOKEN="t").api_host == host


def test_health_port_may_not_share_the_api_port(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="PORT and HEALTH_PORT are both 8080"):
        load(tmp_path, {"PORT": 8080, "HEALTH_PORT": 8080})


@pytest.mark.parametrize(
    ("file", "environ", "message"),
    [
        ({"MAX_LAOD": 5}, {}, "unknown setting MAX_LAOD"),
        ({}, {"MAX_LOAD": "abc"}, "MAX_LOAD must be an integer, got 'abc'"),
        ({"MAX_LOAD": "5"}, {}, "MAX_LOAD must be an integer, got '5'"),
        ({"MAX_LOAD": True}, {}, "MAX_LOAD must be an integer"),
        ({"MAX_LOAD": 2.5}, {}, "MAX_LOAD must be an integer"),
        ({}, {"MAX_LOAD": "0"}, "MAX_LOAD must be between 1 and 10000, got '0'"),
        ({}, {"PORT": "70000"}, "PORT must be between 0 and 65535"),
        ({}, {"MASTER_INTERVAL": "soon"}, "MASTER_INTERVAL must be a number"),
        ({}, {"LOG_FORMAT": "xml"}, "LOG_FORMAT must be one of console, json"),
        ({"AWS_REGION": 5}, {}, "AWS_REGION must be a string"),
        ({}, {"DEFAULT_CONCURRENCY": "200"}, "DEFAULT_CONCURRENCY (200) must not exceed"),
        ({}, {"WORKER_TIMEOUT": "1"}, "WORKER_TIMEOUT (1.0) must be at least 3 x HEARTBEAT"),
        # a worker fences at 0.7 x WORKER_TIMEOUT: 2.5 s against 2 s heartbeats flapped
        ({}, {"HEARTBEAT_INTERVAL": "2", "WORKER_TIMEOUT": "2.5"}, "WORKER_TIMEOUT (2.5) must"),
        # every duration and count has an upper bound (1e300 overflowed timeouts)
        ({}, {"MASTER_INTERVAL": "1e300"}, "MASTER_INTERVAL must be between 0.01 and 3600"),
        ({}, {"LEASE_TTL": "1e300"}, "LEASE_TTL must be between 0.1 and 3600"),
        ({}, {"JOB_TTL_DAYS": "1e300"}, "JOB_TTL_DAYS must be between 0.0001 and 3650"),
        ({"SHUTDOWN_GRACE": 1e300}, {}, "SHUTDOWN_GRACE must be between 0 and 3600"),
        ({}, {"MAX_LOAD": "10" * 40}, "MAX_LOAD must be between 1 and 10000"),
        ({}, {"EMBEDDED_MONGODB_PORT": "5000", "EMBEDDED_SQS_PORT": "5000"},
         "EMBEDDED_MONGODB_PORT and EMBEDDED_SQS_PORT are both 5000"),
        ({}, {"PORT": "4566"}, "EMBEDDED_SQS_PORT and PORT are both 4566"),
        ({}, {"AWS_REGION": ""}, "AWS_REGION must be a region name"),
        ({}, {"AWS_REGION": "us east"}, "AWS_REGION must be a region name"),
        ({}, {"DEFAULT_HANDLER": "nocolon"}, "DEFAULT_HANDLER must look like"),
        ({}, {"MONGODB_URI": "postgres://x"}, "MONGODB_URI must be 'embedded' or a mongodb://"),
        ({}, {"AWS_SQS_ENDPOINT": "ftp://x"}, "AWS_SQS_ENDPOINT must be"),
        ({}, {"MONGODB_NAME": "a.b"}, "MONGODB_NAME is not a database name"),
        ({}, {"MASTER_INTERVAL": "nan"}, "MASTER_INTERVAL must be a number, got 'nan'"),
        ({}, {"SHUTDOWN_GRACE": "inf"}, "SHUTDOWN_GRACE must be a number, got 'inf'"),
        ({"SHUTDOWN_GRACE": float("inf")}, {}, "SHUTDOWN_GRACE must be a finite number"),
        # integers are ASCII digits, nothing else (int() takes all of these)
        ({}, {"MAX_LOAD": " 5 "}, "MAX_LOAD must be an integer, got ' 5 '"),
        ({}, {"MAX_LOAD": "+5"}, "MAX_LOAD must be an integer, got '+5'"),
        ({}, {"MAX_LOAD": "\u0665"}, "MAX_LOAD must be an integer"),
        ({}, {"MAX_LOAD": "5_0"}, "MAX_LOAD must be an integer, got '5_0'"),
        ({}, {"MASTER_INTERVAL": "1_0"}, "MASTER_INTERVAL must be a number, got '1_0'"),
        ({}, {"MASTER_INTERVAL": " 1"}, "MASTER_INTERVAL must be a number, got ' 1'"),
        ({}, {"DEFAULT_HANDLER": "a.b:c\n"}, "DEFAULT_HANDLER must look like"),
        ({}, {"HANDLER_MODULES": "myapp,my app"}, "HANDLER_MODULES must list module names"),
        ({}, {"HANDLER_MODULES": "myapp"}, "DEFAULT_HANDLER (orchestrator.handlers:log) is out"),
    ],
)
def test_bad_settings_name_the_key(
    tmp_path: Path, file: dict[str, object], environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load(tmp_path, file, **environ)


def test_a_bad_secret_is_named_but_not_shown(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, {"API_TOKEN": 12345})
    assert "API_TOKEN" in str(info.value)
    assert "12345" not in str(info.value)


def test_missing_env_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"environment 'nope' not found; looked for .*nope\.json"):
        config.load("nope", {}, cwd=tmp_path)


def test_env_found_in_cwd_before_checkout(tmp_path: Path) -> None:
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "development.json").write_text('{"MAX_LOAD": 9}')
    assert config.load(None, {}, cwd=tmp_path).max_load == 9


def test_env_falls_back_to_checkout(tmp_path: Path) -> None:
    s = config.load("production", {"API_TOKEN": "t"}, cwd=tmp_path)
    assert s.source == str(ENV_DIR / "production.json")


def test_env_name_from_environment(tmp_path: Path) -> None:
    s = config.load(None, {"ORCHESTRATOR_ENV": "test"}, cwd=tmp_path)
    assert s.env_name == "test"


def test_invalid_env_name_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid environment name"):
        config.load("../etc", {}, cwd=tmp_path)


@pytest.mark.parametrize("given, environ", [("", {}), (None, {"ORCHESTRATOR_ENV": ""})])
def test_empty_env_name_is_refused_not_taken_for_the_default(
    tmp_path: Path, given: str | None, environ: dict[str, str]
) -> None:
    with pytest.raises(ConfigError, match="the environment name is empty"):
        config.load(given, environ, cwd=tmp_path)


def test_secrets_are_redacted_everywhere(tmp_path: Path) -> None:
    s = load(
        tmp_path,
        AWS_SECRET_ACCESS_KEY="wJalrXUtnFEMI",
        AWS_ACCESS_KEY_ID="AKIAEXAMPLE",
        API_TOKEN="tok-123",
        MONGODB_URI="mongodb://admin:hunter2@db.example:27017/x",
    )
    shown = json.dumps(s.redacted()) + repr(s)
    for secret in ("wJalrXUtnFEMI", "AKIAEXAMPLE", "tok-123", "hunter2", "admin"):
        assert secret not in shown
    assert s.redacted()["MONGODB_URI"] == "mongodb://***@db.example:27017/x"


def test_credentials_in_url_settings_are_redacted(tmp_path: Path) -> None:
    s = load(
        tmp_path,
        AWS_SQS_ENDPOINT="http://sqsuser:sqs-pw@sqs.example:4566",
        MONGODB_URI="mongodb://db.example/x?tls=true&tlsCertificateKeyFilePassword=key-pw"
        "&authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:sess-tok",
    )
    shown = json.dumps(s.redacted()) + repr(s)
    for secret in ("sqsuser", "sqs-pw", "key-pw", "sess-tok"):
        assert secret not in shown
    assert s.redacted()["AWS_SQS_ENDPOINT"] == "http://***@sqs.example:4566"


def test_a_bad_sqs_endpoint_is_shown_redacted(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="AWS_SQS_ENDPOINT must be") as info:
        load(tmp_path, AWS_SQS_ENDPOINT="ftp://u:s3cret@sqs.example")
    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize(
    ("uri", "text"),
    [
        ("http://us%40er:p%2Fw@h:1", "cannot reach http://us%40er:p%2Fw@h:1/ as us@er, p/w"),
        ("mongodb://h/?tlsCertificateKeyFilePassword=a+b%21", "password a b! or a+b%21"),
        ("mongodb://h/?authMechanismProperties=AWS_SESSION_TOKEN:t%2Bk", "token t+k"),
    ],
)
def test_scrub_hides_credentials_as_written_and_as_meant(uri: str, text: str) -> None:
    scrubbed = config.scrub(text, uri)
    for secret in ("us@er", "us%40er", "p/w", "p%2Fw", "a b!", "a+b%21", "t+k"):
        assert secret not in scrubbed


def test_an_sqs_error_does_not_show_the_endpoint_password() -> None:
    # A closed local port: botocore's error quotes the endpoint URL, userinfo and all.
    sqs = Sqs("http://sqsuser:sqs-pw@127.0.0.1:9", "us-east-1", "a", "b",
              attempts=1, connect_timeout=1)  # fmt: skip
    with pytest.raises(ServiceUnavailable) as info:
        sqs.list_queue_urls()
    assert "sqs-pw" not in str(info.value) and "sqsuser" not in str(info.value)
    assert "http://***@127.0.0.1:9" in str(info.value)


def test_a_mongodb_error_does_not_show_uri_credentials() -> None:
    uri = ("mongodb://127.0.0.1:9/?authMechanism=MONGODB-AWS"
           "&authMechanismProperties=AWS_SESSION_TOKEN:sess-tok")  # fmt: skip
    store = Connection(uri, "x", job_ttl_days=1, timeout_ms=200)
    try:
        with pytest.raises(ServiceUnavailable) as info:
            store.ping()
    finally:
        store.close()
    assert "sess-tok" not in str(info.value)


def test_a_malformed_mongodb_uri_is_not_echoed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="MONGODB_URI must be") as info:
        load(tmp_path, MONGODB_URI="user:s3cret@db.example")
    assert "s3cret" not in str(info.value)


def test_empty_secret_is_shown_as_empty(tmp_path: Path) -> None:
    assert load(tmp_path).redacted()["API_TOKEN"] == ""


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("mongodb://h:1/db", "mongodb://h:1/db"),
        ("mongodb://u:p@h:1/db?x=1", "mongodb://***@h:1/db?x=1"),
        ("mongodb+srv://u:p@cluster.example/db", "mongodb+srv://***@cluster.example/db"),
        ("embedded", "embedded"),
        (
            "mongodb://u:p@h1:27017,h2:27017/db?replicaSet=rs",
            "mongodb://***@h1:27017,h2:27017/db?replicaSet=rs",
        ),
        ("mongodb://u:p@h:99999/", "mongodb://***@h:99999/"),
        ("user:pw@host", "***"),
        ("http://user:pw@sqs.example:4566", "http://***@sqs.example:4566"),
        (
            "mongodb://h/db?tls=true&tlsCertificateKeyFile=/k.pem&tlsCertificateKeyFilePassword=pw",
            "mongodb://h/db?tls=true&tlsCertificateKeyFile=/k.pem&tlsCertificateKeyFilePassword=***",
        ),
        ("mongodb://h/?TLSCERTIFICATEKEYFILEPASSWORD=pw;w=1",
         "mongodb://h/?TLSCERTIFICATEKEYFILEPASSWORD=***;w=1"),
        ("mongodb://h/?proxyHost=p&proxyUsername=u&proxyPassword=pw",
         "mongodb://h/?proxyHost=p&proxyUsername=***&proxyPassword=***"),
        (
            "mongodb://h/?authMechanism=MONGODB-AWS"
            "&authMechanismProperties=AWS_SESSION_TOKEN:tok,SERVICE_NAME:mongodb",
            "mongodb://h/?authMechanism=MONGODB-AWS"
            "&authMechanismProperties=AWS_SESSION_TOKEN:***,SERVICE_NAME:mongodb",
        ),
        ("mongodb://h/?authMechanismProperties=AWS_SESSION_TOKEN%3Atok",
         "mongodb://h/?authMechanismProperties=AWS_SESSION_TOKEN:***"),
        ("http://sqs.example/?X-Amz-Security-Token=tok#f", "http://sqs.example/?X-Amz-Security-Token=***#f"),
    ],
)
def test_redact_uri(uri: str, shown: str) -> None:
    assert config.redact_uri(uri) == shown


def test_sqs_kind() -> None:
    assert Settings(aws_sqs_endpoint="").sqs_kind == "aws"
    assert Settings(aws_sqs_endpoint="http://x:1").sqs_kind == "url"
    assert Settings(aws_sqs_endpoint="localstack").sqs_kind == "localstack"


def test_missing_env_names_each_place_once_when_the_working_directory_is_the_checkout() -> None:
    checkout = Path(config.__file__).resolve().parent.parent
    with pytest.raises(ConfigError) as info:
        config.load("nope", {}, cwd=checkout)
    assert str(info.value).count("nope.json") == 1
