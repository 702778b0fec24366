"""The `failures` collection: handlers' failures, message by message, for the DLQ browser.

Purged by a TTL index after JOB_TTL_DAYS, like the jobs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from orchestrator.backends.store.base import FAILURES, Connection, translated
from orchestrator.models import FailureNote


class FailureDocs(Connection):
    """`{queueName, messageId, receiveCount, errorType, error, traceback, at, body}`."""

    @translated
    def record_failures(self, failures: Sequence[FailureNote]) -> None:
        """Save the notes a worker got from its consumers, each as its document."""
        if failures:
            self._fast[FAILURES].insert_many([f.to_doc() for f in failures], ordered=False)

    @translated
    def last_failures(self, queue_name: str,
                      message_ids: Iterable[str]) -> dict[str, FailureNote]:
        """The latest failure of each of these messages (those that have one)."""
        query = {"queueName": queue_name, "messageId": {"$in": list(message_ids)}}
        latest: dict[str, FailureNote] = {}
        for doc in self._db[FAILURES].find(query):
            failure = FailureNote.from_doc(doc)
            if failure.message_id not in latest or failure.at > latest[failure.message_id].at:
                latest[failure.message_id] = failure
        return latest
