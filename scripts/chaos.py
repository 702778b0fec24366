#!/usr/bin/env python3
"""Chaos: SIGKILL random consumers, workers and masters under load; count what was lost.

    .venv/bin/python scripts/chaos.py [--minutes 10] [--kill-every 20] [--queues 6]

Two daemons run (MW with 2 workers, and W with 2 workers), so there are two
masters (one leading) and four workers; killed masters and workers are
restarted by their supervisor, killed consumers by their worker. Senders keep
every queue busy. At the end the senders stop, the daemons drain the queues,
and the script reports messages sent, distinct handled, lost, duplicates and
the longest time any non-empty queue went unserved. Exit status 1 if any
message was lost (2 if the run could not be made).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shlex
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import psutil
from benchlib import Bench, save, sqs_kind, wait_for

STAMP = "benchhandlers:stamp"


def roles(daemon_pid: int) -> dict[str, list[int]]:
    """pids under a daemon by role (from `python -m orchestrator.child ROLE`)."""
    out: dict[str, list[int]] = defaultdict(list)
    for child in psutil.Process(daemon_pid).children(recursive=True):
        try:
            cmd = child.cmdline()
        except psutil.Error:
            continue
        if "orchestrator.child" in cmd:
            out[cmd[-1]].append(child.pid)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--kill-every", type=float, default=20, help="seconds between kills")
    parser.add_argument("--queues", type=int, default=6)
    parser.add_argument("--rate", type=float, default=20, help="messages/s per queue")
    args = parser.parse_args()
    kind = sqs_kind()
    rng = random.Random(7)
    command = "python scripts/chaos.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="orchestrator-chaos-") as tmp:
        # Short failure timers so that kills are noticed within the run, not the defaults.
        bench = Bench(Path(tmp), kind, {"WORKER_TIMEOUT": "5", "LEASE_TTL": "5",
                                        "HEARTBEAT_INTERVAL": "1", "SHUTDOWN_GRACE": "10"})  # fmt: skip
        try:
            return run(bench, args, rng, command, kind)
        finally:
            bench.close()


def run(bench: Bench, args: argparse.Namespace, rng: random.Random, command: str, kind: str) -> int:
    urls = {f"chaos{i}": bench.admin.create(f"chaos{i}", handler=STAMP, concurrency=5).queue_url
            for i in range(args.queues)}  # fmt: skip
    sent: dict[str, int] = defaultdict(int)
    stop = threading.Event()

    def sender(name: str, url: str) -> None:
        seq = 0
        while not stop.is_set():
            batch = [json.dumps({"q": name, "seq": seq + i}) for i in range(10)]
            try:
                bench.sqs.send_batch(url, batch)
            except Exception as exc:  # keep sending; unsent ones are not counted
                print(f"send failed: {exc}", file=sys.stderr)
                time.sleep(1)
                continue
            seq += 10
            sent[name] = seq
            stop.wait(10 / args.rate)

    senders = [threading.Thread(target=sender, args=item) for item in urls.items()]
    kills: list[dict[str, Any]] = []
    longest = 0.0
    with (
        bench.daemon("--mode", "MW", "--workers", "2") as a,
        bench.daemon("--mode", "W", "--workers", "2") as b,
    ):
        for t in senders:
            t.start()
        started = time.monotonic()
        next_kill = started + args.kill_every
        last_seen: dict[str, float] = {}
        while time.monotonic() - started < args.minutes * 60:
            time.sleep(1)
            # Longest time a non-empty queue went without a handler starting.
            now = time.time()
            for rec in bench.new_records():
                last_seen[rec["queue"]] = max(last_seen.get(rec["queue"], 0), rec["start"])
            for name, url in urls.items():
                d = bench.sqs.depth(url)
                if d.visible > 0:
                    longest = max(longest, now - last_seen.get(name, now))
            if time.monotonic() >= next_kill:
                next_kill += args.kill_every
                kills.append(kill_one(rng, a.pid, b.pid))
                print(f"kill {len(kills)}: {kills[-1]}", flush=True)
        stop.set()
        for t in senders:
            t.join()
        total_sent = sum(sent.values())
        print(f"senders stopped after {total_sent} messages; draining", flush=True)
        wait_for(lambda: bench.depth(list(urls.values())) == 0, 600, "queues drained", 1)
    handled: dict[tuple[str, int], int] = defaultdict(int)
    for rec in bench.records():
        body = json.loads(rec["body"])
        handled[(body["q"], body["seq"])] += 1
    expected = {(q, s) for q, n in sent.items() for s in range(n)}
    lost = expected - set(handled)
    result = {
        "minutes": args.minutes,
        "queues": args.queues,
        "kills": len(kills),
        "kills_by_role": {
            r: sum(1 for k in kills if k["role"] == r) for r in ("consumer", "worker", "master")
        },
        "sent": len(expected),
        "distinct_handled": len(set(handled) & expected),
        "lost": len(lost),
        "duplicates": sum(n - 1 for n in handled.values() if n > 1),
        "longest_unserved_s": round(longest, 1),
        "sqs": "LocalStack" if kind == "localstack" else "moto",
    }
    print(json.dumps(result), flush=True)
    save("chaos", result, command)
    from benchreport import render

    render()
    return 1 if lost else 0


def kill_one(rng: random.Random, *daemons: int) -> dict[str, Any]:
    """SIGKILL a random consumer, worker or master (never a supervisor)."""
    role = rng.choice(["consumer", "consumer", "worker", "master"])
    candidates = [pid for d in daemons for pid in roles(d).get(role, [])]
    if not candidates:
        role, candidates = (
            "consumer",
            [pid for d in daemons for pid in roles(d).get("consumer", [])],
        )
    if not candidates:
        return {"role": "none", "pid": None, "at": time.time()}
    pid = rng.choice(candidates)
    with contextlib.suppress(psutil.Error):
        psutil.Process(pid).kill()
    return {"role": role, "pid": pid, "at": round(time.time(), 1)}


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(2)
