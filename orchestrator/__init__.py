"""orchestrator: runs the consumers of many SQS queues across processes and hosts."""

import importlib
from typing import Any

from orchestrator.errors import Backoff
from orchestrator.message import Message

__version__ = "0.1.0"

__all__ = ["Backoff", "Message", "Producer", "__version__"]


def __getattr__(name: str) -> Any:
    """`orchestrator.Producer` on first use: a handler's `import orchestrator` must not
    load pymongo and boto3 (by name: the package's core imports no layer above it)."""
    if name == "Producer":
        return importlib.import_module("orchestrator.client.producer").Producer
    raise AttributeError(f"module 'orchestrator' has no attribute {name!r}")
