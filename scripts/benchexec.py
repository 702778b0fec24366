"""What `concurrency` delivers, per kind of handler, each beside a boto3 loop in the same run.

- concurrency: a 50 ms handler at concurrency 5: achieved / ideal messages per second;
- slow: 100-500 ms handlers at concurrency 5: SQS requests per message, wall / ideal;
- cpu: a CPU-bound handler at processes 1 and 2 (concurrency 2): messages per second;
- async: `await asyncio.sleep(1)` at concurrency 1,000 on one queue: messages/s, RSS.

The baseline is the loop a team would write with boto3 alone: per queue, `concurrency`
threads, each receiving 10, handling them one after the other, deleting the batch.
Times come from the handlers' own records (first start to last end), not from polling.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
from benchlib import Bench, median, process_kind, wait_for
from botocore.exceptions import BotoCoreError, ClientError

SLEEP = "benchhandlers:sleep_stamp"
CPU = "benchhandlers:cpu_stamp"
ASYNC = "benchhandlers:async_stamp"
CONSUMING = ("ReceiveMessage", "DeleteMessageBatch", "ChangeMessageVisibilityBatch")
CEILING_THREADS = 8  # a bare loop this wide gets the most out of one LocalStack queue here

Record = dict[str, Any]


# --- the two sides ---------------------------------------------------------------------


def baseline(bench: Bench, urls: list[str], threads: int, handle: Callable[[Record], None],
             expected: int) -> tuple[list[Record], Counter[str]]:  # fmt: skip
    """The boto3 loop; returns what it handled (with start and end) and its requests."""
    client = bench.sqs.client
    done: list[Record] = []
    lock = threading.Lock()

    def loop(url: str) -> None:
        empty = 0
        while empty < 2:
            try:
                got = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                             WaitTimeSeconds=1)  # fmt: skip
            except (BotoCoreError, ClientError):  # a thousand threads overwhelm a server
                time.sleep(0.5)
                continue
            messages = got.get("Messages", [])
            if not messages:
                empty += 1
                continue
            empty = 0
            for m in messages:
                body = json.loads(m["Body"])
                start = time.time()
                handle(body)
                with lock:
                    done.append({"queue": url, "start": start, "end": time.time(), **body})
            entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                       for i, m in enumerate(messages)]  # fmt: skip
            for _ in range(5):
                try:
                    client.delete_message_batch(QueueUrl=url, Entries=entries)
                    break
                except (BotoCoreError, ClientError):
                    time.sleep(0.5)

    before = bench.requests()
    workers = [threading.Thread(target=loop, args=(u,)) for u in urls for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(done) >= expected, f"baseline handled {len(done)} of {expected}"
    return done, bench.requests() - before


def orchestrator(bench: Bench, expected: int, timeout: float = 600
                 ) -> tuple[list[Record], Counter[str], float]:  # fmt: skip
    """Run the daemon until every job closed after `expected` records; the records, the
    SQS requests of the run and the largest consumer RSS (MB, handler processes summed)."""
    before = bench.requests()
    rss = [0.0]
    with bench.daemon("--mode", "MW") as proc:

        def finished() -> bool:
            rss[0] = max(rss[0], _consumer_rss(proc.pid))
            return bench.settled(expected)

        wait_for(finished, timeout, f"{expected} handled and the jobs closed", 0.5)
        spent = bench.requests() - before
    return [{**r, **json.loads(r["body"])} for r in bench.records()], spent, rss[0]


def _consumer_rss(supervisor: int) -> float:
    """The largest consumer's RSS with its handler processes, in MB."""
    best = 0.0
    try:
        for child in psutil.Process(supervisor).children(recursive=True):
            if process_kind(child) == "consumer":
                family = [child, *child.children(recursive=True)]
                best = max(best, sum(p.memory_info().rss for p in family) / 2**20)
    except (psutil.Error, IndexError):
        pass
    return round(best, 1)


def _wall(records: list[Record]) -> float:
    return max(r["end"] for r in records) - min(r["start"] for r in records)


def _per_queue_rate(records: list[Record]) -> float:
    """Messages per second each queue got while it was served, averaged over the queues."""
    queues = _per_queue(records).values()
    return sum(len(q) / _wall(q) for q in queues) / len(queues)


def _per_queue(records: list[Record]) -> dict[str, list[Record]]:
    out: dict[str, list[Record]] = {}
    for r in records:
        out.setdefault(r["queue"], []).append(r)
    return out


