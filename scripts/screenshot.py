"""Take docs/dashboard.png from the demo, as the README's Quick start runs it:
`scripts/demo.sh` (the servers, a `demo` queue, the daemon), a few more sends so that the
charts have something to draw, then a Chromium screenshot of the dashboard.

    .venv/bin/python scripts/screenshot.py   # needs Chromium (scripts/install-browser.sh)
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ORCH = str(ROOT / ".venv" / "bin" / "orchestrator")
URL = "http://127.0.0.1:3000/"


def _up() -> bool:
    try:
        with urllib.request.urlopen(URL + "health", timeout=1):
            return True
    except OSError:
        return False


def main() -> int:
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium")
    if not chromium:
        print("Chromium is not installed: bash scripts/install-browser.sh", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    env = {**os.environ, "ORCHESTRATOR_DEMO_SETUP": "0"}
    demo = subprocess.Popen(["bash", "scripts/demo.sh"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not _up():
            if time.monotonic() > deadline or demo.poll() is not None:
                print("the demo's dashboard did not come up", file=sys.stderr)
                return 1
            time.sleep(0.5)
        # Two minutes of traffic: the sparklines get points to join.
        for _ in range(8):
            subprocess.run([ORCH, "queue", "send", "demo", "300"], cwd=ROOT, check=True,
                           capture_output=True)  # fmt: skip
            time.sleep(15)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1680, "height": 900})
            page.goto(URL)
            for chart in ('tr[data-queue="demo"] td.spark svg path.line.a[d*="L"]',
                          '#workers tr[data-worker] td.spark svg path.line.a[d*="L"]'):
                page.wait_for_selector(chart, timeout=30_000)
            page.screenshot(path=str(ROOT / "docs" / "dashboard.png"), full_page=True)
            browser.close()
        print("wrote docs/dashboard.png")
        return 0
    finally:
        demo.send_signal(signal.SIGINT)  # the daemon stops gracefully; the servers go on
        demo.wait(60)


if __name__ == "__main__":
    sys.exit(main())
