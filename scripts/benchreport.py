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
    ("scale", "master cycle, 10,000 queues, 100 workers (median / p95), s",
     lambda r: f'{r["10000"]["cycle_s_median"]} / {r["10000"]["cycle_s_p95"]}', "<= 1",
     lambda v: float(str(v).split(" / ")[1]) <= 1),
    ("scale", "master cycle, 100,000 queues, 100 workers (median / p95), s",
     lambda r: f'{r["100000"]["cycle_s_median"]} / {r["100000"]["cycle_s_p95"]}', "<= 1",
     lambda v: float(str(v).split(" / ")[1]) <= 1),
    ("scale", "depth checks per s / each queue checked every, s (100,000 queues)",
     lambda r: f'{r["100000"]["depth_checks_per_s"]} / {r["100000"]["check_interval_s"]}', "",
     lambda v: True),
    ("scale", "a fresh master knows every queue after, s (10,000 / 100,000; its first cycle, s)",
     lambda r: f'{r["10000"].get("queues_known_after_s")} / '
               f'{r["100000"].get("queues_known_after_s")} '
               f'({r["10000"]["first_cycle_s"]} / {r["100000"]["first_cycle_s"]})', "",
     lambda v: True),
    ("scale", "MongoDB ops per cycle (10,000 / 100,000)",
     lambda r: f'{r["10000"]["mongodb_ops_per_cycle"]} / {r["100000"]["mongodb_ops_per_cycle"]}',
     "", lambda v: True),
    ("throughput", "RSS under load, MB (master / worker / consumer)",
     lambda r: f'{r["rss_mb"].get("master")} / {r["rss_mb"].get("worker")} / '
               f'{r["rss_mb"].get("consumer")}',
     "consumer <= 60", lambda v: float(str(v).split(" / ")[2]) <= 60),
    ("api", "GET /api/queues page of 100 (the dashboard's), 10,000 queues, s",
     lambda r: r["page_100_s"], "<= 0.5", lambda v: v <= 0.5),
    ("api", "GET /api/queues page of 1,000 / GET /metrics, 10,000 queues, s",
     lambda r: f'{r["page_1000_s"]} / {r["metrics_s"]}', "", lambda v: True),
    ("rate", "rateLimit 50, concurrency 20, 3 workers: starts per 1 s window, p5 / p95 "
     "(mean; consumers)",
     lambda r: f'{r["p5"]} / {r["p95"]} ({r["mean"]}; {r["consumers"]})', "47.5..52.5, 1",
     lambda v: 47.5 <= float(v.split(" / ")[0]) and float(v.split(" / ")[1].split(" ")[0])
     <= 52.5 and v.endswith("; 1)")),
    ("priority", "priority 9 behind 4 busy queues (3 workers x MAX_LOAD 1): first handler "
     "after, s", lambda r: r["first_start_s"], "<= 8 (PREEMPT_AFTER + 3)", lambda v: v <= 8),
    ("adaptive", "50 % failing for 20 s: effective <= concurrency/4 after, s / back to full "
     "after heal, s", lambda r: f'{r["adaptive"]["at_or_below_quarter_after_s"]} / '
                               f'{r["adaptive"]["back_to_full_after_heal_s"]}',
     "<= 10 / <= 30", lambda v: float(v.split(" / ")[0]) <= 10
     and float(v.split(" / ")[1]) <= 30),
    ("adaptive", "failed attempts, adaptive / fixed concurrency",
     lambda r: f'{r["adaptive"]["failed_attempts"]} / {r["fixed"]["failed_attempts"]}',
     "adaptive < fixed", lambda v: int(v.split(" / ")[0]) < int(v.split(" / ")[1])),
    ("shards", "hot noop queue, concurrency 40, 4 workers: drain s, maxShards 1 / 4 (speedup)",
     lambda r: f'{r["max_shards_1"]["drain_s"]} / {r["max_shards_4"]["drain_s"]} '
               f'({r["speedup"]})', ">= 2.5 x",
     lambda v: float(v.split("(")[1].rstrip(")")) >= 2.5),
    ("shards", "CPU busy over the drain, % of both cores, maxShards 1 / 4 (consumers)",
     lambda r: f'{r["max_shards_1"].get("cpu_busy_pct")} / {r["max_shards_4"].get("cpu_busy_pct")}'
               f' ({r["max_shards_1"]["consumers"]} / {r["max_shards_4"]["consumers"]})',
     "", lambda v: True),
    ("shards", "same queue drained by a bare boto3 loop, 16 threads, no handler, s (the server's "
     "ceiling for one queue)", lambda r: r["bare_loop"]["drain_s"], "", lambda v: True),
    ("shards", "the SQS server's own process, % of one core, maxShards 1 / 4",
     lambda r: f'{r["max_shards_1"].get("sqs_server_cpu_pct")} / '
               f'{r["max_shards_4"].get("sqs_server_cpu_pct")}', "", lambda v: True),
    ("efficiency", "CPU ms per message while draining, tree / boto3 loop (ratio): noop, "
     "concurrency 10", lambda r: _cpu(r["noop"]), "ratio <= 1.2", lambda v: _ratio(v) <= 1.2),
    ("efficiency", "same: 50 ms handlers, concurrency 5", lambda r: _cpu(r["sleep_50ms"]),
     "ratio <= 1.5", lambda v: _ratio(v) <= 1.5),
    ("efficiency", "same: 100-500 ms handlers, concurrency 5",
     lambda r: _cpu(r["sleep_100_500ms"]), "ratio <= 1.5", lambda v: _ratio(v) <= 1.5),
    ("efficiency", "CPU ms per message over the whole run (idle machinery included), tree "
     "(ratio): noop / 50 ms / 100-500 ms", lambda r: " / ".join(
         f'{r[w]["tree_cpu_ms_per_message_whole_run"]} ({r[w]["ratio_whole_run"]})'
         for w in ("noop", "sleep_50ms", "sleep_100_500ms")), "", lambda v: True),
    ("efficiency", "4 busy queues (50 ms) on 2 workers: tree PSS / RSS, MB",
     lambda r: f'{r["sleep_50ms"]["memory_mid_drain"]["tree"]["pss_mb"]} / '
               f'{r["sleep_50ms"]["memory_mid_drain"]["tree"]["rss_mb"]}', "PSS <= 150",
     lambda v: float(v.split(" / ")[0]) <= 150),
    ("efficiency", "a consumer's own memory (USS), MB", lambda r: _per_consumer(
        r["sleep_50ms"]["memory_mid_drain"]["consumer"]), "<= 20", lambda v: v <= 20),
    ("efficiency", "consumer start, spawn to its first job, ms (median / max)",
     lambda r: f'{r["consumer_start_ms"]["median"]} / {r["consumer_start_ms"]["max"]}',
     "median <= 50", lambda v: float(v.split(" / ")[0]) <= 50),
    ("idle", "MW, 2 workers, 100 empty queues: % of one core",
     lambda r: r["percent_of_one_core"], "<= 5", lambda v: v <= 5),
    ("cli", "orchestrator --help, s", lambda r: r["help_s"], "<= 0.2", lambda v: v <= 0.2),
    ("cli", "orchestrator queue list (3 queues, embedded servers running), s",
     lambda r: r["queue_list_s"], "<= 0.6", lambda v: v <= 0.6),
    ("install", "base install (pip install orchestrator): site-packages MB / packages",
     lambda r: f'{r["base"]["site_packages_mb"]} / {r["base"]["packages"]}', "<= 80 MB",
     lambda v: float(v.split(" / ")[0]) <= 80),
    ("install", "with the embedded servers (pip install 'orchestrator[embedded]'), baseline: "
     "site-packages MB / packages",
     lambda r: f'{r["embedded"]["site_packages_mb"]} / {r["embedded"]["packages"]}', "",
     lambda v: True),
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


def _cpu(w: dict[str, Any]) -> str:
    return (f'{w["tree_cpu_ms_per_message"]} / {w["loop_cpu_ms_per_message"]} '
            f'({w["ratio"]})')  # fmt: skip


def _ratio(value: str) -> float:
    return float(value.split("(")[1].rstrip(")"))


def _per_consumer(row: dict[str, float]) -> float:
    return round(row["uss_mb"] / row["count"], 1)


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
