"""As whom an Sqs calls: the process's own credentials, or a queue's IAM role.

A role is assumed through STS on first use and again before its credentials expire
(botocore refreshes them 15 minutes ahead). A refused assume-role is an outage of the
queues behind that role only: it is logged once per problem and tried again after a
backoff (2 s doubling to 60 s); meanwhile their calls fail at once with RoleUnavailable,
without a call to STS (docs/design.md §5, "Queues elsewhere").
"""

from __future__ import annotations

import functools
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import boto3
import botocore.loaders
import botocore.session
import structlog
from botocore.credentials import DeferredRefreshableCredentials
from botocore.exceptions import BotoCoreError, ClientError

from orchestrator import policy
from orchestrator.errors import RoleUnavailable

log = structlog.get_logger()
C = TypeVar("C")

ROLE_BACKOFF_BASE = 2.0
ROLE_BACKOFF_CAP = 60.0
ROLE_SECONDS = 3600  # each assumed session's length; renewed 15 min before its end
# botocore logs a failed refresh with its traceback; the failure is ours to log, once.
logging.getLogger("botocore.credentials").setLevel(logging.ERROR)


def session_name() -> str:
    """Who assumed the role, as CloudTrail shows it: this host and process."""
    name = re.sub(r"[^\w+=,.@-]", "-", f"orchestrator-{socket.gethostname()}-{os.getpid()}")
    return name[:64]


class AssumedRole:
    """The credentials of one role for one process, fetched through `sts`."""

    def __init__(self, role_arn: str, sts: Callable[[], Any],
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.role_arn = role_arn
        self._sts = sts  # made on first use: a process may never need it
        self.clock = clock
        self.lock = threading.Lock()
        self.failures = 0
        self.retry_at = float("-inf")
        self.problem = ""

    def credentials(self) -> DeferredRefreshableCredentials:
        return DeferredRefreshableCredentials(self.refresh, "assume-role")

    def refresh(self) -> dict[str, str]:
        """Assume the role (botocore calls this under its own lock)."""
        with self.lock:
            if self.clock() < self.retry_at:
                raise RoleUnavailable(self.problem)
        try:
            answer = self._sts().assume_role(
                RoleArn=self.role_arn, RoleSessionName=session_name(), DurationSeconds=ROLE_SECONDS
            )["Credentials"]
        except (ClientError, BotoCoreError) as exc:
            raise self._refused(exc) from exc
        with self.lock:
            if self.failures:
                log.info("sqs.role_assumed_again", role_arn=self.role_arn,
                         after_failures=self.failures)  # fmt: skip
            self.failures, self.retry_at, self.problem = 0, float("-inf"), ""
        return {"access_key": answer["AccessKeyId"], "secret_key": answer["SecretAccessKey"],
                "token": answer["SessionToken"],
                "expiry_time": answer["Expiration"].isoformat()}  # fmt: skip

    def _refused(self, exc: Exception) -> RoleUnavailable:
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            why = f"{error.get('Code')}: {error.get('Message')}"
        else:
            why = str(exc)
        problem = f"could not assume role {self.role_arn}: {why}"
        with self.lock:
            self.failures += 1
            delay = policy.backoff(self.failures, ROLE_BACKOFF_BASE, ROLE_BACKOFF_CAP)
            self.retry_at = self.clock() + delay
            if problem != self.problem:
                log.warning("sqs.role_refused", role_arn=self.role_arn, error=problem,
                            retry_in=round(delay, 1))  # fmt: skip
            self.problem = problem
        return RoleUnavailable(problem)


class Family(Generic[C]):
    """The clients of one process beside its first, by (region, role), and the roles
    they assume (one AssumedRole per role: its credentials serve every region)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.clients: dict[tuple[str, str | None], C] = {}
        self.roles: dict[str, AssumedRole] = {}

    def get(self, key: tuple[str, str | None], make: Callable[[], C]) -> C:
        with self.lock:
            if key not in self.clients:
                self.clients[key] = make()
            return self.clients[key]

    def role(self, arn: str, sts: Callable[[], Any]) -> AssumedRole:
        if arn not in self.roles:  # under get's lock, or the first client's constructor
            self.roles[arn] = AssumedRole(arn, functools.cache(sts))
        return self.roles[arn]


# One reader of botocore's service models per process: a session of its own would parse
# them again for every client (~30 ms each). A consumer forked from the fork server finds
# them parsed (warm_models, roles/process/forkserver.py).
_LOADER = botocore.loaders.create_loader(os.environ.get("AWS_DATA_PATH"))


def make_session(role: AssumedRole | None, region: str, access_key_id: str,
                 secret_access_key: str) -> boto3.session.Session:  # fmt: skip
    """A boto3 session in `region` acting as `role`, or with the given keys (empty: boto3's
    own chain: instance role, profile, ...)."""
    core = _core_with_loader()
    if role is None:
        return _boto3_session(core, region, access_key_id or None, secret_access_key or None)
    # botocore has no public setter for refreshable credentials; this is how its own
    # assume-role provider hands them to a session.
    core._credentials = role.credentials()  # type: ignore[attr-defined]
    return _boto3_session(core, region)


def warm_models() -> None:
    """Parse the models an SQS client needs now, without a call or credentials: a
    process that forks consumers does it once for all of them."""
    _boto3_session(_core_with_loader(), "us-east-1", "warm", "warm").client("sqs")


def _core_with_loader() -> botocore.session.Session:
    core = botocore.session.Session()
    core.register_component("data_loader", _LOADER)
    return core


def _boto3_session(core: botocore.session.Session, region: str, key_id: str | None = None,
                   secret: str | None = None) -> boto3.session.Session:  # fmt: skip
    session = boto3.session.Session(aws_access_key_id=key_id, aws_secret_access_key=secret,
                                    region_name=region, botocore_session=core)  # fmt: skip
    # Every boto3 session adds its data folder to the loader's search path: once is enough.
    _LOADER.search_paths[:] = list(dict.fromkeys(_LOADER.search_paths))
    return session
