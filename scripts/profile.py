#!/usr/bin/env python3
"""Where a busy daemon's CPU goes: py-spy samples every process of its tree while 4 queues
drain, and the samples are summed by kind of process, by package and by function.

    .venv/bin/pip install py-spy   # once: a sampling profiler, not a dependency
    .venv/bin/python scripts/profile.py [--workload noop|sleep_50ms|sleep_100_500ms]
                                        [--seconds 15] [--per-queue N]

Only threads holding the GIL are sampled (`--gil`: py-spy's idle detection does not
see threads blocked in C), so a sample is Python CPU time; time in C with the GIL
released (socket sends, hashing) is not counted. Samples are taken 100 times a second
from every process (`--subprocesses`), for `--seconds` from the first handled message.
SQS is LocalStack when installed, else moto (see bench.py).
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from benchexec import fill_queues, make_queues
from benchlib import Bench, sqs_kind, wait_for
from benchtree import WORKLOADS, kinds

PROCESS = re.compile(r'^process (\d+):"(.*)"$')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workload", choices=list(WORKLOADS), default="noop")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--per-queue", type=int, default=4000)
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        print("py-spy is not installed: .venv/bin/pip install py-spy", file=sys.stderr)
        return 2
    handler, conc, ms = WORKLOADS[args.workload]
    with tempfile.TemporaryDirectory(prefix="orchestrator-profile-") as tmp:
        bench = Bench(Path(tmp), sqs_kind())
        try:
            urls = make_queues(bench, "p", 4, handler, conc)
            fill_queues(bench, urls, args.per_queue, lambda i: {"ms": ms(random.Random(i)), "i": i})
            out = Path(tmp) / "samples.txt"
            with bench.daemon("--mode", "MW", "--workers", "2") as proc:
                wait_for(lambda: bench.records(), 120, "the first handled message", 0.05)
                kind_by_pid = kinds(proc.pid)  # forked consumers share a command line
                subprocess.run([spy, "record", "--pid", str(proc.pid), "--subprocesses",
                                "--duration", str(int(args.seconds)), "--rate", "100",
                                "--format", "raw", "--output", str(out), "--nonblocking",
                                "--full-filenames", "--gil"],
                               check=True, capture_output=True)  # fmt: skip
                handled = len(bench.records())
            report(out.read_text(), args.workload, handled, kind_by_pid)
        finally:
            bench.close()
    return 0


def report(raw: str, workload: str, handled: int, kind_by_pid: dict[int, str]) -> None:
    """Samples by kind of process, then each kind's top packages and functions (own time)."""
    kinds: Counter[str] = Counter()
    packages: dict[str, Counter[str]] = {}
    functions: dict[str, Counter[str]] = {}
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        # --subprocesses nests each process's frame under its parent's: the last is its own
        owners = [m for f in frames if (m := PROCESS.match(f))]
        if not owners or PROCESS.match(frames[-1]):
            continue
        kind = kind_by_pid.get(int(owners[-1].group(1)), "other")
        n = int(count)
        kinds[kind] += n
        leaf = frames[-1]
        packages.setdefault(kind, Counter())[_package(leaf)] += n
        functions.setdefault(kind, Counter())[_function(leaf)] += n
    total = sum(kinds.values())
    print(f"{workload}: {total} samples at 100/s ({total / 100:.1f} CPU s), "
          f"{handled} messages handled by the end")  # fmt: skip
    for kind, n in kinds.most_common():
        print(f"\n## {kind}: {n} samples ({100 * n / total:.0f} %)")
        print("  packages: " + ", ".join(f"{p} {100 * c / n:.0f} %"
                                         for p, c in packages[kind].most_common(8)))  # fmt: skip
        for function, c in functions[kind].most_common(10):
            print(f"  {100 * c / n:5.1f} %  {function}")


def _package(frame: str) -> str:
    """The package a frame's file belongs to: orchestrator's subpackage, a site-package,
    or the standard library module."""
    path = frame[frame.rfind("(") + 1 :].split(":")[0]
    if "/orchestrator/" in path and "site-packages" not in path:
        rest = path.split("/orchestrator/", 1)[1].split("/")
        return "orchestrator/" + "/".join(rest[:-1] or rest)
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/")[0]
    return "stdlib:" + Path(path).stem


def _function(frame: str) -> str:
    name, _, where = frame.partition(" (")
    path = where.rstrip(")")
    short = "/".join(path.split(":")[0].split("/")[-2:])
    return f"{name} ({short})"


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    print(f"\n({time.monotonic() - started:.0f} s)", file=sys.stderr)
    sys.exit(code)
