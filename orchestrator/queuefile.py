"""Queues as code: a file of queues read, checked and compared with the queues MongoDB has.

Pure (no Store, no Sqs): `queue apply` checks the whole file, naming every problem with
its line, before any connection is made; `plan` says what applying it changes; `dump`
writes queues in the same format (`queue export`). README, "Queues as code".
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from orchestrator import queueref, validate
from orchestrator.config import Settings
from orchestrator.errors import InvalidValue, QueueFileInvalid
from orchestrator.models import QueueRecord
from orchestrator.queueref import QueueRef

# The tuning fields: the file's key (PATCH's) → the QueueRecord attribute.
TUNING = {tunable.field: attribute for attribute, tunable in validate.TUNABLE.items()}
_KINDS: dict[str, type] = {
    "concurrency": int, "handler": str, "paused": bool, "processes": int, "batchSize": int,
    "batchWindow": float, "rateLimit": float, "priority": int, "adaptive": bool,
    "maxShards": int, "failureBodies": bool,
}  # fmt: skip
_CREATE_KINDS: dict[str, type] = {"visibilityTimeout": int, "dlq": bool, "maxReceiveCount": int}
_CREATE_CHECKS: dict[str, Callable[[int], int]] = {
    "visibilityTimeout": validate.visibility_timeout,
    "maxReceiveCount": validate.max_receive_count,
}
_ENTRY_KEYS = ("name", "create", "adopt", "region", "roleArn", *TUNING)
_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
DEFAULT_VISIBILITY_TIMEOUT = 30
DEFAULT_MAX_RECEIVE_COUNT = 5
_BAD = object()  # a value that failed its check (the problem is noted already)


@dataclass(frozen=True)
class Create:
    """A `create:` entry's SQS attributes; None: not written (a default on a new queue,
    left as it is on an existing one)."""

    visibility_timeout: int | None = None
    dlq: bool | None = None
    max_receive_count: int | None = None


@dataclass(frozen=True)
class Spec:
    """One queue of the file, checked: what it asks for, and where each key was written."""

    name: str
    source: str
    lines: dict[str, int]  # key → its line (1-based); "" → the entry's first line
    create: Create | None  # exactly one of create and adopt
    adopt: str | None  # the URL or ARN as written
    ref: QueueRef | None
    region: str | None  # as written (None: not written)
    role_arn: str | None
    role_arn_given: bool
    tuning: dict[str, Any]  # QueueRecord attribute → checked value; only those written

    def at(self, key: str = "") -> str:
        return f"{self.source}:{self.lines.get(key, self.lines[''])}"


@dataclass(frozen=True)
class Change:
    """One step of a plan: create, adopt, update (field by field) or remove a queue."""

    action: str  # "create", "adopt", "update" or "remove"
    name: str
    spec: Spec | None = None  # None for a removal
    record: QueueRecord | None = None  # None for a creation or an adoption
    updates: tuple[tuple[str, Any, Any], ...] = ()  # (file key, old, new)

    def lines(self) -> list[str]:
        """The plan's lines for it, `terraform plan`-like."""
        if self.action == "update":
            return [f"~ update {self.name} {key}: {text(old)} → {text(new)}"
                    for key, old, new in self.updates]  # fmt: skip
        if self.action == "remove":
            assert self.record is not None
            return [f"- remove {self.name} ({_removal(self.record)})"]
        assert self.spec is not None
        sets = ", ".join(f"{key}: {text(value)}" for key, value in _sets(self.spec))
        what = f"{self.action} {self.name}" + (f" ({self.spec.adopt})" if self.spec.adopt else "")
        return [f"+ {what}" + (f" with {sets}" if sets else "")]


