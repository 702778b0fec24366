"""Reads a queue file: PyYAML's nodes (which know their lines), every problem noted with
its line before anything is compared or changed."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import yaml

from orchestrator import queueref, validate
from orchestrator.config import Settings
from orchestrator.errors import InvalidValue, QueueFileInvalid
from orchestrator.queuefile.specs import (
    TUNING,
    Create,
    Spec,
    text,
)

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
_BAD = object()  # a value that failed its check (the problem is noted already)


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


