"""Queue administration: the operations behind `orchestrator queue …` (and later the API).

Each operation validates everything first, so that bad input changes nothing,
then writes desired state through the Store and SQS through Sqs.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from orchestrator import tracing, validate
from orchestrator.backends.batches import BATCH, message_size, sized_batches
from orchestrator.backends.protocols import SyncSqs, SyncStore
from orchestrator.backends.sqs import Sqs
from orchestrator.backends.store import Store
from orchestrator.config import Settings
from orchestrator.errors import (
    AlreadyRunning,
    InvalidValue,
    NameTaken,
    NoDeadLetterQueue,
    QueueExists,
    QueueNotFound,
    ServiceUnavailable,
)
from orchestrator.models import Failure, QueueDepth, QueueRecord, SqsMessage, utcnow
from orchestrator.validate import TUNABLE

# One operation on a queue's DLQ at a time, fleet-wide: a `locks` document that lasts this
# long, renewed every third of it while the operation runs; a crashed holder's lock
# frees itself after it (its scan's messages are back sooner: SCAN_HIDE_SECONDS).
DLQ_LOCK_SECONDS = 60


@dataclass(frozen=True)
class DeadLetter:
    """A message in a dead-letter queue, with the last failure kept for it."""

    message: SqsMessage
    failure: Failure | None

    def to_json(self, preview: int = 2048) -> dict[str, Any]:
        body = self.message.body
        return {
            "messageId": self.message.message_id,
            "body": body[:preview],
            "bodyTruncated": len(body) > preview,
            "receiveCount": self.message.receive_count,
            "group": self.message.group or None,
            "lastFailure": self.failure.to_json() if self.failure else None,
        }


@dataclass(frozen=True)
class DlqLook:
    """What a look at a DLQ found, and about how many messages the DLQ held when asked
    (fewer found than held and asked for: in a FIFO DLQ, SQS's group lock; README)."""

    letters: list[DeadLetter]
    held: int


@dataclass(frozen=True)
class DlqChange:
    """What a redrive or a delete of DLQ messages did: how many it moved or deleted (None:
    all, by SQS's purge, which does not count) and the ids asked for but not found."""

    count: int | None
    not_found: list[str]


@dataclass(frozen=True)
class QueueView:
    """A queue as listings show it: its settings, SQS depth and assigned worker."""

    queue: QueueRecord
    depth: QueueDepth | None  # None when SQS has no such queue
    worker: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.queue.name,
            "queueUrl": self.queue.queue_url,
            "concurrency": self.queue.concurrency,
            "handler": self.queue.handler,
            "paused": self.queue.paused,
            "visible": self.depth.visible if self.depth else None,
            "inFlight": self.depth.in_flight if self.depth else None,
            "worker": self.worker,
        }


