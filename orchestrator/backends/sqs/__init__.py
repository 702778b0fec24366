"""Sqs: every SQS request of the project. This package alone imports boto3."""

from __future__ import annotations

import functools
import json
import os
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from orchestrator import queueref
from orchestrator.backends.batches import BATCH as BATCH  # the consumer's engine uses it
from orchestrator.backends.batches import DlqScan, message_size, sized_batches
from orchestrator.backends.sqs.sessions import Family, make_session
from orchestrator.config import Settings, redact_uri, scrub
from orchestrator.errors import AlreadyRunning, ConfigError, QueueNotFound, ServiceUnavailable
from orchestrator.metrics import Meter
from orchestrator.models import QueueDepth, QueueRecord, SqsMessage

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.literals import QueueAttributeNameType

P = ParamSpec("P")
R = TypeVar("R")

# Who a client acts for, and so which IAM policy of docs/iam/ it runs under: the
# daemon's roles (masters, consumers) or an operator (the CLI, the API beside a master).
Caller = Literal["daemon", "admin"]
OPS_LOG_ENV = "ORCHESTRATOR_SQS_OPS_LOG"

MISSING_QUEUE_CODES = {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}
PURGE_IN_PROGRESS_CODES = {"AWS.SimpleQueueService.PurgeQueueInProgress", "PurgeQueueInProgress"}
SEND_ATTEMPTS = 3
DLQ_RETENTION_SECONDS = 14 * 86400  # the most SQS keeps a message: time to look at poison


def translated(method: Callable[P, R]) -> Callable[P, R]:
    """Turn botocore errors into QueueNotFound, AlreadyRunning (a purge within SQS's
    minute) or ServiceUnavailable naming the endpoint."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        sqs = args[0]
        assert isinstance(sqs, Sqs)
        try:
            return method(*args, **kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = error.get("Code", "")
            if code in MISSING_QUEUE_CODES:
                raise QueueNotFound(_queue_name(args), "SQS") from exc
            if code in PURGE_IN_PROGRESS_CODES:
                raise AlreadyRunning(f"queue '{_queue_name(args)}' was purged less than 60 s "
                                     "ago; SQS allows one purge a minute: try again then") from exc
            raise ServiceUnavailable(sqs.scrub(
                f"SQS at {sqs.address} refused {exc.operation_name}: {code}: {error.get('Message')}"
            )) from exc
        except BotoCoreError as exc:  # its text may quote the endpoint URL, password and all
            raise ServiceUnavailable(sqs.scrub(f"SQS at {sqs.address} failed: {exc}")) from exc

    return wrapper


def _queue_name(args: Iterable[Any]) -> str:
    """The queue a failed call was about, from its first string argument (a name or URL)."""
    for arg in args:
        if isinstance(arg, str):
            return queueref.name_of(arg)
    return "?"


class OpsLog:
    """Appends one JSON line {"operation", "caller", "pid"} to a file the first time this
    process makes each SQS operation for each caller; after that, a set lookup. One short
    O_APPEND write is atomic: every process of a test session appends to the same file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.seen: set[tuple[str, str]] = set()

    def record(self, operation: str, caller: str) -> None:
        key = (operation, caller)
        if key in self.seen:
            return
        self.seen.add(key)  # two threads racing here write a line twice: harmless
        line = json.dumps({"operation": operation, "caller": caller, "pid": os.getpid()})
        # A failed write raises, failing the call: a record silently missing would let
        # the policy check pass on less than the product did.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)


@functools.cache
def ops_log(path: str) -> OpsLog:
    """The process's one OpsLog for `path`, shared by its clients."""
    return OpsLog(path)


