"""Hosts as network namespaces, for faults between hosts: partitions and isolation.

Every host is a namespace with one veth into a bridge in a hub namespace, on an
address of a /24 of 10.213.0.0/16 (one per test process: see subnet()); the test
process itself joins the bridge from the root namespace as .254 of it, so that it
can read MongoDB and SQS like any host. No
routing and no host setting is changed (no ip_forward): traffic goes to the test's
own addresses only, and deleting the namespaces removes everything.

- `cut(a, b)` drops every packet between two hosts (a blackhole route on each
  side, as a real partition: connections time out, they are not refused);
- `isolate(a)` takes a host's link down: it reaches nobody, nobody reaches it;
- `heal(...)` undoes either.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

SUBNETS = "10.213"  # each Net takes a /24 of 10.213.0.0/16 (see subnet())
MONGODB_PORT, SQS_PORT = 27017, 4566


def why_not_available() -> str | None:
    """None when this machine can build hosts, else the reason (for a skip)."""
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs as root)"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    probe = f"orcprobe{secrets.token_hex(2)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


@dataclass
class Host:
    name: str
    ns: str
    address: str
    hub_side: str  # its veth's end in the hub's bridge


def subnet() -> str:
    """This process's /24: tests running side by side (pytest-xdist workers gw0, gw1, …)
    each build hosts on a subnet of their own, so that their routes never meet."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    number = int(worker[2:]) + 1 if worker.startswith("gw") and worker[2:].isdigit() else 0
    return f"{SUBNETS}.{number}"


@dataclass
class Net:
    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    subnet: str = field(default_factory=subnet)
    hosts: dict[str, Host] = field(default_factory=dict)
    cuts: set[frozenset[str]] = field(default_factory=set)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def hub(self) -> str:
        return f"orc{self.tag}hub"

    def build(self) -> None:
        ip("netns", "add", self.hub)
        ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
        ip("-n", self.hub, "link", "set", "br0", "up")
        # The test's own seat on the bridge (the root side stays in the root namespace).
        root, peer = f"orc{self.tag}r", f"orc{self.tag}rh"
        ip("link", "add", root, "type", "veth", "peer", "name", peer)
        ip("link", "set", peer, "netns", self.hub)
        ip("-n", self.hub, "link", "set", peer, "master", "br0", "up")
        ip("addr", "add", f"{self.subnet}.254/24", "dev", root)
        ip("link", "set", root, "up")

    def add(self, name: str) -> Host:
        number = len(self.hosts) + 1
        host = Host(name, f"orc{self.tag}{name}", f"{self.subnet}.{number}",
                    f"orc{self.tag}h{number}")  # fmt: skip
        ip("netns", "add", host.ns)
        ip("link", "add", host.hub_side, "type", "veth", "peer", "name", "eth0", "netns", host.ns)
        ip("link", "set", host.hub_side, "netns", self.hub)
        ip("-n", self.hub, "link", "set", host.hub_side, "master", "br0", "up")
        ip("-n", host.ns, "addr", "add", f"{host.address}/24", "dev", "eth0")
        ip("-n", host.ns, "link", "set", "eth0", "up")
        ip("-n", host.ns, "link", "set", "lo", "up")
        self.hosts[name] = host
        return host

    # --- faults ---------------------------------------------------------------------

    def cut(self, a: str, b: str) -> None:
        """Drop every packet between hosts a and b, both ways."""
        for one, other in ((a, b), (b, a)):
            ip("-n", self.hosts[one].ns, "route", "add", "blackhole",
               f"{self.hosts[other].address}/32")  # fmt: skip
        self.cuts.add(frozenset((a, b)))

    def heal(self, a: str, b: str) -> None:
        for one, other in ((a, b), (b, a)):
            ip("-n", self.hosts[one].ns, "route", "del", "blackhole",
               f"{self.hosts[other].address}/32")  # fmt: skip
        self.cuts.discard(frozenset((a, b)))

    def isolate(self, name: str) -> None:
        ip("-n", self.hub, "link", "set", self.hosts[name].hub_side, "down")

    def rejoin(self, name: str) -> None:
        ip("-n", self.hub, "link", "set", self.hosts[name].hub_side, "up")

    # --- processes -------------------------------------------------------------------

    def popen(
        self, name: str, argv: list[str], env: dict[str, str], log: Path, *, prefix: list[str] = ()
    ) -> subprocess.Popen[bytes]:
        """Start `argv` inside host `name`, in its own session, logging to `log`."""
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.hosts[name].ns, *prefix, *argv],
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.procs.append(proc)
        return proc

    def destroy(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, 9)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        for host in self.hosts.values():
            subprocess.run(["ip", "netns", "del", host.ns], capture_output=True)
        subprocess.run(["ip", "link", "del", f"orc{self.tag}r"], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.hub], capture_output=True)


@dataclass
class Servers:
    mongodb_uri: str
    sqs_endpoint: str
    mongodb_pid: int
    sqs_pid: int


def serve(net: Net, data: Path, logs: Path, localstack: Path | None = None) -> Servers:
    """MongoDB (nx-27017) on host "mongo" and SQS on host "sqs", ready: moto, or
    LocalStack when given its Python (deep queues: moto slows down past a few hundred
    messages a queue)."""
    mongo, sqs = net.add("mongo"), net.add("sqs")
    data.mkdir(parents=True, exist_ok=True)
    nx = net.popen("mongo", [sys.executable, "-m", "orchestrator.embedded.nxserver",
                             str(data / "db"), "--host", mongo.address, "--port", str(MONGODB_PORT),
                             "--pid-file", str(data / "nx.pid"), "--log-file",
                             str(data / "nx.log")], {}, logs / "mongo.log")  # fmt: skip
    if localstack is None:
        server = net.popen("sqs", [sys.executable, "-m", "moto.server", "-H", sqs.address,
                                   "-p", str(SQS_PORT)], {}, logs / "sqs.log")  # fmt: skip
    else:
        env = {**os.environ, "SERVICES": "sqs", "GATEWAY_LISTEN": f"{sqs.address}:{SQS_PORT}",
               "SQS_ENDPOINT_STRATEGY": "path", "PERSISTENCE": "0",
               "LOCALSTACK_VOLUME_DIR": str(data / "localstack")}  # fmt: skip
        server = net.popen("sqs", [str(localstack), "-m", "localstack.runtime.main"], env,
                           logs / "sqs.log")  # fmt: skip
    ready = {MONGODB_PORT: _answers, SQS_PORT: _answers if localstack is None else _sqs_up}
    for address, port in ((mongo.address, MONGODB_PORT), (sqs.address, SQS_PORT)):
        deadline = time.monotonic() + 120
        while not ready[port](address, port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing answers on {address}:{port} after 120 s")
            time.sleep(0.1)
    return Servers(f"mongodb://{mongo.address}:{MONGODB_PORT}",
                   f"http://{sqs.address}:{SQS_PORT}", nx.pid, server.pid)  # fmt: skip


def _sqs_up(address: str, port: int) -> bool:
    """LocalStack's health check says SQS is up."""
    try:
        url = f"http://{address}:{port}/_localstack/health"
        with urllib.request.urlopen(url, timeout=1) as resp:
            return json.load(resp).get("services", {}).get("sqs") in ("available", "running")
    except (OSError, ValueError):
        return False


def _answers(address: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=0.5):
        return True
    return False