class QueueAdmin:
    """Creates, changes and inspects managed queues in MongoDB and SQS together.

    The clients come from factories, called on first use: input is validated
    before any connection is made, so bad input fails fast (exit 2) even when a
    service is down, and starts no server.
    """

    def __init__(
        self, settings: Settings, store: Callable[[], Store], sqs: Callable[[], Sqs]
    ) -> None:
        self.settings = settings
        self._store = store
        self._sqs = sqs

    @property
    def store(self) -> Store:
        return self._store()

    @property
    def sqs(self) -> Sqs:
        return self._sqs()

    def create(
        self,
        name: str,
        *,
        dlq: bool = False,
        max_receive_count: int | None = None,
        visibility_timeout: int = 30,
        **settings: Any,
    ) -> QueueRecord:
        """Create the queue in SQS and MongoDB. `settings` are any of the tunable ones
        (concurrency=4, rate_limit=50.0, …; see TUNABLE), checked like `update`'s."""
        s = self.settings
        given = {key: value for key, value in settings.items() if value is not None}
        tuned = self._checked({"concurrency": s.default_concurrency,
                               "handler": s.default_handler, **given})  # fmt: skip
        record = QueueRecord(
            name=validate.queue_name(name),
            queue_url="",
            visibility_timeout=validate.visibility_timeout(visibility_timeout),
            dlq_name=validate.dlq_name(name) if dlq else None,
            max_receive_count=(
                validate.max_receive_count(5 if max_receive_count is None else max_receive_count)
                if dlq
                else None
            ),
            **tuned,
        )
        # Checked before touching SQS: creating an existing queue could change its attributes.
        if self.store.find_queue(name) is not None:
            raise QueueExists(name)
        self._check_dlq_names(record)
        return self.store.insert_queue(create_in_sqs(self.sqs, record))

    def _checked(self, settings: dict[str, Any]) -> dict[str, Any]:
        """The tunable settings, each checked (InvalidValue names the first bad one)."""
        unknown = set(settings) - TUNABLE.keys()
        if unknown:
            raise TypeError(f"not a tunable queue setting: {', '.join(sorted(unknown))}")
        return {key: TUNABLE[key].check(self.settings, value) for key, value in settings.items()}

    def _check_dlq_names(self, record: QueueRecord) -> None:
        """No queue may be another's DLQ: deleting one would delete the other in SQS."""
        owner = self.store.find_queue_by_dlq(record.name)
        if owner:
            raise NameTaken(f"name '{record.name}' is taken: it is queue '{owner.name}'s DLQ")
        if record.dlq_name and self.store.find_queue(record.dlq_name):
            raise NameTaken(f"DLQ name '{record.dlq_name}' is taken by a managed queue")


    def delete(self, name: str) -> QueueRecord:
        """Delete the queue (and its DLQ) from SQS, then forget it.

        SQS first: should that fail, the document remains and the command can be
        run again; the other order could leave an SQS queue nothing manages.
        """
        queue = self.store.get_queue(name)
        for url in (queue.queue_url, queue.dlq_url):
            if url:
                # Already gone from SQS is the outcome the user asked for.
                with contextlib.suppress(QueueNotFound):
                    self.sqs.delete_queue(url)
        self.store.delete_queue(name)
        return queue

    def views(self) -> list[QueueView]:
        workers = self.store.assigned_workers()  # the first shard's worker is shown
        return [
            QueueView(q, self._depth_or_none(q.queue_url), (workers.get(q.queue_url) or [""])[0]
                      or None)
            for q in self.store.list_queues()
        ]

    def _depth_or_none(self, url: str) -> QueueDepth | None:
        try:
            return self.sqs.depth(url)
        except QueueNotFound:
            return None

    def depth(self, name: str) -> QueueDepth:
        return self.sqs.depth(self.store.get_queue(name).queue_url)

    def update(self, name: str, **changes: Any) -> QueueRecord:
        """Change several settings at once (concurrency=4, rate_limit=None for no limit,
        …; see TUNABLE): all are validated before any is written."""
        checked = self._checked(changes)
        fields = {TUNABLE[key].field: value for key, value in checked.items()}
        return self.store.update_queue(name, fields) if fields else self.store.get_queue(name)

    def set_concurrency(self, name: str, value: int) -> QueueRecord:
        validate.concurrency(value, self.settings.max_concurrency)
        return self.store.update_queue(name, {"concurrency": value})

    def set_handler(self, name: str, path: str) -> QueueRecord:
        validate.handler_path(path, self.settings.handler_prefixes)
        return self.store.update_queue(name, {"handler": path})

    def set_paused(self, name: str, paused: bool) -> QueueRecord:
        return self.store.update_queue(name, {"paused": paused})

    def purge(self, name: str) -> None:
        self.sqs.purge(self.store.get_queue(name).queue_url)

    def redrive(self, name: str, ids: Iterable[str] | None = None) -> DlqChange:
        """Move the queue's DLQ messages (only `ids`, when given) back to it."""
        chosen = None if ids is None else _unique(validate.message_id(i) for i in ids)
        queue, dlq_url = self._with_dlq(name)
        with self.dlq_lock(name):
            moved = self.sqs.redrive(dlq_url, queue.queue_url, self._dlq_span(dlq_url),
                                     None if chosen is None else set(chosen))  # fmt: skip
        return DlqChange(len(moved), _missing(chosen, moved))

    def dlq_purge(self, name: str, ids: Iterable[str] | None = None) -> DlqChange:
        """Delete the DLQ's messages (only `ids`, when given); the count is None for all
        (SQS's purge does not say)."""
        chosen = None if ids is None else _unique(validate.message_id(i) for i in ids)
        _, dlq_url = self._with_dlq(name)
        with self.dlq_lock(name):
            if chosen is None:
                self.sqs.purge(dlq_url)
                return DlqChange(None, [])
            deleted = self.sqs.delete_some(dlq_url, set(chosen), self._dlq_span(dlq_url))
        return DlqChange(len(deleted), _missing(chosen, deleted))

    def dlq(self, name: str, limit: int) -> DlqLook:
        """Up to `limit` of the DLQ's messages, each with its last failure when one was
        kept. Reading a message is a receive: its receive count goes up by one."""
        wanted = validate.dlq_limit(limit)
        queue, dlq_url = self._with_dlq(name)
        with self.dlq_lock(name):
            held = self.sqs.depth(dlq_url).visible
            found = self.sqs.peek(dlq_url, wanted)
        failures = self.store.last_failures(queue.name, [m.message_id for m in found])
        return DlqLook([DeadLetter(m, failures.get(m.message_id)) for m in found], held)

    @contextlib.contextmanager
    def dlq_lock(self, name: str, seconds: float = DLQ_LOCK_SECONDS) -> Iterator[None]:
        """Hold queue `name`'s DLQ for one operation, fleet-wide (each moves its messages
        about: a look beside a redrive would leave messages behind). AlreadyRunning (CLI
        exit 1, API 409) while another process holds it."""
        store, key = self.store, f"dlq:{name}"
        holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        now = utcnow()
        held = store.take_lock(key, holder, now, now + timedelta(seconds=seconds))
        if held is not None:
            raise AlreadyRunning(
                f"an operation on queue '{name}'s DLQ is already running (by {held[0]}; "
                f"its lock lasts until {held[1]:%H:%M:%S} UTC unless renewed): try again "
                "when it ends")
        stop = threading.Event()
        renewer = threading.Thread(target=_renew, args=(store, key, holder, seconds, stop),
                                   name="dlq-lock", daemon=True)  # fmt: skip
        renewer.start()
        try:
            yield
        finally:
            stop.set()
            renewer.join()
            with contextlib.suppress(ServiceUnavailable):  # else it expires by itself
                store.release_lock(key, holder)

    def _with_dlq(self, name: str) -> tuple[QueueRecord, str]:
        queue = self.store.get_queue(name)
        if not queue.dlq_url:
            raise NoDeadLetterQueue(name)
        return queue, queue.dlq_url

    def _dlq_span(self, dlq_url: str) -> int:
        """How many DLQ messages an operation looks at: what is there now (at least a
        batch: the count is approximate), not what fails back into the DLQ meanwhile."""
        return max(self.sqs.depth(dlq_url).visible, BATCH)

    def send(
        self,
        name: str,
        count: int,
        body: str | None = None,
        progress: Callable[[int], None] = lambda n: None,
        *,
        group_id: str | None = None,
        groups: int | None = None,
        trace: bool = False,
    ) -> int:
        """Send `count` test messages in batches of up to 10 within SQS's limit for a batch;
        default bodies are {"seq": i}.

        On a FIFO queue the messages go to group `group_id` (default "default"), or
        round-robin over `groups` groups named g0, g1, ... With `trace`, each message
        carries a `traceparent` attribute (W3C trace context): its handler's span joins
        that trace.
        """
        validate.send_count(count)
        if body is not None:  # attributes count toward SQS's limit too (all of one size)
            validate.message_body(body, validate.attributes_size(_traceparent()) if trace else 0)
        group_of = self._groups(name, group_id, groups)
        url = self.store.get_queue(name).queue_url
        messages = ((i, _seq_body(i) if body is None else body, _traceparent() if trace else None)
                    for i in range(count))  # fmt: skip
        for batch in sized_batches(messages, lambda m: message_size(m[1], m[2])):
            attributes = [m[2] for m in batch] if trace else None
            self.sqs.send_batch(url, [m[1] for m in batch], attributes,
                                [group_of(m[0]) for m in batch])  # fmt: skip
            progress(len(batch))
        return count

    @staticmethod
    def _groups(name: str, group_id: str | None, groups: int | None) -> Callable[[int], str]:
        """Which FIFO message group the i-th message goes to."""
        if group_id is not None and groups is not None:
            raise InvalidValue("give either a group id or a number of groups, not both")
        if (group_id is not None or groups is not None) and not name.endswith(".fifo"):
            raise InvalidValue(f"queue {name!r} is not a FIFO queue: message groups are for "
                               "FIFO queues (names ending in .fifo)")  # fmt: skip
        if groups is not None:
            validate.positive(groups, "the number of groups")
            return lambda i: f"g{i % groups}"
        fixed = validate.group_id(group_id) if group_id is not None else "default"
        return lambda i: fixed

    def sync(self) -> list[QueueRecord]:
        """DB → SQS: create every queue whose SQS queue is missing, keeping its `_id`."""
        return sync_queues(self.store, self.sqs)


