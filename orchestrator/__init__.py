"""orchestrator: runs the consumers of many SQS queues across processes and hosts."""

from orchestrator.errors import Backoff
from orchestrator.message import Message

__version__ = "0.1.0"

__all__ = ["Backoff", "Message", "__version__"]
