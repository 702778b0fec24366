"""What a failure keeps of a handler's error, traceback and body: cut to a few KiB."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from orchestrator import handlers, models
from orchestrator.errors import HandlerImportError


@pytest.mark.parametrize(
    ("text", "limit", "kept"),
    [
        ("short", 10, "short"),
        ("x" * 10, 10, "x" * 10),
        ("x" * 11, 10, "x" * 10 + "…[truncated 1 bytes]"),
        ("é" * 6, 5, "éé…[truncated 8 bytes]"),  # never half a character
        ("E" * 9_000_000, 4096, "E" * 4096 + "…[truncated 8,995,904 bytes]"),
    ],
)
def test_clip(text: str, limit: int, kept: str) -> None:
    assert models.clip(text, limit) == kept


def test_a_huge_import_error_is_cut(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "huge_import_mod.py").write_text('raise ValueError("E" * 9_000_000)\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(HandlerImportError) as info:
            handlers.import_handler("huge_import_mod:handle")
    finally:
        sys.modules.pop("huge_import_mod", None)
    assert len(str(info.value)) < 4500 and "…[truncated 8,99" in str(info.value)
