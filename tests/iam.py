"""The IAM policies of docs/iam/ against the SQS operations the product really made.

Every Sqs client the product makes (`Sqs.connect`) acts for a caller, "daemon" or
"admin"; with ORCHESTRATOR_SQS_OPS_LOG set, it appends each operation it makes, once a
process, to that file. tests/conftest.py sets it for the whole session and, at the end,
fails the run when docs/iam/<caller>.json does not allow an operation its caller made.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

POLICY_DIR = Path(__file__).resolve().parent.parent / "docs" / "iam"
CALLERS = ("daemon", "admin")

# A batch call is authorised as its single action: "Specifying SendMessage,
# DeleteMessage, or ChangeMessageVisibility ... also grants permissions for the
# corresponding batch versions" (SQS API Reference, AddPermission; the SQS Developer
# Guide's "API permissions: Actions and resource reference" lists no batch actions).
BATCH_ACTIONS = {
    "SendMessageBatch": "SendMessage",
    "DeleteMessageBatch": "DeleteMessage",
    "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
}

Record = tuple[str, str]  # (botocore operation name, caller)


def iam_action(operation: str) -> str:
    """The IAM action that authorises a botocore SQS operation."""
    return "sqs:" + BATCH_ACTIONS.get(operation, operation)


def load_policies(folder: Path = POLICY_DIR) -> dict[str, dict[str, Any]]:
    """Each caller's policy document."""
    return {caller: json.loads((folder / f"{caller}.json").read_text()) for caller in CALLERS}


def allowed_actions(policy: Mapping[str, Any]) -> set[str]:
    """The actions a policy's Allow statements name, lower-cased (IAM ignores case).
    The policies have no Deny and no wildcards (tests/integration/test_iam.py)."""
    return {action.lower() for action in _granted(policy)}


def _granted(policy: Mapping[str, Any]) -> list[str]:
    """The actions of the Allow statements, as written."""
    granted = []
    for statement in policy["Statement"]:
        if statement["Effect"] == "Allow":
            actions = statement["Action"]
            granted.extend([actions] if isinstance(actions, str) else actions)
    return granted


def read_records(path: Path) -> set[Record]:
    """The (operation, caller) pairs the session's processes recorded."""
    if not path.exists():
        return set()
    return {
        (doc["operation"], doc["caller"])
        for doc in map(json.loads, path.read_text().splitlines())
    }


def missing(records: Iterable[Record], policies: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line for each recorded operation its caller's policy does not allow."""
    problems = []
    for operation, caller in sorted(set(records)):
        policy = policies.get(caller)
        if policy is None:
            problems.append(f"{operation} by caller {caller!r}: no policy docs/iam/{caller}.json")
        elif iam_action(operation).lower() not in allowed_actions(policy):
            problems.append(f"{operation} by the {caller} role needs {iam_action(operation)}, "
                            f"which docs/iam/{caller}.json does not allow")  # fmt: skip
    return problems


def summary(records: Iterable[Record]) -> str:
    """One line: the operations seen for each caller."""
    seen = set(records)
    parts = []
    for caller in sorted({c for _, c in seen}):
        ops = sorted(op for op, c in seen if c == caller)
        parts.append(f"{caller}: {', '.join(ops)}")
    return "; ".join(parts) if parts else "none recorded"


def unused(records: Iterable[Record], policies: Mapping[str, Mapping[str, Any]]) -> str:
    """One line: what each policy allows that no recorded operation needed (a full run
    should leave nothing here: least privilege)."""
    needed = {(iam_action(op).lower(), caller) for op, caller in records}
    parts = []
    for caller, policy in sorted(policies.items()):
        spare = sorted({a for a in _granted(policy) if (a.lower(), caller) not in needed})
        if spare:
            parts.append(f"{caller}: {', '.join(spare)}")
    return "; ".join(parts) if parts else "none"
