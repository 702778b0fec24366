"""Headless Chromium (Debian's package) driven by Playwright, for dashboard tests.

Without a browser the tests skip, saying why; CI sets ORCHESTRATOR_REQUIRE_BROWSER=1
so that a missing browser fails the run instead.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from tests.process.conftest import (  # noqa: F401  (fixtures used by the browser tests)
    admin,
    daemon_env,
    record_dir,
    start_daemon,
)

# As root Chromium needs --no-sandbox; the background-networking flags keep it from
# calling Google's hosts, which this machine's closed network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def _unavailable(reason: str) -> None:
    if os.environ.get("ORCHESTRATOR_REQUIRE_BROWSER") == "1":
        pytest.fail(f"browser tests are required here but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    executable = os.environ.get("CHROMIUM") or shutil.which("chromium")
    if not executable:
        _unavailable("Chromium is not installed (apt-get install chromium, or set CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