class Sqs:
    """Owns the boto3 SQS client; returns plain values and typed records."""

    def __init__(
        self,
        endpoint: str | None,
        region: str,
        access_key_id: str = "",
        secret_access_key: str = "",
        *,
        connect_timeout: float = 5,
        read_timeout: float = 30,  # above the 20 s long poll
        attempts: int = 3,
        meter: Meter | None = None,
        caller: Caller | None = None,
        role_arn: str | None = None,
        _roles: Family[Sqs] | None = None,
    ) -> None:
        """`caller`: None for the tests' and scripts' own clients, whose calls are not
        the product's; the product's clients are made by `connect`, which requires it.
        `role_arn`: the calls act as that IAM role (assumed through STS)."""
        self._endpoint = endpoint or ""
        self.region, self.role_arn = region, role_arn
        self.address = redact_uri(endpoint) if endpoint else f"AWS ({region})"
        self._options: dict[str, Any] = dict(
            access_key_id=access_key_id, secret_access_key=secret_access_key,
            connect_timeout=connect_timeout, read_timeout=read_timeout, attempts=attempts,
            meter=meter, caller=caller)  # fmt: skip
        self._family: Family[Sqs] = _roles or Family()
        config = Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"mode": "standard", "max_attempts": attempts},
            max_pool_connections=50,
        )
        try:
            role = self._family.role(role_arn, self._sts) if role_arn else None
            session = make_session(role, region, access_key_id, secret_access_key)
            self.client: SQSClient = session.client("sqs", endpoint_url=endpoint, config=config)
        except (ValueError, BotoCoreError) as exc:  # e.g. "Invalid endpoint: http://"
            raise ConfigError(
                self.scrub(f"setting AWS_SQS_ENDPOINT or AWS_REGION is not usable: {exc}")
            ) from exc
        if meter is not None:
            # Every HTTP attempt, retries included: what SQS bills.
            def count(event_name: str, **_: Any) -> None:
                meter.sqs_request(event_name.rsplit(".", 1)[-1])

            self.client.meta.events.register("before-send.sqs", count)
        path = os.environ.get(OPS_LOG_ENV)
        if caller is not None and path:
            # Why: docs/iam/ holds the IAM policies each caller runs under, and an action
            # missing from one shows only in production, as AccessDenied. The test suite
            # sets this variable, records every operation its daemons, CLI and API make,
            # and fails when docs/iam/<caller>.json does not allow one (tests/iam.py).
            # Unset, as in production: no hook at all. before-call comes once per API
            # call (not per retry), before it is sent, whatever its outcome.
            log = ops_log(path)

            def record(model: Any, **_: Any) -> None:
                log.record(model.name, caller)

            self.client.meta.events.register("before-call.sqs", record)

    def at(self, region: str | None, role_arn: str | None = None) -> Sqs:
        """The Sqs for a queue in `region` (None: this one's), reached through `role_arn`
        (None: this one's own credentials): this one, or one made on first use and kept
        (one per region and role per process)."""
        key = (region or self.region, role_arn)
        if key == (self.region, self.role_arn):
            return self
        return self._family.get(key, lambda: Sqs(self._endpoint or None, key[0],
                                                 role_arn=role_arn, _roles=self._family,
                                                 **self._options))  # fmt: skip

    def of(self, queue: QueueRecord) -> Sqs:
        """The Sqs for this queue's calls: its region, its role."""
        return self.at(queue.region, queue.role_arn)

    def _sts(self) -> Any:
        """An STS client with this process's own credentials (where local servers serve
        SQS they serve STS too: the same endpoint)."""
        opts = self._options
        session = make_session(None, self.region, opts["access_key_id"],
                               opts["secret_access_key"])  # fmt: skip
        return session.client("sts", endpoint_url=self._endpoint or None,
                              config=Config(connect_timeout=opts["connect_timeout"],
                                            read_timeout=opts["read_timeout"]))  # fmt: skip

    def scrub(self, text: str) -> str:
        """`text` (about this client's calls) without the endpoint's credentials."""
        return scrub(text, self._endpoint)

    @classmethod
    def connect(
        cls,
        settings: Settings,
        endpoint: str | None,
        meter: Meter | None = None,
        *,
        caller: Caller,
        **options: Any,
    ) -> Sqs:
        """An Sqs for these settings at `endpoint` (a local server's, or None for AWS),
        acting for `caller` (which IAM policy it needs: docs/iam/)."""
        return cls(endpoint, settings.aws_region, settings.aws_access_key_id,
                   settings.aws_secret_access_key, meter=meter, caller=caller,
                   **options)  # fmt: skip

    # --- queues ----------------------------------------------------------------

    @translated
    def create_queue(
        self,
        name: str,
        *,
        visibility_timeout: int,
        dlq_name: str | None = None,
        max_receive_count: int | None = None,
    ) -> tuple[str, str | None]:
        """Create the queue (and its DLQ with a redrive policy); return both URLs."""
        attributes: dict[QueueAttributeNameType, str] = {
            "VisibilityTimeout": str(visibility_timeout)
        }
        fifo = name.endswith(".fifo")
        if fifo:
            attributes["FifoQueue"] = "true"
        dlq_url = None
        if dlq_name:
            dlq_attrs: dict[QueueAttributeNameType, str] = {
                "MessageRetentionPeriod": str(DLQ_RETENTION_SECONDS)
            }
            if fifo:
                dlq_attrs["FifoQueue"] = "true"
            dlq_url = self.client.create_queue(QueueName=dlq_name, Attributes=dlq_attrs)["QueueUrl"]
            arn = self.client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])
            attributes["RedrivePolicy"] = json.dumps(
                {
                    "deadLetterTargetArn": arn["Attributes"]["QueueArn"],
                    "maxReceiveCount": str(max_receive_count or 5),
                }
            )
        url = self.client.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        return url, dlq_url

    @translated
    def find_queue_url(self, name: str, account: str | None = None) -> str | None:
        """The URL of queue `name` (in `account`: another's, reached through a role or a
        queue policy), or None when SQS has none."""
        options = {"QueueOwnerAWSAccountId": account} if account else {}
        try:
            return self.client.get_queue_url(QueueName=name, **options)["QueueUrl"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in MISSING_QUEUE_CODES:
                return None
            raise

    @translated
    def attributes(self, url: str) -> dict[str, str]:
        """All the queue's attributes (VisibilityTimeout, RedrivePolicy, QueueArn, ...)."""
        found = self.client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
        return {str(key): value for key, value in found["Attributes"].items()}

    @translated
    def delete_queue(self, url: str) -> None:
        self.client.delete_queue(QueueUrl=url)

    @translated
    def list_queue_urls(self, page_size: int = 1000) -> list[str]:
        """Every queue URL, across all pages of ListQueues."""
        pages = self.client.get_paginator("list_queues").paginate(
            PaginationConfig={"PageSize": page_size}
        )
        return [url for page in pages for url in page.get("QueueUrls", [])]

    @translated
    def depth(self, url: str) -> QueueDepth:
        attrs = self.client.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        return QueueDepth(
            visible=int(attrs.get("ApproximateNumberOfMessages", 0)),
            in_flight=int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)),
            delayed=int(attrs.get("ApproximateNumberOfMessagesDelayed", 0)),
        )

    @translated
    def purge(self, url: str) -> None:
        self.client.purge_queue(QueueUrl=url)

    # --- messages --------------------------------------------------------------

    @translated
    def send_batch(
        self,
        url: str,
        bodies: list[str],
        attributes: list[Any] | None = None,
        group_ids: list[str] | None = None,
        dedup_ids: list[str | None] | None = None,
        delay: int = 0,
    ) -> list[str]:
        """Send up to 10 messages, retrying entries SQS failed; raise if some never go; their
        message ids, in order. On a FIFO queue each goes to its `group_ids` entry (default:
        group "default") with its `dedup_ids` entry (default: a new one); on a standard
        queue a `group_ids` entry is its tenant (SQS fair queues); `delay`: seconds before
        they become visible (a FIFO queue takes only its own delay)."""
        fifo = url.endswith(".fifo")
        entries: dict[str, Any] = {}
        for i, body in enumerate(bodies):
            entry: dict[str, Any] = {"Id": str(i), "MessageBody": body}
            if attributes and attributes[i]:
                entry["MessageAttributes"] = attributes[i]
            if fifo:
                entry["MessageGroupId"] = group_ids[i] if group_ids else "default"
                entry["MessageDeduplicationId"] = (dedup_ids[i] if dedup_ids else None) or \
                    uuid.uuid4().hex
            elif group_ids:
                entry["MessageGroupId"] = group_ids[i]
            if delay:
                entry["DelaySeconds"] = delay
            entries[entry["Id"]] = entry
        ids: dict[str, str] = {}
        for _ in range(SEND_ATTEMPTS):
            result = self.client.send_message_batch(QueueUrl=url, Entries=list(entries.values()))
            ids.update((s["Id"], s["MessageId"]) for s in result.get("Successful", []))
            entries = {f["Id"]: entries[f["Id"]] for f in result.get("Failed", [])}
            if not entries:
                return [ids[str(i)] for i in range(len(bodies))]
        raise ServiceUnavailable(f"SQS at {self.address} did not accept {len(entries)} message(s)")

    @translated
    def redrive(self, dlq_url: str, url: str, limit: int, ids: set[str] | None = None) -> list[str]:
        """Move up to `limit` DLQ messages (only those of `ids`, when given) back to their
        queue: send first, then delete (never lose one); the ids moved. The limit keeps
        messages that fail straight back into the DLQ from being moved round and round.
        Messages looked at and not chosen are handed back when the scan ends."""
        moved: list[str] = []
        with DlqScan(self, dlq_url, limit) as scan:
            for batch in scan.batches():
                chosen = [m for m in batch if ids is None or m.message_id in ids]
                # Ten received messages may be more than a send batch takes in all.
                for part in sized_batches(chosen, lambda m: message_size(m.body,
                                                                         m.message_attributes)):
                    self.send_batch(
                        url,
                        [m.body for m in part],
                        [m.message_attributes or None for m in part],
                        # A FIFO message goes back to its own group (in the DLQ's order).
                        [m.group or "default" for m in part],
                    )
                if chosen:
                    self.delete_batch(dlq_url, [m.receipt for m in chosen])
                    scan.forget(m.message_id for m in chosen)
                    moved += [m.message_id for m in chosen]
                if ids is not None and len(moved) >= len(ids):
                    break
        return moved

    @translated
    def delete_some(self, dlq_url: str, ids: set[str], limit: int) -> list[str]:
        """Delete the DLQ messages of `ids` (looking at up to `limit`); the ids deleted."""
        deleted: list[str] = []
        with DlqScan(self, dlq_url, limit) as scan:
            for batch in scan.batches():
                chosen = [m for m in batch if m.message_id in ids]
                if chosen:
                    failed = self._delete(dlq_url, [m.receipt for m in chosen])
                    gone = [m.message_id for i, m in enumerate(chosen) if i not in failed]
                    scan.forget(gone)
                    deleted += gone
                if len(deleted) >= len(ids):
                    break
        return deleted

    @translated
    def peek(self, url: str, limit: int) -> list[SqsMessage]:
        """Up to `limit` messages, each read once and all handed back when the look ends
        (SQS has no other way to read a message: each look raises its receive count by
        one)."""
        found: list[SqsMessage] = []
        with DlqScan(self, url, limit) as scan:
            for batch in scan.batches():
                found += batch
        return found

    # --- consuming -------------------------------------------------------------

    @translated
    def receive(
        self, url: str, max_messages: int, wait_seconds: int, visibility_timeout: int | None = None
    ) -> list[SqsMessage]:
        """Long-poll up to `max_messages` (1..10), with receive counts and all attributes;
        hidden for `visibility_timeout` seconds (the queue's own when None)."""
        options: dict[str, Any] = {}
        if visibility_timeout is not None:
            options["VisibilityTimeout"] = visibility_timeout
        response = self.client.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=max(1, min(max_messages, BATCH)),
            WaitTimeSeconds=wait_seconds,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
            **options,
        )
        return [SqsMessage.from_sqs(m) for m in response.get("Messages", [])]

    @translated
    def delete_batch(self, url: str, receipts: list[str]) -> int:
        """Delete up to 10 messages; return how many SQS refused (they will come back)."""
        return len(self._delete(url, receipts))

    def _delete(self, url: str, receipts: list[str]) -> set[int]:
        """Delete up to 10 messages; the indexes of those SQS refused."""
        result = self.client.delete_message_batch(
            QueueUrl=url,
            Entries=[{"Id": str(i), "ReceiptHandle": r} for i, r in enumerate(receipts)],
        )
        return {int(f["Id"]) for f in result.get("Failed", [])}

    @translated
    def set_visibility(self, url: str, receipts: list[str], seconds: int) -> int:
        """Set the visibility of up to 10 received messages; return how many failed."""
        result = self.client.change_message_visibility_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": r, "VisibilityTimeout": seconds}
                for i, r in enumerate(receipts)
            ],
        )
        return len(result.get("Failed", []))
