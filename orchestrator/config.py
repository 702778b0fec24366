"""Settings: one frozen object, built once at the entry point and passed down.

Values come from `env/<name>.json`, then from environment variables of the same
name. Every key is checked here; a bad one raises ConfigError naming the key.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import math
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, unquote_plus

from orchestrator.errors import ConfigError

ENV_NAME_VAR = "ORCHESTRATOR_ENV"
CONFIG_DIR_VAR = "ORCHESTRATOR_CONFIG_DIR"
DEFAULT_ENV = "development"
REDACTED = "***"
MODES = ("M", "W", "MW")  # what `orchestrator run --mode` takes
# Use with fullmatch: `$` would let a trailing newline through.
HANDLER_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")
_MODULE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^@/?#]*@)")
# Query options whose values are credentials: pymongo's SENSITIVE_OPTIONS_FOR_REPR and its
# old tls alias, and in any URL a name that says password, secret, token or signature.
_SECRET_OPTIONS = frozenset({"proxyusername", "proxypassword", "tlscertificatekeyfilepassword",
                             "sslpemkeypassword", "sslclientcertificatekeypassword"})  # fmt: skip
_SECRET_WORDS = re.compile(r"password|passwd|secret|token|signature|credential", re.IGNORECASE)
# authMechanismProperties holds KEY:value pairs; these keys are not credentials (pymongo's
# _SAFE_AUTH_MECHANISM_PROPS_FOR_REPR); any other's value (AWS_SESSION_TOKEN's) is hidden.
_SAFE_AUTH_PROPERTIES = frozenset({"ALLOWED_HOSTS", "CANONICALIZE_HOST_NAME", "ENVIRONMENT",
                                   "SERVICE_HOST", "SERVICE_NAME", "SERVICE_REALM",
                                   "TOKEN_RESOURCE"})  # fmt: skip
_AUTH_PROPERTIES = "authmechanismproperties"
# Numbers as people type them, in ASCII: int() and float() would also take " 5", "+5",
# "\\u0665" (a digit of another script) and "5_0" (50). Use with fullmatch.
_INTEGER = re.compile(r"-?[0-9]+")
AWS_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]+")  # us-east-1, us-gov-west-1
_NUMBER = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


def parse_int(text: str) -> int | None:
    """`text` as an integer if it is one written in ASCII digits, else None."""
    return int(text) if _INTEGER.fullmatch(text) else None


def parse_number(text: str) -> float | None:
    """`text` as a number if it is one written in ASCII (digits, a point, an exponent)."""
    return float(text) if _NUMBER.fullmatch(text) else None


def handler_allowed(path: str, prefixes: tuple[str, ...]) -> bool:
    """Whether the handler `module:function` comes from one of the module `prefixes`
    (HANDLER_MODULES; none: any). `app` allows `app` and `app.jobs`, not `apple`."""
    module = path.partition(":")[0]
    return not prefixes or any(module == p or module.startswith(p + ".") for p in prefixes)


def _key(
    default: Any,
    *,
    lo: float | None = None,
    hi: float | None = None,
    choices: tuple[str, ...] = (),
    secret: bool = False,
    url: bool = False,
) -> Any:
    """A settings field; the metadata drives parsing, validation and redaction. A `url`
    may carry credentials (userinfo, query options): it is shown through redact_uri."""
    meta = {"lo": lo, "hi": hi, "choices": choices, "secret": secret, "url": url}
    return field(default=default, metadata=meta, repr=not (secret or url))


@dataclass(frozen=True)
class Endpoints:
    """Where the servers are: a MongoDB URI and an SQS endpoint URL (None means AWS),
    from the settings or from the records of the embedded servers."""

    mongodb_uri: str
    sqs_endpoint: str | None


@dataclass(frozen=True)
class Settings:
    """Every setting of docs/design.md §7; attribute names are the keys in lower case."""

    aws_region: str = _key("us-east-1")
    aws_access_key_id: str = _key("test", secret=True)
    aws_secret_access_key: str = _key("test", secret=True)
    aws_sqs_endpoint: str = _key("embedded", url=True)
    mongodb_uri: str = _key("embedded", url=True)
    mongodb_name: str = _key("orchestrator")
    # Empty: the per-user default (default_data_dir); load() always makes it absolute.
    data_dir: str = _key("")
    embedded_mongodb_port: int = _key(27017, lo=0, hi=65535)
    embedded_sqs_port: int = _key(4566, lo=0, hi=65535)
    port: int = _key(3000, lo=0, hi=65535)
    api_host: str = _key("127.0.0.1")
    api_token: str = _key("", secret=True)
    health_port: int = _key(0, lo=0, hi=65535)  # /livez and /readyz of `run`; 0: off
    max_load: int = _key(5, lo=1, hi=10_000)
    consumer_usage_limit: int = _key(5, lo=1, hi=1_000_000)
    consumer_max_rss_mb: int = _key(512, lo=16, hi=1_048_576)
    # fork: consumers forked from a warm fork server (roles/process/forkserver.py);
    # spawn: each a fresh interpreter.
    consumer_start: str = _key("fork", choices=("fork", "spawn"))
    worker_instances: int = _key(1, lo=1, hi=64)
    default_concurrency: int = _key(5, lo=1, hi=10_000)
    max_concurrency: int = _key(100, lo=1, hi=10_000)
    max_processes: int = _key(8, lo=1, hi=64)
    max_shards: int = _key(8, lo=1, hi=64)
    preempt_after: float = _key(5.0, lo=0, hi=86_400)
    default_handler: str = _key("orchestrator.handlers:log")
    handler_modules: str = _key("")  # comma-separated module prefixes; empty: any module
    handler_pythonpath: str = _key("")  # folders (os.pathsep) put first on handlers' sys.path
    # Upper bounds keep arithmetic on them finite (1e300 s overflowed timeouts).
    master_interval: float = _key(1.0, lo=0.01, hi=3600)
    heartbeat_interval: float = _key(2.0, lo=0.01, hi=3600)
    worker_timeout: float = _key(10.0, lo=0.1, hi=86_400)
    lease_ttl: float = _key(10.0, lo=0.1, hi=3600)
    idle_check_max: float = _key(30.0, lo=0.1, hi=86_400)
    assignment_max_seconds: float = _key(300.0, lo=1, hi=604_800)
    drain_empty_polls: int = _key(2, lo=1, hi=1000)
    shutdown_grace: float = _key(30.0, lo=0, hi=3600)
    job_ttl_days: float = _key(5.0, lo=0.0001, hi=3650)
    log_format: str = _key("console", choices=("console", "json"))
    log_level: str = _key("INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))

    # Where the values came from, for `config show`; not settings themselves.
    env_name: str = field(default=DEFAULT_ENV, compare=False)
    source: str = field(default="", compare=False)

    @property
    def handler_prefixes(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.handler_modules.split(",") if p.strip())

    @property
    def handler_path_entries(self) -> list[str]:
        """HANDLER_PYTHONPATH's folders in order (absolute: load() resolved them)."""
        return [p for p in self.handler_pythonpath.split(os.pathsep) if p]

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @property
    def mongodb_embedded(self) -> bool:
        return self.mongodb_uri == "embedded"

    @property
    def sqs_kind(self) -> str:
        """`embedded`, `localstack`, `url` or `aws`."""
        if self.aws_sqs_endpoint in ("embedded", "localstack"):
            return self.aws_sqs_endpoint
        return "url" if self.aws_sqs_endpoint else "aws"

    def redacted(self) -> dict[str, Any]:
        """The settings by key, with secrets hidden: safe to print or log."""
        out: dict[str, Any] = {}
        for f in settings_fields():
            out[f.name.upper()] = shown_setting(f, getattr(self, f.name))
        return out


