"""Producer, made from the settings (`from orchestrator import Producer`): the embedded
servers' recorded ports included."""

from __future__ import annotations

import dataclasses

from orchestrator import config
from orchestrator.backends import producer
from orchestrator.backends.sqs import Sqs
from orchestrator.backends.store import Store
from orchestrator.config import Settings
from orchestrator.embedded import servers


class Producer(producer.Sender):
    """backends/producer.Sender, made from the settings (docs/design.md §5, "Producing")."""

    @classmethod
    def from_settings(cls, settings: Settings | None = None, *,
                      mongodb_uri: str | None = None) -> Producer:  # fmt: skip
        """A producer for these settings (default: the environment's, as the daemon reads
        them), or for the MongoDB at `mongodb_uri`. With the embedded default, the servers
        `orchestrator services start` (or the daemon) started for this DATA_DIR."""
        settings = settings or config.load()
        if mongodb_uri is not None:
            settings = dataclasses.replace(settings, mongodb_uri=mongodb_uri)
        endpoints = servers.endpoints(settings)
        store = Store.connect(settings, endpoints.mongodb_uri, short_lived=True)
        return cls(store, Sqs.connect(settings, endpoints.sqs_endpoint, caller="admin"))