# --- 1. a 50 ms handler at concurrency 5 -----------------------------------------------------


def concurrency(kind: str, repeat: int, root: Path) -> dict[str, Any]:
    queues, conc, ms = 4, 5, 50
    per_queue = 400 if kind == "localstack" else 60
    ideal = queues * conc * 1000 / ms
    runs = []
    for r in range(repeat):
        bench = Bench(root / f"concurrency{r}", kind)
        try:
            urls = make_queues(bench, "c", queues, SLEEP, conc)
            fill_queues(bench, urls, per_queue, lambda i: {"ms": ms, "i": i})
            base, _ = baseline(bench, urls, conc, lambda b: time.sleep(b["ms"] / 1000),
                               queues * per_queue)  # fmt: skip
            fill_queues(bench, urls, per_queue, lambda i: {"ms": ms, "i": i})
            ours, requests, _ = orchestrator(bench, queues * per_queue)
            per_queue_ideal = ideal / queues
            runs.append({
                "orchestrator": _per_queue_rate(ours) / per_queue_ideal,
                "baseline": _per_queue_rate(base) / per_queue_ideal,
                # from the first queue's first handler to the last one's last: includes the
                # time the master and workers took to start the four consumers
                "orchestrator_end_to_end": len(ours) / _wall(ours) / ideal,
                # how hard the server was worked meanwhile: see docs/benchmarks.md
                "sqs_requests_per_s": sum(requests.values()) / _wall(ours),
                "sqs_requests_per_message": sum(requests.values()) / len(ours),
            })  # fmt: skip
        finally:
            bench.close()
    return {
        "load": f"{queues} queues x {per_queue} messages, sleep {ms} ms, concurrency {conc}",
        "ideal_msgs_per_s": ideal,
        "efficiency": round(median([r["orchestrator"] for r in runs]), 3),
        "baseline_efficiency": round(median([r["baseline"] for r in runs]), 3),
        "end_to_end_efficiency": round(median([r["orchestrator_end_to_end"] for r in runs]), 3),
        "runs": runs,
    }


# --- 2. 100-500 ms handlers at concurrency 5 -----------------------------------------------------


def slow(kind: str, repeat: int, root: Path) -> dict[str, Any]:
    queues, conc = 4, 5
    per_queue = 300 if kind == "localstack" else 40
    runs = []
    for r in range(repeat):
        bench = Bench(root / f"slow{r}", kind)
        try:
            urls = make_queues(bench, "s", queues, SLEEP, conc)
            durations = random.Random(r).choices(range(100, 501), k=per_queue)
            body = _bodies(durations)
            fill_queues(bench, urls, per_queue, body)
            base, base_requests = baseline(bench, urls, conc, lambda b: time.sleep(b["ms"] / 1000),
                                           queues * per_queue)  # fmt: skip
            fill_queues(bench, urls, per_queue, body)
            ours, requests, _ = orchestrator(bench, queues * per_queue)
            ideal = sum(durations) / 1000 / conc  # per queue; the queues run side by side
            total = queues * per_queue
            runs.append({
                "wall_over_ideal": max(_wall(q) for q in _per_queue(ours).values()) / ideal,
                "baseline_wall_over_ideal": max(_wall(q) for q in _per_queue(base).values())
                / ideal,
                "requests_per_message": sum(requests.values()) / total,
                "consuming_requests_per_message": sum(requests[op] for op in CONSUMING) / total,
                "baseline_requests_per_message": sum(base_requests.values()) / total,
                "by_operation": dict(requests),
            })  # fmt: skip
        finally:
            bench.close()
    out: dict[str, Any] = {
        "load": f"{queues} queues x {per_queue} messages, sleep 100-500 ms, concurrency {conc}",
        "runs": runs,
    }
    for key in ("wall_over_ideal", "baseline_wall_over_ideal", "requests_per_message",
                "consuming_requests_per_message", "baseline_requests_per_message"):  # fmt: skip
        out[key] = round(median([run[key] for run in runs]), 3)
    return out


# --- 3. CPU-bound: processes 1 vs 2 ------------------------------------------------------------