def shown_setting(f: dataclasses.Field[Any], value: Any) -> Any:
    """A setting's value as it may be printed or logged."""
    if f.metadata["url"] and isinstance(value, str):
        return redact_uri(value)
    if f.metadata["secret"] and value:
        return REDACTED
    return value


def settings_fields() -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(Settings) if "secret" in f.metadata]


def setting_keys() -> list[str]:
    return [f.name.upper() for f in settings_fields()]


def redact_uri(uri: str) -> str:
    """`uri` with its credentials hidden: the user and password of mongodb://user:pw@h1,h2/db
    and the values of credential options (tlsCertificateKeyFilePassword=,
    authMechanismProperties=AWS_SESSION_TOKEN:…).

    A regex, not urlsplit: replica-set host lists and odd ports must not make
    redaction itself fail. Something with an @ that is not a URI is hidden whole.
    """
    match = _USERINFO.match(uri)
    if "@" in uri and not match:
        return REDACTED
    if match:
        uri = match["scheme"] + REDACTED + "@" + uri[match.end() :]
    head, mark, query = uri.partition("?")
    if not mark:
        return uri
    query, hash_mark, fragment = query.partition("#")
    options = re.split(r"([&;])", query)  # keeps the separators
    for i in range(0, len(options), 2):
        name, eq, value = options[i].partition("=")
        if eq:
            options[i] = name + "=" + _redacted_option(name, value)
    return head + "?" + "".join(options) + hash_mark + fragment