def create_in_sqs(sqs: SyncSqs, record: QueueRecord) -> QueueRecord:
    """Create the queue (and its DLQ) in SQS; the record with their URLs."""
    url, dlq_url = sqs.create_queue(
        record.name,
        visibility_timeout=record.visibility_timeout,
        dlq_name=record.dlq_name,
        max_receive_count=record.max_receive_count,
    )
    return replace(record, queue_url=url, dlq_url=dlq_url)


def sync_queues(store: SyncStore, sqs: SyncSqs) -> list[QueueRecord]:
    """DB → SQS: create every queue whose SQS queue is missing, keeping its `_id`."""
    existing = set(sqs.list_queue_urls())
    created = []
    for queue in store.list_queues():
        missing_dlq = queue.dlq_name is not None and queue.dlq_url not in existing
        if queue.queue_url in existing and not missing_dlq:
            continue
        fresh = create_in_sqs(sqs, queue)
        assert queue.id is not None
        store.mark_synced(queue.id, fresh.queue_url, fresh.dlq_url)
        created.append(fresh)
    return created


def _renew(store: Store, key: str, holder: str, seconds: float, stop: threading.Event) -> None:
    """Keep a lock while its operation runs: renew it every third of its length (a renewal
    MongoDB missed is tried again at the next; a lock taken over meanwhile is not ours)."""
    while not stop.wait(seconds / 3):
        try:
            if not store.renew_lock(key, holder, utcnow() + timedelta(seconds=seconds)):
                return
        except ServiceUnavailable:
            continue


def _unique(ids: Iterable[str]) -> list[str]:
    """The ids in the order given, each once."""
    return list(dict.fromkeys(ids))


def _missing(asked: list[str] | None, found: list[str]) -> list[str]:
    """The ids asked for that an operation did not find (in a FIFO DLQ, also those SQS's
    group lock kept from it: README, "Dead letters")."""
    done = set(found)
    return [i for i in asked or [] if i not in done]


def _traceparent() -> dict[str, dict[str, str]]:
    return {tracing.TRACEPARENT: {"DataType": "String", "StringValue": tracing.new_traceparent()}}


def _seq_body(i: int) -> str:
    """The default body of the i-th test message."""
    return json.dumps({"seq": i})
