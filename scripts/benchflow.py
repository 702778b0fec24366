"""Flow control benchmarks (issue 14), each measured against its target in the same run:

- rate: a deep queue at concurrency 20 with rateLimit 50, three workers, 60 s: handler
  starts in each 1 s window (p5-p95), and how many consumers served it;
- priority: three workers at MAX_LOAD 1 busy with four low-priority queues; a
  priority-9 queue gets messages: seconds from its messages to its first handler;
- adaptive: a handler failing half the time for 20 s, then healthy, at concurrency 16,
  with and without `adaptive`: how low and how soon the effective concurrency falls,
  how soon it is back, and the failed attempts of each run;
- shards: a hot noop queue at concurrency 40 on four workers, maxShards 4 against 1:
  drain time of each.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from benchlib import Bench, median, percentile, wait_for

STAMP = "benchhandlers:stamp"
SLEEP = "benchhandlers:sleep_stamp"
FLAKY = "benchhandlers:flaky_stamp"


def _starts(bench: Bench, queue: str) -> list[float]:
    return sorted(r["start"] for r in bench.records() if r["queue"] == queue)


# --- rate -------------------------------------------------------------------------------


def rate(kind: str, repeat: int, root: Path, seconds: int = 60) -> dict[str, Any]:
    runs = []
    for i in range(max(1, repeat)):
        bench = Bench(root / f"rate{i}", kind)
        try:
            url = bench.admin.create("rated", handler=STAMP, concurrency=20,
                                     rate_limit=50.0).queue_url  # fmt: skip
            bench.fill(url, 50 * (seconds + 20), lambda n: json.dumps({"seq": n}))
            with bench.daemon("--mode", "MW", "--workers", "3"):
                wait_for(lambda: (s := _starts(bench, "rated")) and s[-1] - s[0] > seconds + 3,
                         seconds + 120, "the rate-limited run", 1)  # fmt: skip
            got = _starts(bench, "rated")
            first = got[0] + 2  # past the first seconds' ramp from one token
            windows = [sum(1 for s in got if first + k <= s < first + k + 1)
                       for k in range(seconds)]  # fmt: skip
            pids = {r["pid"] for r in bench.records()}
            runs.append({"p5": percentile(windows, 5), "p95": percentile(windows, 95),
                         "mean": round(sum(windows) / len(windows), 2),
                         "consumers": len(pids)})  # fmt: skip
        finally:
            bench.close()
    return {"target_per_s": 50, "runs": runs,
            "p5": median([r["p5"] for r in runs]), "p95": median([r["p95"] for r in runs]),
            "mean": median([r["mean"] for r in runs]),
            "consumers": max(r["consumers"] for r in runs)}  # fmt: skip


# --- priority ---------------------------------------------------------------------------


def priority(kind: str, repeat: int, root: Path) -> dict[str, Any]:
    waits = []
    for i in range(max(1, repeat)):
        bench = Bench(root / f"priority{i}", kind, {"MAX_LOAD": "1", "PREEMPT_AFTER": "5"})
        try:
            for q in range(4):
                url = bench.admin.create(f"low{q}", handler=SLEEP, concurrency=5).queue_url
                bench.fill(url, 3000, lambda n: json.dumps({"ms": 200, "seq": n}))
            with bench.daemon("--mode", "MW", "--workers", "3"):
                wait_for(lambda: len({r["queue"] for r in bench.records()}) >= 3, 120,
                         "three low-priority queues running", 0.5)  # fmt: skip
                url = bench.admin.create("urgent", handler=STAMP, priority=9).queue_url
                sent = time.time()
                bench.fill(url, 20, lambda n: json.dumps({"seq": n}))
                first = wait_for(lambda: _starts(bench, "urgent"), 60, "the urgent queue", 0.1)
                waits.append(round(first[0] - sent, 2))
        finally:
            bench.close()
    return {"preempt_after_s": 5, "first_start_s": median(waits), "runs": waits}


# --- adaptive ---------------------------------------------------------------------------


def adaptive(kind: str, repeat: int, root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"concurrency": 16}
    for mode in ("adaptive", "fixed"):
        bench = Bench(root / f"adaptive-{mode}", kind, {"ASSIGNMENT_MAX_SECONDS": "600"})
        try:
            url = bench.admin.create("flaky", handler=FLAKY, concurrency=16,
                                     adaptive=mode == "adaptive").queue_url  # fmt: skip
            bench.fill(url, 4000, lambda n: json.dumps({"ms": 100, "seq": n}))
            trace = _trace_effective(bench, url)
            failed = sum(1 for r in bench.records() if not r.get("ok", True))
            out[mode] = {"failed_attempts": failed, **trace}
        finally:
            bench.close()
    return out


def _trace_effective(bench: Bench, url: str) -> dict[str, Any]:
    """Run the daemon: 20 s failing half the time, then healthy; sample the job's
    effective concurrency every 0.25 s."""
    flag = bench.root / "records" / "failing"
    samples: list[tuple[float, int]] = []
    with bench.daemon("--mode", "MW"):
        wait_for(lambda: _effective(bench) == 16, 60, "the queue at full concurrency", 0.25)
        flag.write_text(str(time.time()))
        failing_at = time.time()
        while time.time() - failing_at < 20:
            samples.append((time.time() - failing_at, _effective(bench) or 0))
            time.sleep(0.25)
        flag.unlink()
        healed_at = time.time()
        while time.time() - healed_at < 40:
            samples.append((time.time() - failing_at, _effective(bench) or 0))
            time.sleep(0.25)
    low = [t for t, e in samples if t < 20 and e <= 4]
    back = [t - 20 for t, e in samples if t >= 20 and e == 16]
    return {"lowest": min(e for t, e in samples if t < 20),
            "at_or_below_quarter_after_s": round(low[0], 2) if low else None,
            "back_to_full_after_heal_s": round(back[0], 2) if back else None}


def _effective(bench: Bench) -> int | None:
    running = [j for j in bench.store.jobs(status="running", limit=10)]
    return running[0].effective_concurrency if running else None


# --- shards -----------------------------------------------------------------------------


def shards(kind: str, repeat: int, root: Path, count: int = 60_000) -> dict[str, Any]:
    out: dict[str, Any] = {"messages": count, "concurrency": 40, "workers": 4}
    for most in (1, 4):
        times = []
        for i in range(max(1, repeat)):
            bench = Bench(root / f"shards{most}-{i}", kind)
            try:
                url = bench.admin.create("hot", handler=STAMP, concurrency=40,
                                         max_shards=most).queue_url  # fmt: skip
                bench.fill(url, count, lambda n: json.dumps({"seq": n}))
                server = psutil.Process(_sqs_pid(bench))
                with bench.daemon("--mode", "MW", "--workers", "4"):
                    psutil.cpu_percent(None)
                    server.cpu_percent(None)
                    seen = [0]  # counted from what was appended since the last look

                    def drained() -> bool:
                        seen[0] += len(bench.new_records())
                        return seen[0] >= count

                    wait_for(drained, 900, "the drain", 0.5)
                    busy = psutil.cpu_percent(None)  # of all cores, over the drain
                    sqs_busy = server.cpu_percent(None)  # of one core: SQS's own process
                got = _starts(bench, "hot")
                times.append(round(got[-1] - got[0], 2))
                consumers = len({r["pid"] for r in bench.records()})
            finally:
                bench.close()
        out[f"max_shards_{most}"] = {"drain_s": median(times), "runs": times,
                                     "consumers": consumers, "cpu_busy_pct": busy,
                                     "sqs_server_cpu_pct": sqs_busy}  # fmt: skip
    out["speedup"] = round(out["max_shards_1"]["drain_s"] / out["max_shards_4"]["drain_s"], 2)
    out["bare_loop"] = _bare_drain(root, kind, count)
    return out


def _bare_drain(root: Path, kind: str, count: int, threads: int = 16) -> dict[str, Any]:
    """The server's ceiling for one queue: boto3 alone, `threads` threads each receiving
    10 and deleting them, no handler, on the same messages."""
    bench = Bench(root / "shards-bare", kind)
    try:
        url = bench.admin.create("hot", concurrency=40).queue_url
        bench.fill(url, count, lambda n: json.dumps({"seq": n}))
        client = bench.sqs.client
        done = [0]
        lock = threading.Lock()

        def loop() -> None:
            empty = 0
            while empty < 3:
                got = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                             WaitTimeSeconds=1).get("Messages", [])  # fmt: skip
                if not got:
                    empty += 1
                    continue
                empty = 0
                client.delete_message_batch(QueueUrl=url, Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)])
                with lock:
                    done[0] += len(got)

        started = time.monotonic()
        workers = [threading.Thread(target=loop) for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        seconds = time.monotonic() - started - 3  # less the three empty polls that end it
        return {"threads": threads, "drain_s": round(seconds, 2), "handled": done[0]}
    finally:
        bench.close()


def _sqs_pid(bench: Bench) -> int:
    """The SQS server's process (LocalStack's, or moto's), from the servers' records."""
    records = json.loads((bench.settings.data_path / "services.json").read_text())
    return int(records["sqs"]["pid"])


__all__ = ["adaptive", "priority", "rate", "shards"]