def _secret_option(name: str) -> bool:
    name = unquote_plus(name)
    return name.lower() in _SECRET_OPTIONS or bool(_SECRET_WORDS.search(name))


def _redacted_option(name: str, value: str) -> str:
    if name.lower() == _AUTH_PROPERTIES:
        pairs = [p.partition(":") for p in unquote(value).split(",")]
        return ",".join(k + sep + (v if k.upper() in _SAFE_AUTH_PROPERTIES else REDACTED)
                        for k, sep, v in pairs)  # fmt: skip
    return REDACTED if value and _secret_option(name) else value


def _secrets(uri: str) -> Iterator[str]:
    """The credentials in `uri` as they are written and as they are meant (unescaped)."""
    match = _USERINFO.match(uri)
    raw: list[str] = match["userinfo"].rstrip("@").split(":") if match else []
    query = uri.partition("?")[2].partition("#")[0]
    for option in re.split(r"[&;]", query) if query else []:
        name, _, value = option.partition("=")
        if name.lower() == _AUTH_PROPERTIES:
            for pair in unquote(value).split(","):
                key, _, prop = pair.partition(":")
                if key.upper() not in _SAFE_AUTH_PROPERTIES:
                    raw.append(prop)
        elif _secret_option(name):
            raw.append(value)
    for secret in raw:
        yield from {secret, unquote(secret), unquote_plus(secret)}


def scrub(text: str, uri: str) -> str:
    """`text` (an error message about `uri`) with the URI's credentials hidden."""
    for secret in sorted(set(_secrets(uri)), key=len, reverse=True):
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or address to bind or to be reached at) is this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_host(host: str) -> str:
    """`host` as a URL has it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


def default_data_dir(environ: Mapping[str, str]) -> Path:
    """The per-user folder of the embedded servers' files: the same whatever the working
    directory (XDG base directories: $XDG_DATA_HOME, else ~/.local/share)."""
    base = environ.get("XDG_DATA_HOME") or ""
    root = Path(base) if os.path.isabs(base) else Path.home() / ".local" / "share"
    return root / "orchestrator"


def _relative_base(key: str, raw: dict[str, Any], path: Path | None,
                   environ: Mapping[str, str], cwd: Path) -> Path:
    """What a relative path in setting `key` is relative to: the env file's folder when the
    value came from the file, else the working directory."""
    from_file = path is not None and key not in environ and key in raw
    return path.parent if from_file and path is not None else cwd


def _resolved_paths(values: dict[str, Any], raw: dict[str, Any], path: Path | None,
                    environ: Mapping[str, str], cwd: Path) -> None:
    """Make DATA_DIR and HANDLER_PYTHONPATH absolute once, here, so that no process's
    working directory changes what they mean."""
    given = values.get("data_dir", "")
    if not given:
        values["data_dir"] = str(default_data_dir(environ))
    else:
        base = _relative_base("DATA_DIR", raw, path, environ, cwd)
        values["data_dir"] = str((base / Path(given).expanduser()).resolve())
    if values.get("handler_pythonpath"):
        base = _relative_base("HANDLER_PYTHONPATH", raw, path, environ, cwd)
        values["handler_pythonpath"] = os.pathsep.join(
            str((base / Path(p).expanduser()).resolve())
            for p in values["handler_pythonpath"].split(os.pathsep) if p
        )


def find_env_file(env_name: str, environ: Mapping[str, str], cwd: Path) -> Path | None:
    """The env file for `env_name`: $ORCHESTRATOR_CONFIG_DIR, ./env, then the checkout's env/.
    None for `development` when there is none anywhere (an installed wheel run from any
    folder): its settings are then the built-in defaults."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+", env_name):  # also keeps it inside the folder
        raise ConfigError(f"invalid environment name {env_name!r} (letters, digits, _ and -)")
    if environ.get(CONFIG_DIR_VAR):
        candidates = [Path(environ[CONFIG_DIR_VAR])]
    else:
        # The working directory's, then the checkout's (once each: they may be one).
        checkout = Path(__file__).resolve().parent.parent
        candidates = list(dict.fromkeys([cwd.resolve() / "env", checkout / "env"]))
    for folder in candidates:
        path = folder / f"{env_name}.json"
        if path.is_file():
            return path
    if env_name == DEFAULT_ENV and not environ.get(CONFIG_DIR_VAR):
        return None
    looked = ", ".join(str(c / f"{env_name}.json") for c in candidates)
    known = sorted({p.stem for c in candidates if c.is_dir() for p in c.glob("*.json")})
    there = (f"; the environments there are {', '.join(known)}" if known
             else f"; there are none: without a file only {DEFAULT_ENV!r} works, on its defaults")
    raise ConfigError(f"environment '{env_name}' not found; looked for {looked}{there}")


