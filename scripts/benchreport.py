"""Render docs/benchmarks.json into the tables of docs/benchmarks.md (between markers)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent.parent / "docs"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"

# (benchmark, label, how to read the value, target text, met?)
ROWS: list[tuple[str, str, Callable[[dict[str, Any]], Any], str, Callable[[Any], bool]]] = [
    ("throughput", "orchestrator, msgs/s", lambda r: r["orchestrator_msgs_per_s"], "", lambda v: True),
    ("throughput", "boto3 baseline, msgs/s", lambda r: r["baseline_msgs_per_s"], "", lambda v: True),
    ("throughput", "noop, concurrency 10: ratio", lambda r: r["ratio"], ">= 0.95",
     lambda v: v >= 0.95),
    ("concurrency", "50 ms handler, concurrency 5: achieved / ideal (boto3 loop)",
     lambda r: f'{r["efficiency"]} ({r["baseline_efficiency"]})', ">= 0.95 and >= the loop's",
     lambda v: float(v.split(" ")[0]) >= 0.95
     and float(v.split(" ")[0]) >= float(v.split("(")[1].rstrip(")"))),
    ("concurrency", "same, end to end (includes starting 4 consumers)",
     lambda r: r["end_to_end_efficiency"], "", lambda v: True),
    ("slow", "100-500 ms handlers: wall / ideal (boto3 loop)",
     lambda r: f'{r["wall_over_ideal"]} ({r["baseline_wall_over_ideal"]})', "<= 1.05",
     lambda v: float(v.split(" ")[0]) <= 1.05),
    ("slow", "100-500 ms handlers: SQS requests per message (boto3 loop)",
     lambda r: f'{r["requests_per_message"]} ({r["baseline_requests_per_message"]})', "<= 0.30",
     lambda v: float(v.split(" ")[0]) <= 0.30),
    ("cpu", "CPU-bound, msgs/s at processes 1 / 2 (boto3 loop, 2 threads)",
     lambda r: f'{r["processes_1_msgs_per_s"]} / {r["processes_2_msgs_per_s"]} '
               f'({r["baseline_msgs_per_s"]})', "", lambda v: True),
    ("cpu", "CPU-bound, processes 2 / processes 1", lambda r: r["speedup"], ">= 1.6",
     lambda v: v >= 1.6),
    ("async", "await 1 s, concurrency 1,000: msgs/s (boto3 loop, 1,000 threads)",
     lambda r: f'{r["msgs_per_s"]} ({r["baseline_msgs_per_s"]})', ">= 900",
     lambda v: float(v.split(" ")[0]) >= 900),
    ("async", "same: bare receive/delete loop on this server, msgs/s (the ceiling)",
     lambda r: r["ceiling_msgs_per_s"], "", lambda v: True),
    ("async", "same: consumer RSS, MB (boto3 loop's process)",
     lambda r: f'{r["consumer_rss_mb"]} ({r["baseline_rss_mb"]})', "<= 100",
     lambda v: float(v.split(" ")[0]) <= 100),
    ("latency", "assigned queue p50, ms", lambda r: r["assigned_p50_ms"], "", lambda v: True),
    ("latency", "assigned queue p95, ms", lambda r: r["assigned_p95_ms"], "<= 100", lambda v: v <= 100),
    ("latency", "queue idle < 1 min, p50 s", lambda r: r["idle_p50_s"], "", lambda v: True),
    ("latency", "queue idle < 1 min, p95 s", lambda r: r["idle_p95_s"], "<= 2", lambda v: v <= 2),
    ("failover", "worker SIGKILL → processed elsewhere, s",
     lambda r: r["worker_kill_to_processed_elsewhere_s"], "<= 12", lambda v: v <= 12),
    ("failover", "leader SIGKILL → new work assigned, s",
     lambda r: r["master_kill_to_new_assignment_s"], "<= 12 (LEASE_TTL + 2)", lambda v: v <= 12),
    ("throughput", "SQS requests per message at load", lambda r: r["sqs_requests_per_message"],
     "<= 0.25", lambda v: v <= 0.25),
    ("cost", "SQS requests per idle queue per hour",
     lambda r: r["requests_per_idle_queue_per_hour"], "<= 120", lambda v: v <= 120),
    ("scale", "master cycle, 1,000 queues (median / max), s",
     lambda r: f'{r["1000"]["cycle_s_median"]} / {r["1000"]["cycle_s_max"]}', "<= 1",
     lambda v: float(str(v).split(" / ")[1]) <= 1),
    ("scale", "master cycle, 10,000 queues (median / max), s",
     lambda r: f'{r["10000"]["cycle_s_median"]} / {r["10000"]["cycle_s_max"]}', "<= 1",
     lambda v: float(str(v).split(" / ")[1]) <= 1),
    ("scale", "MongoDB ops per cycle (1,000 / 10,000)",
     lambda r: f'{r["1000"]["mongodb_ops_per_cycle"]} / {r["10000"]["mongodb_ops_per_cycle"]}', "",
     lambda v: True),
    ("throughput", "RSS under load, MB (master / worker / consumer)",
     lambda r: f'{r["rss_mb"].get("master")} / {r["rss_mb"].get("worker")} / '
               f'{r["rss_mb"].get("consumer")}',
     "consumer <= 60", lambda v: float(str(v).split(" / ")[2]) <= 60),
    ("api", "GET /api/queues, 1,000 queues (depths fetched / cached), s",
     lambda r: f'{r["api_queues_cold_s"]} / {r["api_queues_warm_s"]}', "", lambda v: True),
    ("api", "GET /metrics, 1,000 queues (depths fetched / cached), s",
     lambda r: f'{r["metrics_cold_s"]} / {r["metrics_warm_s"]}', "", lambda v: True),
    ("cli", "orchestrator --help, s", lambda r: r["help_s"], "<= 0.2", lambda v: v <= 0.2),
    ("cli", "orchestrator queue list (3 queues, embedded servers running), s",
     lambda r: r["queue_list_s"], "<= 0.6", lambda v: v <= 0.6),
    ("chaos", "run length, min / faults (kills of consumer, worker, master; MongoDB and SQS "
     "stopped; partitions)",
     lambda r: f'{r["minutes"]} / {r["faults"]} (' + ", ".join(
         str(r["faults_by_kind"][k]) for k in ("consumer", "worker", "master", "mongodb-stop",
                                               "sqs-stop", "partition")) + f'; {r["hosts"]})',
     ">= 30 / >= 20", lambda v: float(v.split(" / ")[0]) >= 30
     and int(v.split(" / ")[1].split(" ")[0]) >= 20),
    ("chaos", "messages sent / distinct handled", lambda r: f'{r["sent"]} / {r["distinct_handled"]}',
     "", lambda v: True),
    ("chaos", "messages lost", lambda r: r["lost"], "0", lambda v: v == 0),
    ("chaos", "duplicates (handled more than once)", lambda r: r["duplicates"], "", lambda v: True),
    ("chaos", "longest a non-empty queue went unserved, s", lambda r: r["longest_unserved_s"],
     "", lambda v: True),
]  # fmt: skip


def render() -> None:
    results = json.loads((DOCS / "benchmarks.json").read_text())
    lines = ["| benchmark | figure | value | target | met |", "|---|---|---|---|---|"]
    for name, label, read, target, met in ROWS:
        if name not in results:
            continue
        try:
            value = read(results[name])
            ok = ("yes" if met(value) else "**no**") if target else ""
        except (KeyError, TypeError, ValueError, AttributeError):
            value, ok = "n/a", ""
        lines.append(f"| {name} | {label} | {value} | {target} | {ok} |")
    lines.append("")
    lines.append("| benchmark | SQS | repeat | machine | command |")
    lines.append("|---|---|---|---|---|")
    for name, r in results.items():
        m = r.get("machine", {})
        where = f"{m.get('cores')} cores, {m.get('memory_gib')} GiB, {m.get('date')}"
        lines.append(
            f"| {name} | {r.get('sqs')} | {r.get('repeat') or '-'} | {where} | `{r['command']}` |"
        )
    table = "\n".join(lines)
    path = DOCS / "benchmarks.md"
    text = path.read_text() if path.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    path.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")


if __name__ == "__main__":
    render()
