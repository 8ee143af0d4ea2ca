"""Counts that the reliability tests record (faults injected, inputs tried, anything lost) for docs/reliability.md."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

def summary_dir() -> Path:
    """`$OCTUE_RELIABILITY_SUMMARY_DIR/octue-dagster-reliability` (tests/conftest.py sets the variable to pytest's
    basetemp unless it is set: never the system's temporary directory)."""
    return Path(os.environ.get("OCTUE_RELIABILITY_SUMMARY_DIR") or tempfile.gettempdir()) / "octue-dagster-reliability"


def save_summary(name: str, summary: dict[str, Any]) -> Path:
    """Write one test module's counts to `$OCTUE_RELIABILITY_SUMMARY_DIR/octue-dagster-reliability/<name>.json`."""
    folder = summary_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(summary, indent=2, sort_keys=True))
    return path