def load(
    env_name: str | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Build Settings from the env file and the environment; raise ConfigError if any is bad."""
    environ = os.environ if environ is None else environ
    cwd = Path.cwd() if cwd is None else cwd
    name = env_name if env_name is not None else environ.get(ENV_NAME_VAR, DEFAULT_ENV)
    if not name:  # an empty --env or ORCHESTRATOR_ENV is a mistake, not "the default"
        raise ConfigError(
            f"the environment name is empty (--env or {ENV_NAME_VAR}); "
            f"omit it for {DEFAULT_ENV!r}"
        )
    path = find_env_file(name, environ, cwd)
    raw = _read_json(path) if path is not None else {}
    known = {f.name.upper(): f for f in settings_fields()}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"unknown setting {', '.join(unknown)} in {path}")
    values: dict[str, Any] = {}
    for key, f in known.items():
        if key in environ:
            values[f.name] = _parse(f, key, environ[key], from_env=True)
        elif key in raw:
            values[f.name] = _parse(f, key, raw[key], from_env=False)
    _resolved_paths(values, raw, path, environ, cwd)
    source = str(path) if path is not None else "built-in defaults (no env/development.json)"
    settings = Settings(**values, env_name=name, source=source)
    _check_together(settings)
    return settings


def _read_json(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a JSON object of settings")
    return raw


def _parse(f: dataclasses.Field[Any], key: str, value: Any, *, from_env: bool) -> Any:
    kind = type(f.default)
    shown = repr(shown_setting(f, value))
    parsed = _coerce(kind, value, from_env)
    if parsed is None:
        noun = {int: "an integer", float: "a number", str: "a string"}[kind]
        raise ConfigError(f"setting {key} must be {noun}, got {shown}")
    lo, hi, choices = f.metadata["lo"], f.metadata["hi"], f.metadata["choices"]
    if kind is float and not math.isfinite(parsed):
        raise ConfigError(f"setting {key} must be a finite number, got {shown}")
    if (lo is not None and parsed < lo) or (hi is not None and parsed > hi):
        bounds = f">= {lo}" if hi is None else f"between {lo} and {hi}"
        raise ConfigError(f"setting {key} must be {bounds}, got {shown}")
    if choices and parsed not in choices:
        raise ConfigError(f"setting {key} must be one of {', '.join(choices)}, got {shown}")
    return parsed


def _coerce(kind: type, value: Any, from_env: bool) -> Any:
    """`value` as `kind`, or None when it is not one. Env values are strings."""
    if kind is str:
        return value if isinstance(value, str) else None
    if from_env:
        return parse_int(value) if kind is int else parse_number(value)
    if isinstance(value, bool):
        return None
    if kind is int:
        return value if isinstance(value, int) else None
    return float(value) if isinstance(value, int | float) else None


def _check_together(s: Settings) -> None:
    """Rules that involve more than one key, or a key's format."""
    if s.default_concurrency > s.max_concurrency:
        raise ConfigError(
            f"setting DEFAULT_CONCURRENCY ({s.default_concurrency}) must not exceed "
            f"MAX_CONCURRENCY ({s.max_concurrency})"
        )
    if s.worker_timeout < 3 * s.heartbeat_interval:
        # A worker fences itself at 0.7 x WORKER_TIMEOUT of silence: it needs room for
        # a missed heartbeat or two, or it fences and unfences over and over.
        raise ConfigError(
            f"setting WORKER_TIMEOUT ({s.worker_timeout}) must be at least 3 x "
            f"HEARTBEAT_INTERVAL ({s.heartbeat_interval})"
        )
    if not AWS_REGION.fullmatch(s.aws_region):
        raise ConfigError(
            f"setting AWS_REGION must be a region name such as us-east-1, got {s.aws_region!r}"
        )
    _check_ports(s)
    _check_exposure(s)
    _check_handlers(s)
    if not (s.mongodb_embedded or s.mongodb_uri.startswith(("mongodb://", "mongodb+srv://"))):
        # The value is not shown: a mistyped URI may still carry a password.
        raise ConfigError(
            "setting MONGODB_URI must be 'embedded' or a mongodb:// or mongodb+srv:// URI"
        )
    if s.sqs_kind == "url" and not s.aws_sqs_endpoint.startswith(("http://", "https://")):
        raise ConfigError(
            "setting AWS_SQS_ENDPOINT must be 'embedded', 'localstack', an http(s) URL "
            f"or empty, got {redact_uri(s.aws_sqs_endpoint)!r}"
        )
    if not s.mongodb_name or "/" in s.mongodb_name or "." in s.mongodb_name:
        raise ConfigError(f"setting MONGODB_NAME is not a database name: {s.mongodb_name!r}")


def _check_ports(s: Settings) -> None:
    """Two servers of one daemon cannot listen on one port (0 means any free port)."""
    ports = {"EMBEDDED_MONGODB_PORT": s.embedded_mongodb_port,
             "EMBEDDED_SQS_PORT": s.embedded_sqs_port, "PORT": s.port,
             "HEALTH_PORT": s.health_port}  # fmt: skip
    taken: dict[int, str] = {}
    for key, port in ports.items():
        if port and port in taken:
            raise ConfigError(f"settings {taken[port]} and {key} are both {port}: "
                              "each server needs a port of its own")  # fmt: skip
        taken[port] = key


def _check_exposure(s: Settings) -> None:
    """Beyond loopback anyone on the network can reach the API: its writes need a token."""
    if not is_loopback(s.api_host) and not s.api_token:
        raise ConfigError(
            f"setting API_HOST is {s.api_host!r}, beyond loopback, but API_TOKEN is empty: "
            "set API_TOKEN (writes then need it) or bind API_HOST to 127.0.0.1"
        )


def _check_handlers(s: Settings) -> None:
    if not HANDLER_PATH.fullmatch(s.default_handler):
        raise ConfigError(
            f"setting DEFAULT_HANDLER must look like package.module:function, "
            f"got {s.default_handler!r}"
        )
    bad = [p for p in s.handler_prefixes if not _MODULE.fullmatch(p)]
    if bad:
        raise ConfigError(
            "setting HANDLER_MODULES must list module names separated by commas "
            f"(such as myapp,orchestrator.handlers), got {bad[0]!r}"
        )
    if not handler_allowed(s.default_handler, s.handler_prefixes):
        raise ConfigError(f"setting DEFAULT_HANDLER ({s.default_handler}) is outside "
                          f"HANDLER_MODULES ({s.handler_modules})")  # fmt: skip
