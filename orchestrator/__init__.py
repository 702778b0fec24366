"""orchestrator: runs the consumers of many SQS queues across processes and hosts."""

__version__ = "0.1.0"

__all__ = ["__version__"]