def text(value: Any) -> str:
    """A value as the file would write it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return validate.number_text(value)
    return str(value)


def _sets(spec: Spec) -> list[tuple[str, Any]]:
    """What a new queue gets beside the defaults (a created one's SQS attributes always)."""
    out: list[tuple[str, Any]] = []
    if spec.create is not None:
        c = spec.create
        out.append(("visibilityTimeout", c.visibility_timeout or DEFAULT_VISIBILITY_TIMEOUT))
        out.append(("dlq", bool(c.dlq)))
        if c.dlq:
            out.append(("maxReceiveCount", c.max_receive_count or DEFAULT_MAX_RECEIVE_COUNT))
    else:
        out += [("region", spec.region)] if spec.region else []
        out += [("roleArn", spec.role_arn)] if spec.role_arn else []
    tuned = [(validate.TUNABLE[attr].field, value) for attr, value in spec.tuning.items()]
    return out + tuned


def _removal(record: QueueRecord) -> str:
    if not record.managed:
        return "adopted: only forgotten here, the queue stays in SQS"
    return "managed: deleted in SQS" + (f" with its DLQ {record.dlq_name}" if record.dlq_name
                                         else "")  # fmt: skip


def load(text: str, source: str, settings: Settings) -> list[Spec]:
    """The file's queues, every one checked; QueueFileInvalid names every problem."""
    reader = _Reader(source, settings)
    specs = reader.read(text)
    if reader.problems:
        raise QueueFileInvalid(reader.problems)
    return specs


class _Reader:
    """Reads a file's nodes (PyYAML's, which know their lines), noting every problem."""

    def __init__(self, source: str, settings: Settings) -> None:
        self.source = source
        self.settings = settings
        self.found: list[tuple[int, str]] = []  # (line, message)
        self.names: dict[str, int] = {}  # each queue's name → its line
        self._loader = yaml.SafeLoader("")

    @property
    def problems(self) -> list[str]:
        """Every problem, `FILE:LINE: message`, in the order of their lines."""
        return [f"{self.source}:{line}: {message}" for line, message in
                sorted(self.found, key=lambda p: p[0])]  # fmt: skip

    def problem(self, node: yaml.Node, message: str) -> None:
        self.found.append((node.start_mark.line + 1, message))

    def read(self, text: str) -> list[Spec]:
        root = self._compose(text)
        if root is None:
            return []
        top = self.mapping(root, "the file")
        if top is None:
            return []
        for key, (node, _) in top.items():
            if key != "queues":
                self.problem(node, f"unknown key {key!r}: the file has one key, queues")
        if "queues" not in top:
            self.problem(root, "the file has no `queues:` list")
            return []
        entries = top["queues"][1]
        if not isinstance(entries, yaml.SequenceNode):
            if self.value(entries) is not None:  # `queues:` alone: no queues
                self.problem(entries, "queues must be a list of queues (- name: …)")
            return []
        specs = [spec for node in entries.value if (spec := self.entry(node)) is not None]
        self._no_clashes(specs)
        return specs

    def _compose(self, text: str) -> yaml.Node | None:
        """The document's root node (SafeLoader's: tags build nothing unsafe)."""
        loader = yaml.SafeLoader(text)
        try:
            root: yaml.Node | None = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark else 1
            self.found.append((line, f"not valid YAML: {exc.problem}"))
            return None
        except yaml.YAMLError as exc:  # the reader's: a character YAML does not allow
            position = getattr(exc, "position", 0)
            line = text.count("\n", 0, position) + 1
            self.found.append((line, f"not valid YAML: {exc}"))
            return None
        finally:
            loader.dispose()
        if root is None:
            self.found.append((1, "the file is empty: it needs a `queues:` list"))
        return root

    def value(self, node: yaml.Node) -> Any:
        try:
            return self._loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:  # a tag SafeLoader builds nothing for
            self.problem(node, f"not a value: {exc.problem}")
            return _BAD

    def mapping(self, node: yaml.Node, what: str) -> dict[str, tuple[yaml.Node, yaml.Node]] | None:
        """Key → (key node, value node); a key given twice is a problem (PyYAML keeps
        the last silently)."""
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, f"{what} must be a mapping of keys to values")
            return None
        found: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            key = self.value(key_node)
            if not isinstance(key, str):
                self.problem(key_node, f"{what}: key {text(key)} is not a name")
            elif key in found:
                first = found[key][0].start_mark.line + 1
                self.problem(key_node, f"{what}: {key} is given twice (first on line {first})")
            else:
                found[key] = (key_node, value_node)
        return found

    def typed(self, key: str, node: yaml.Node, kind: type, nullable: bool = False) -> Any:
        """The value of the right type (an integer for a number), else _BAD."""
        value = self.value(node)
        if value is _BAD or (value is None and nullable):
            return value
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        # bool is an int in Python; `concurrency: true` is not a concurrency.
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            null = " or null" if nullable else ""
            shown = repr(value) if isinstance(value, (str, float)) else text(value)
            self.problem(node, f"{key} must be {_TYPE_NAMES[kind]}{null}, not {shown}")
            return _BAD
        return value

    def checked(self, node: yaml.Node, check: Callable[[], Any]) -> Any:
        try:
            return check()
        except InvalidValue as exc:
            self.problem(node, str(exc))
            return _BAD

    def entry(self, node: yaml.Node) -> Spec | None:
        keys = self.mapping(node, "a queue")
        if keys is None:
            return None
        for key, (key_node, _) in keys.items():
            if key not in _ENTRY_KEYS:
                self.problem(key_node, f"unknown key {key!r} (known: {', '.join(_ENTRY_KEYS)})")
        name = self.name(node, keys)
        kind = self.kind(node, keys, name)
        tuning = self.tuning(keys)
        if name is _BAD or kind is _BAD or _BAD in tuning.values():
            return None
        create, (adopt, ref, region, role_arn) = kind
        lines = {key: key_node.start_mark.line + 1 for key, (key_node, _) in keys.items()}
        return Spec(name, self.source, {"": node.start_mark.line + 1, **lines}, create, adopt,
                    ref, region, role_arn, "roleArn" in keys, tuning)  # fmt: skip

    def name(self, node: yaml.Node, keys: dict[str, tuple[yaml.Node, yaml.Node]]) -> Any:
        if "name" not in keys:
            self.problem(node, "a queue needs a name")
            return _BAD
        value_node = keys["name"][1]
        name = self.typed("name", value_node, str)
        if name is _BAD or self.checked(value_node, lambda: validate.queue_name(name)) is _BAD:
            return _BAD
        line = value_node.start_mark.line + 1
        if name in self.names:
            self.problem(value_node, f"queue {name!r} is already in the file (line "
                                     f"{self.names[name]})")  # fmt: skip
            return _BAD
        self.names[name] = line
        return name

    def kind(self, node: yaml.Node, keys: dict[str, tuple[yaml.Node, yaml.Node]], name: Any) -> Any:
        """(Create, (None,) * 4) or (None, (adopt, ref, region, roleArn)), else _BAD."""
        if ("create" in keys) == ("adopt" in keys):
            both = "create" in keys
            label = f"queue {name!r}" if isinstance(name, str) else "a queue"
            self.problem(keys["adopt"][0] if both else node, f"{label}: give either create or "
                         f"adopt{', not both' if both else ''}")  # fmt: skip
            return _BAD
        if "create" in keys:
            for key in ("region", "roleArn"):
                if key in keys:
                    self.problem(
                        keys[key][0],
                        f"{key} is for adopted queues; a created queue "
                        "lives in AWS_REGION, under the own credentials",
                    )
            create = self.create(keys["create"][1], name)
            bad = create is _BAD or "region" in keys or "roleArn" in keys
            return _BAD if bad else (create, (None, None, None, None))
        adopted = self.adopt(keys, name)
        return adopted if adopted is _BAD else (None, adopted)

    def create(self, node: yaml.Node, name: Any) -> Any:
        if isinstance(node, yaml.ScalarNode):
            value = self.value(node)
            if value is True or value is None:  # `create: true`, `create:`
                return Create()
        keys = self.mapping(node, "create (true, or visibilityTimeout, dlq, maxReceiveCount)")
        if keys is None:
            return _BAD
        got: dict[str, Any] = {}
        for key, (key_node, value_node) in keys.items():
            if key not in _CREATE_KINDS:
                self.problem(key_node, f"create: unknown key {key!r} "
                                       f"(known: {', '.join(_CREATE_KINDS)})")  # fmt: skip
                got[key] = _BAD
                continue
            value = self.typed(key, value_node, _CREATE_KINDS[key])
            if value is not _BAD and key in _CREATE_CHECKS:
                value = self.checked(value_node, functools.partial(_CREATE_CHECKS[key], value))
            got[key] = value
        if "maxReceiveCount" in keys and got.get("dlq") is not True:
            self.problem(keys["maxReceiveCount"][0], "maxReceiveCount needs dlq: true")
            return _BAD
        room = got.get("dlq") is not True or not isinstance(name, str)  # for the DLQ's name
        if not room and self.checked(keys["dlq"][1], lambda: validate.dlq_name(name)) is _BAD:
            return _BAD
        if _BAD in got.values():
            return _BAD
        return Create(got.get("visibilityTimeout"), got.get("dlq"), got.get("maxReceiveCount"))

    def adopt(self, keys: dict[str, tuple[yaml.Node, yaml.Node]], name: Any) -> Any:
        """(ref as written, QueueRef, region, roleArn), else _BAD."""
        ref_node = keys["adopt"][1]
        written = self.typed("adopt", ref_node, str)
        region: Any = None
        if "region" in keys:
            node = keys["region"][1]
            region = self.typed("region", node, str)
            if region is not _BAD:
                region = self.checked(node, lambda: queueref.check_region(region))
        role_arn: Any = None
        if "roleArn" in keys:
            node = keys["roleArn"][1]
            role_arn = self.typed("roleArn", node, str, nullable=True)
            if isinstance(role_arn, str):
                role_arn = self.checked(node, lambda: queueref.check_role_arn(role_arn))
        if _BAD in (written, region, role_arn):
            return _BAD
        ref = self.checked(ref_node, lambda: queueref.parse(written, self.settings.aws_region,
                                                            region))  # fmt: skip
        if ref is _BAD:
            return _BAD
        if isinstance(name, str) and name.endswith(".fifo") != ref.name.endswith(".fifo"):
            self.problem(keys["name"][1], f"queue {name!r} adopts {ref.name!r}: a FIFO queue's "
                         "name ends in .fifo, and only a FIFO queue's")  # fmt: skip
            return _BAD
        return written, ref, region, role_arn

    def tuning(self, keys: dict[str, tuple[yaml.Node, yaml.Node]]) -> dict[str, Any]:
        """QueueRecord attribute → checked value (_BAD when not), for the keys written."""
        out: dict[str, Any] = {}
        for key, attribute in TUNING.items():
            if key not in keys:
                continue
            node = keys[key][1]
            value = self.typed(key, node, _KINDS[key], nullable=key == "rateLimit")
            if value is not _BAD:
                check = validate.TUNABLE[attribute].check
                value = self.checked(node, functools.partial(check, self.settings, value))
            out[attribute] = value
        return out

    def _no_clashes(self, specs: list[Spec]) -> None:
        """No queue of the file is named like another's DLQ."""
        for spec in specs:
            dlq = validate.dlq_name(spec.name) if spec.create and spec.create.dlq else None
            if dlq in self.names:
                self.found.append((spec.lines["create"], f"queue {spec.name!r}'s DLQ would be "
                                   f"named {dlq!r}, a queue of the file (line "
                                   f"{self.names[dlq]})"))  # fmt: skip


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
