"""The HTTP API as a master process serves it, beside its master loop.

It has its own MongoDB and SQS clients, so that its requests never wait behind the
master's calls, nor the master's lease renewals behind its requests. It knows the
master only through `MasterView`: this package imports nothing from the roles.
"""

from __future__ import annotations

from typing import Any, Protocol

from orchestrator.backends.sqs import Sqs
from orchestrator.backends.store import DAEMON_TIMEOUT_MS, Store
from orchestrator.config import Endpoints, Settings
from orchestrator.http import exposition
from orchestrator.http.api import Api
from orchestrator.http.fleet import Fleet
from orchestrator.http.server import ApiServer
from orchestrator.metrics import Meter

API_SQS_READ_TIMEOUT = 5  # the API's SQS calls give up sooner than the daemon's
API_SQS_ATTEMPTS = 2


class MasterView(Protocol):
    """What the API needs of the master it serves beside."""

    id: str
    meter: Meter

    def health(self, store: Store) -> dict[str, Any]: ...


class ApiService:
    """Starts, feeds and stops the API of one master process."""

    def __init__(self, settings: Settings, endpoints: Endpoints, master: MasterView) -> None:
        self.store = Store.connect(settings, endpoints.mongodb_uri, timeout_ms=DAEMON_TIMEOUT_MS)
        # An operator's client, in the master's process: the admin policy's calls.
        sqs = Sqs.connect(settings, endpoints.sqs_endpoint, master.meter, caller="admin",
                          read_timeout=API_SQS_READ_TIMEOUT, attempts=API_SQS_ATTEMPTS)  # fmt: skip
        self.fleet = Fleet(settings, self.store, sqs)
        registry = exposition.fleet_registry(self.fleet)
        self.own = exposition.MasterMetrics(master.id, registry)
        api = Api(settings, self.fleet, registry, lambda: master.health(self.store))
        self.server = ApiServer(settings, api)

    def start(self) -> None:
        self.server.start()

    def cycle(self, seconds: float, leading: bool) -> None:
        """A master cycle ended: this master's own metrics."""
        self.own.cycle_seconds.observe(seconds)
        self.own.leader.set(1 if leading else 0)

    def stop(self) -> None:
        self.server.stop()
        self.fleet.close()