def cpu(kind: str, repeat: int, root: Path) -> dict[str, Any]:
    conc, ms = 2, 20
    count = 600 if kind == "localstack" else 150
    runs = []
    for r in range(repeat):
        run: dict[str, float] = {}
        for processes in (1, 2):
            bench = Bench(root / f"cpu{r}-{processes}", kind)
            try:
                [url] = make_queues(bench, "cpu", 1, CPU, conc, processes=processes)
                if processes == 1:
                    fill_queues(bench, [url], count, lambda i: {"ms": ms, "i": i})
                    base, _ = baseline(bench, [url], conc, lambda b: _burn(b["ms"]), count)
                    run["baseline"] = len(base) / _wall(base)
                fill_queues(bench, [url], count, lambda i: {"ms": ms, "i": i})
                ours, _, _ = orchestrator(bench, count)
                run[f"processes_{processes}"] = len(ours) / _wall(ours)
            finally:
                bench.close()
        runs.append(run)
    p1 = median([r["processes_1"] for r in runs])
    p2 = median([r["processes_2"] for r in runs])
    return {
        "load": f"1 queue x {count} messages, {ms} ms of CPU each, concurrency {conc}",
        "processes_1_msgs_per_s": round(p1, 1),
        "processes_2_msgs_per_s": round(p2, 1),
        "baseline_msgs_per_s": round(median([r["baseline"] for r in runs]), 1),
        "speedup": round(p2 / p1, 3),
        "runs": runs,
    }


def _burn(ms: float) -> None:
    deadline = time.thread_time() + ms / 1000
    while time.thread_time() < deadline:
        pass


# --- 4. async: 1 s awaits at concurrency 1,000 -------------------------------------------------


def async_(kind: str, repeat: int, root: Path) -> dict[str, Any]:
    conc = 1000
    count = 15000 if kind == "localstack" else 1500
    runs = []
    for r in range(repeat):
        bench = Bench(root / f"async{r}", kind, overrides={"MAX_CONCURRENCY": str(conc)})
        try:
            [url] = make_queues(bench, "io", 1, ASYNC, conc)
            fill_queues(bench, [url], count, lambda i: {"ms": 1000, "i": i})
            handle, base_rss = _sleeper_watching_rss()
            base, _ = baseline(bench, [url], conc, handle, count)
            # What this SQS server gives a bare receive/delete loop with no handler at all:
            # the ceiling any consumer of one queue meets here.
            fill_queues(bench, [url], count, lambda i: {"ms": 0, "i": i})
            bare, _ = baseline(bench, [url], CEILING_THREADS, lambda b: None, count)
            fill_queues(bench, [url], count, lambda i: {"ms": 1000, "i": i})
            ours, _, rss = orchestrator(bench, count)
            runs.append({"msgs_per_s": len(ours) / _wall(ours), "consumer_rss_mb": rss,
                         "baseline_msgs_per_s": len(base) / _wall(base),
                         "baseline_rss_mb": round(base_rss[0], 1),
                         "ceiling_msgs_per_s": len(bare) / _wall(bare)})  # fmt: skip
        finally:
            bench.close()
    out: dict[str, Any] = {"load": f"1 queue x {count} messages, await 1 s, concurrency {conc}",
                           "runs": runs}  # fmt: skip
    for key in ("msgs_per_s", "consumer_rss_mb", "baseline_msgs_per_s", "baseline_rss_mb",
                "ceiling_msgs_per_s"):  # fmt: skip
        out[key] = round(median([run[key] for run in runs]), 1)
    return out


def _sleeper_watching_rss() -> tuple[Callable[[Record], None], list[float]]:
    """A baseline handler that sleeps, and the largest RSS (MB) this process had meanwhile."""
    me, peak = psutil.Process(), [0.0]

    def handle(body: Record) -> None:
        time.sleep(body["ms"] / 1000)
        peak[0] = max(peak[0], me.memory_info().rss / 2**20)

    return handle, peak


def _bodies(durations: list[int]) -> Callable[[int], Record]:
    return lambda i: {"ms": durations[i], "i": i}


# --- shared ---------------------------------------------------------------------------------------


def make_queues(bench: Bench, prefix: str, n: int, handler: str, conc: int, **extra: Any
            ) -> list[str]:  # fmt: skip
    return [bench.admin.create(f"{prefix}{i}", handler=handler, concurrency=conc,
                               **extra).queue_url for i in range(n)]  # fmt: skip


def fill_queues(bench: Bench, urls: list[str], count: int, body: Callable[[int], Record]) -> None:
    for url in urls:
        bench.fill(url, count, lambda i: json.dumps(body(i)))

