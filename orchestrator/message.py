"""Message: what a handler receives (docs/design.md §5, contract)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Message:
    """One SQS message, as handed to a queue's handler."""

    message_id: str
    body: str
    queue_name: str
    queue_url: str
    receive_count: int = 1
    attributes: dict[str, Any] = field(default_factory=dict)
    message_attributes: dict[str, Any] = field(default_factory=dict)

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)
