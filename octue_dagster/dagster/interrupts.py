"""Holding back SIGTERM/SIGINT while the I/O manager commits an object, so that what GCS stored gets recorded.

Dagster runs every execution inside `capture_interrupts()` (a signal only sets a flag) and raises interrupts as
`DagsterExecutionInterruptedError` inside user-code boundaries such as `handle_output`. A SIGTERM during a large upload
would then stop `handle_output` after GCS had committed the new object (the last chunk's answer is what was
interrupted) but before Dagster recorded it: the object new, the record old. Inside `deferred_interrupts()` a signal
only sets Dagster's flag again; when the block ends the flag is kept, so Dagster raises the interrupt at its next
checkpoint, after it has recorded this output's materialization. The run still stops; it just stops after the record.

This uses `dagster._utils.interrupts`, the mechanism Dagster itself uses for the same purpose (private, so it is
pinned by `tests/test_recorded_versions.py`); without it, the block runs with interrupts as they are.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

try:
    from dagster._utils import interrupts as _dagster_interrupts
except ImportError:  # pragma: no cover - a Dagster without it: nothing is deferred
    _dagster_interrupts = None  # type: ignore[assignment]


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Run the block with SIGINT/SIGTERM held back until Dagster's next checkpoint (main thread only)."""
    if _dagster_interrupts is None:
        yield
        return
    received = False
    try:
        with _dagster_interrupts.capture_interrupts():
            try:
                yield
            finally:
                received = _dagster_interrupts.check_captured_interrupt()
    finally:
        if received:
            # `capture_interrupts` clears the flag on exit; set it again for Dagster's outer capture to raise.
            _dagster_interrupts._received_interrupt["received"] = True  # noqa: SLF001


__all__ = ["deferred_interrupts"]
