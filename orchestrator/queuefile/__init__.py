"""Queues as code: a file of queues read, checked and compared with the queues MongoDB has.

Pure (no Store, no Sqs): `queue apply` checks the whole file, naming every problem with
its line, before any connection is made; `plan` says what applying it changes; `dump`
writes queues in the same format (`queue export`). README, "Queues as code".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import yaml

from orchestrator import validate
from orchestrator.errors import QueueFileInvalid
from orchestrator.models import QueueRecord
from orchestrator.queuefile.reader import load
from orchestrator.queuefile.specs import (
    DEFAULT_MAX_RECEIVE_COUNT,
    DEFAULT_VISIBILITY_TIMEOUT,
    TUNING,
    Change,
    Create,
    Spec,
    text,
)

__all__ = ["DEFAULT_MAX_RECEIVE_COUNT", "DEFAULT_VISIBILITY_TIMEOUT", "TUNING", "Change",
           "Create", "Spec", "dump", "entry", "load", "plan", "text"]  # fmt: skip


def plan(specs: Sequence[Spec], records: Iterable[QueueRecord], prune: bool, *,
         default_region: str) -> list[Change]:  # fmt: skip
    """What applying the file changes, in order: the file's queues, then (`prune`) the
    removal of those it lacks. QueueFileInvalid names what cannot change in place.
    `default_region`: an older document's (None) region, AWS_REGION."""
    existing = {record.name: record for record in records}
    changes: list[Change] = []
    problems: list[str] = []
    for spec in specs:
        record = existing.get(spec.name)
        if record is None:
            problems += _taken(spec, existing)
            changes.append(Change("create" if spec.create else "adopt", spec.name, spec=spec))
            continue
        fixed = _fixed(spec, record, default_region)
        problems += [f"{where}: queue {spec.name!r}: {what} cannot change in place: remove the "
                     "queue (queue delete, or apply --prune without it) and apply again"
                     for where, what in fixed]  # fmt: skip
        updates = _updates(spec, record)
        if updates:
            changes.append(Change("update", spec.name, spec, record, tuple(updates)))
    if problems:
        raise QueueFileInvalid(problems)
    if prune:
        named = {spec.name for spec in specs}
        changes += [Change("remove", r.name, record=r) for r in existing.values()
                    if r.name not in named]  # fmt: skip
    return changes


def _taken(spec: Spec, existing: dict[str, QueueRecord]) -> list[str]:
    """A new queue may not be named like a queue's DLQ, nor get a DLQ named like a queue
    (deleting one would delete the other in SQS): found here, not half-way through."""
    owner = next((r.name for r in existing.values() if r.dlq_name == spec.name), None)
    if owner is not None:
        return [f"{spec.at('name')}: name {spec.name!r} is taken: it is queue {owner!r}'s DLQ"]
    dlq = validate.dlq_name(spec.name) if spec.create and spec.create.dlq else None
    if dlq is not None and dlq in existing:
        return [f"{spec.at('create')}: queue {spec.name!r}'s DLQ name {dlq!r} is taken by a "
                "queue"]  # fmt: skip
    return []


def _fixed(spec: Spec, record: QueueRecord, default_region: str) -> list[tuple[str, str]]:
    """(where, what) for each difference that would need the queue made anew."""
    if (spec.create is not None) != record.managed:
        was, now = ("created", "adopted") if record.managed else ("adopted", "created")
        return [(spec.at("create" if spec.create else "adopt"), f"{was} → {now}")]
    if spec.create is not None:
        c, had_dlq = spec.create, record.dlq_name is not None
        out: list[tuple[str, Any, Any]] = []
        if c.visibility_timeout is not None and c.visibility_timeout != record.visibility_timeout:
            out.append(("visibilityTimeout", record.visibility_timeout, c.visibility_timeout))
        if c.dlq is not None and c.dlq != had_dlq:
            out.append(("dlq", had_dlq, c.dlq))
        wanted = c.max_receive_count
        if c.dlq and had_dlq and wanted is not None and wanted != record.max_receive_count:
            out.append(("maxReceiveCount", record.max_receive_count, wanted))
        return [(spec.at("create"), f"create.{key} {text(old)} → {text(new)}")
                for key, old, new in out]  # fmt: skip
    ref = spec.ref
    assert ref is not None
    had = (record.account, record.region or default_region, record.sqs_name)
    if had != (ref.account, ref.region, ref.name):
        return [(spec.at("adopt"), f"the queue it adopts, {_where(*had)} → "
                 f"{_where(ref.account, ref.region, ref.name)}")]  # fmt: skip
    return []


def _where(account: str | None, region: str, name: str) -> str:
    return f"{name} (account {account or '?'}, {region})"


def _updates(spec: Spec, record: QueueRecord) -> list[tuple[str, Any, Any]]:
    out = [(validate.TUNABLE[attribute].field, getattr(record, attribute), value)
           for attribute, value in spec.tuning.items()
           if getattr(record, attribute) != value]  # fmt: skip
    if spec.role_arn_given and spec.role_arn != record.role_arn:
        out.append(("roleArn", record.role_arn, spec.role_arn))
    return out


def dump(records: Iterable[QueueRecord], default_region: str) -> str:
    """The queues as a file `load` reads back: every field, so that applying it to the
    same queues changes nothing."""
    entries = [entry(record, default_region) for record in records]
    return str(yaml.safe_dump({"queues": entries}, sort_keys=False, allow_unicode=True))


def entry(record: QueueRecord, default_region: str) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": record.name}
    if record.managed:
        create: dict[str, Any] = {"visibilityTimeout": record.visibility_timeout,
                                  "dlq": record.dlq_name is not None}  # fmt: skip
        if record.dlq_name is not None:
            create["maxReceiveCount"] = record.max_receive_count or DEFAULT_MAX_RECEIVE_COUNT
        doc["create"] = create
    else:
        doc["adopt"] = record.queue_url
        doc["region"] = record.region or default_region
        if record.role_arn:
            doc["roleArn"] = record.role_arn
    for attribute, tunable in validate.TUNABLE.items():
        doc[tunable.field] = getattr(record, attribute)
    return doc
