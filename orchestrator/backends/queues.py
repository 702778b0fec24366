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

from orchestrator import queueref, tracing, validate
from orchestrator.backends.batches import BATCH, message_size, sized_batches
from orchestrator.backends.dlq import DeadLetter, DlqChange, DlqLook, missing, renew, unique
from orchestrator.backends.protocols import SyncSqs, SyncStore
from orchestrator.backends.sqs import Sqs
from orchestrator.backends.store import Store
from orchestrator.config import Settings
from orchestrator.errors import (
    AlreadyRunning,
    InvalidValue,
    MadeElsewhere,
    NameTaken,
    NoDeadLetterQueue,
    NotOurs,
    QueueExists,
    QueueNotFound,
    ServiceUnavailable,
)
from orchestrator.models import QueueDepth, QueueRecord, utcnow
from orchestrator.validate import TUNABLE

# One operation on a queue's DLQ at a time, fleet-wide: a `locks` document that lasts this
# long, renewed every third of it while the operation runs; a crashed holder's lock
# frees itself after it (its scan's messages are back sooner: SCAN_HIDE_SECONDS).
DLQ_LOCK_SECONDS = 60
__all__ = ["DeadLetter", "DlqChange", "DlqLook", "QueueAdmin", "QueueView"]


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
            "managed": self.queue.managed,
            "region": self.queue.region,
            "account": self.queue.account,
            "roleArn": self.queue.role_arn,
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
        self._check_not_made_elsewhere(record)
        made = create_in_sqs(self.sqs, replace(record, region=s.aws_region))
        return self.store.insert_queue(replace(made, account=queueref.account_of(made.queue_url)))

    def adopt(self, ref: str, *, name: str | None = None, region: str | None = None,
              role_arn: str | None = None, **settings: Any) -> QueueRecord:  # fmt: skip
        """Register a queue that exists in SQS (a URL or ARN; in `region` where its URL names
        none; reached as `role_arn`) without changing it: its DLQ is read from its redrive
        policy; the product never creates, changes, purges or deletes it (docs/design.md §3)."""
        s = self.settings
        where = queueref.parse(ref, s.aws_region, region)
        role = queueref.check_role_arn(role_arn) if role_arn else None
        own = validate.queue_name(name or where.name)
        if own.endswith(validate.FIFO_SUFFIX) != where.name.endswith(validate.FIFO_SUFFIX):
            raise InvalidValue(f"name {own!r} must end in .fifo exactly when the queue's "
                               f"does ({where.name!r}): FIFO handling follows the name")
        given = {key: value for key, value in settings.items() if value is not None}
        tuned = self._checked({"concurrency": s.default_concurrency,
                               "handler": s.default_handler, **given})  # fmt: skip
        if self.store.find_queue(own) is not None:
            raise QueueExists(own)
        sqs = self.sqs.at(where.region, role)
        url = where.url or sqs.find_queue_url(where.name, where.account)
        if url is None:
            raise QueueNotFound(f"{where.name} ({where.arn})", "SQS")
        if (known := self.store.find_queue_by_url(url)) is not None:
            raise NameTaken(f"{url} is already queue '{known.name}'")
        attributes = sqs.attributes(url)  # QueueNotFound when there is no such queue
        dlq_url, max_receive_count = _dead_letters(sqs, attributes, where.region)
        record = QueueRecord(
            name=own, queue_url=url, visibility_timeout=int(attributes["VisibilityTimeout"]),
            dlq_name=queueref.name_of(dlq_url) if dlq_url else None, dlq_url=dlq_url,
            max_receive_count=max_receive_count, managed=False, region=where.region,
            account=where.account, role_arn=role, **tuned)  # fmt: skip
        return self.store.insert_queue(record)

    def _check_not_made_elsewhere(self, record: QueueRecord) -> None:
        """A queue of that name made outside the product, with other attributes than create
        would give it: creating would change it (or fail), and a later delete would delete
        a team's queue. Refused, pointing at `adopt`."""
        url = self.sqs.find_queue_url(record.name)
        if url is None:
            return
        attributes = self.sqs.attributes(url)
        differ = [what for what, same in (
            (f"VisibilityTimeout {attributes.get('VisibilityTimeout')}",
             attributes.get("VisibilityTimeout") == str(record.visibility_timeout)),
            ("a redrive policy" if "RedrivePolicy" in attributes else "no redrive policy",
             ("RedrivePolicy" in attributes) == (record.dlq_name is not None)),
        ) if not same]  # fmt: skip
        if differ:
            raise MadeElsewhere(
                f"queue '{record.name}' already exists in SQS with other attributes "
                f"({', '.join(differ)}): to run it as it is, adopt it: "
                f"orchestrator queue adopt {url}")

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
        """Delete the queue (and its DLQ) from SQS, then forget it; an adopted queue is
        only forgotten (it and its DLQ are its team's).

        SQS first: should that fail, the document remains and the command can be
        run again; the other order could leave an SQS queue nothing manages.
        """
        queue = self.store.get_queue(name)
        for url in (queue.queue_url, queue.dlq_url) if queue.managed else ():
            if url:
                # Already gone from SQS is the outcome the user asked for.
                with contextlib.suppress(QueueNotFound):
                    self.sqs.of(queue).delete_queue(url)
        self.store.delete_queue(name)
        return queue

    def views(self) -> list[QueueView]:
        workers = self.store.assigned_workers()  # the first shard's worker is shown
        return [
            QueueView(q, self._depth_or_none(q), (workers.get(q.queue_url) or [""])[0] or None)
            for q in self.store.list_queues()
        ]

    def _depth_or_none(self, queue: QueueRecord) -> QueueDepth | None:
        try:
            return self.sqs.of(queue).depth(queue.queue_url)
        except QueueNotFound:
            return None

    def depth(self, name: str) -> QueueDepth:
        queue = self.store.get_queue(name)
        return self.sqs.of(queue).depth(queue.queue_url)

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

    def set_role(self, name: str, role_arn: str | None) -> QueueRecord:
        """The IAM role an adopted queue's calls act as (None: the fleet's own credentials)."""
        role = queueref.check_role_arn(role_arn) if role_arn else None
        if self.store.get_queue(name).managed and role:
            raise InvalidValue(f"queue '{name}' was created here: its calls need no role")
        return self.store.update_queue(name, {"roleArn": role})

    def set_paused(self, name: str, paused: bool) -> QueueRecord:
        return self.store.update_queue(name, {"paused": paused})

    def purge(self, name: str, yes_really: bool = False) -> None:
        """Delete every message of the queue (an adopted one's only with `yes_really`)."""
        queue = self.store.get_queue(name)
        _confirmed(queue, yes_really, "its messages")
        self.sqs.of(queue).purge(queue.queue_url)

    def redrive(self, name: str, ids: Iterable[str] | None = None) -> DlqChange:
        """Move the queue's DLQ messages (only `ids`, when given) back to it."""
        chosen = None if ids is None else unique(validate.message_id(i) for i in ids)
        queue, dlq_url = self._with_dlq(name)
        sqs = self.sqs.of(queue)
        with self.dlq_lock(name):
            moved = sqs.redrive(dlq_url, queue.queue_url, _dlq_span(sqs, dlq_url),
                                None if chosen is None else set(chosen))  # fmt: skip
        return DlqChange(len(moved), missing(chosen, moved))

    def dlq_purge(self, name: str, ids: Iterable[str] | None = None,
                  yes_really: bool = False) -> DlqChange:  # fmt: skip
        """Delete the DLQ's messages (only `ids`, when given; an adopted queue's only with
        `yes_really`); the count is None for all (SQS's purge does not say)."""
        chosen = None if ids is None else unique(validate.message_id(i) for i in ids)
        queue, dlq_url = self._with_dlq(name)
        _confirmed(queue, yes_really, "its DLQ's messages")
        sqs = self.sqs.of(queue)
        with self.dlq_lock(name):
            if chosen is None:
                sqs.purge(dlq_url)
                return DlqChange(None, [])
            deleted = sqs.delete_some(dlq_url, set(chosen), _dlq_span(sqs, dlq_url))
        return DlqChange(len(deleted), missing(chosen, deleted))

    def dlq(self, name: str, limit: int) -> DlqLook:
        """Up to `limit` of the DLQ's messages, each with its last failure when one was
        kept. Reading a message is a receive: its receive count goes up by one."""
        wanted = validate.dlq_limit(limit)
        queue, dlq_url = self._with_dlq(name)
        sqs = self.sqs.of(queue)
        with self.dlq_lock(name):
            held = sqs.depth(dlq_url).visible
            found = sqs.peek(dlq_url, wanted)
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
        renewer = threading.Thread(target=renew, args=(store, key, holder, seconds, stop),
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
            extra = validate.attributes_size(tracing.traceparent_attribute()) if trace else 0
            validate.message_body(body, extra)
        group_of = self._groups(name, group_id, groups)
        queue = self.store.get_queue(name)
        url, sqs = queue.queue_url, self.sqs.of(queue)
        messages = ((i, _seq_body(i) if body is None else body,
                     tracing.traceparent_attribute() if trace else None)
                    for i in range(count))  # fmt: skip
        for batch in sized_batches(messages, lambda m: message_size(m[1], m[2])):
            attributes = [m[2] for m in batch] if trace else None
            sqs.send_batch(url, [m[1] for m in batch], attributes,
                           [group_of(m[0]) for m in batch] if queue.fifo else None)
            progress(len(batch))
        if count and queue.id is not None:
            # Ring its doorbell: the leading master looks at it in its next cycle, not
            # after its idle schedule (minutes at 100,000 queues; docs/design.md §3).
            self.store.ring_doorbell(queue.id, utcnow())
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
    for queue in (q for q in store.list_queues() if q.managed):  # adopted: never recreated
        missing_dlq = queue.dlq_name is not None and queue.dlq_url not in existing
        if queue.queue_url in existing and not missing_dlq:
            continue
        fresh = create_in_sqs(sqs.of(queue), queue)
        assert queue.id is not None
        store.mark_synced(queue.id, fresh.queue_url, fresh.dlq_url)
        created.append(fresh)
    return created


def _dlq_span(sqs: Sqs, dlq_url: str) -> int:
    """How many DLQ messages an operation looks at: what is there now (at least a
    batch: the count is approximate), not what fails back into the DLQ meanwhile."""
    return max(sqs.depth(dlq_url).visible, BATCH)


def _confirmed(queue: QueueRecord, yes_really: bool, what: str) -> None:
    if not queue.managed and not yes_really:
        raise NotOurs(f"queue '{queue.name}' is adopted: {what} are its team's; purge them "
                      "only with --yes-really (API: \"yesReally\": true)")


def _dead_letters(sqs: Sqs, attributes: dict[str, str],
                  region: str) -> tuple[str | None, int | None]:  # fmt: skip
    """An adopted queue's DLQ URL and maxReceiveCount, from its RedrivePolicy (None, None
    without one). Its DLQ is in its region, maybe in another account."""
    if "RedrivePolicy" not in attributes:
        return None, None
    redrive = json.loads(attributes["RedrivePolicy"])
    dlq = queueref.parse(redrive["deadLetterTargetArn"], region)
    url = sqs.find_queue_url(dlq.name, dlq.account)
    return url, int(redrive["maxReceiveCount"])


def _seq_body(i: int) -> str:
    """The default body of the i-th test message."""
    return json.dumps({"seq": i})
