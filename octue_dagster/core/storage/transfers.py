"""Running many transfers at once: a bounded thread pool, a bound on the bytes held in memory, and a progress bar.

Many-object work (a dataset's uploads and downloads) is bound by request latency, not bandwidth, so it runs on a
pool of threads. Work is submitted in a bounded window rather than all at once, so a dataset of a million files holds
a few thousand futures, not a million, and each task declares how many bytes of memory it may hold (an upload chunk),
so that concurrent large uploads never need more than `memory_budget_bytes` together. A tqdm progress bar is shown
only when stderr is a terminal, so logs of scheduled runs stay clean.
"""

from __future__ import annotations

import concurrent.futures
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from octue_dagster.exceptions import InvalidInputError

T = TypeVar("T")
R = TypeVar("R")

#: Environment variable that sets the default number of concurrent transfers.
WORKERS_VARIABLE = "OCTUE_DAGSTER_TRANSFER_WORKERS"
DEFAULT_WORKERS = 16
#: What concurrent transfers may hold in memory together (upload chunks), whatever the number of workers.
DEFAULT_MEMORY_BUDGET_BYTES = 64 * 1024 * 1024


def default_workers() -> int:
    """The number of concurrent transfers: `$OCTUE_DAGSTER_TRANSFER_WORKERS`, else 16."""
    configured = os.environ.get(WORKERS_VARIABLE)
    if configured is None:
        return DEFAULT_WORKERS
    try:
        return validate_workers(int(configured))
    except ValueError:
        raise InvalidInputError(
            f"{WORKERS_VARIABLE}={configured!r} is not a positive whole number of concurrent transfers."
        ) from None


def validate_workers(value: int) -> int:
    """Return `value` if it is a usable number of workers (1 to 256), else raise `InvalidInputError`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 256:
        raise InvalidInputError(f"The number of concurrent transfers must be a whole number from 1 to 256; got {value!r}.")
    return value


class MemoryBudget:
    """A counting limit on bytes held at once: `with budget.hold(n): ...` waits until `n` bytes are free."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit = max(1, limit_bytes)
        self._free = self.limit
        self._condition = threading.Condition()

    def hold(self, size: int) -> _Hold:
        # A task larger than the whole budget runs alone rather than never.
        return _Hold(self, min(max(0, size), self.limit))

    def _acquire(self, size: int) -> None:
        with self._condition:
            self._condition.wait_for(lambda: self._free >= size)
            self._free -= size

    def _release(self, size: int) -> None:
        with self._condition:
            self._free += size
            self._condition.notify_all()


class _Hold:
    def __init__(self, budget: MemoryBudget, size: int) -> None:
        self.budget, self.size = budget, size

    def __enter__(self) -> None:
        self.budget._acquire(self.size)

    def __exit__(self, *exc: object) -> None:
        self.budget._release(self.size)


def show_progress() -> bool:
    """Whether to draw a progress bar: only when a person is watching (stderr is a terminal)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class _NoProgress:
    def update(self, count: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, description: str) -> Any:
    if not show_progress():
        return _NoProgress()
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="file", leave=False)


def run_concurrently(
    function: Callable[[T], R],
    items: Iterable[T],
    *,
    max_workers: int | None = None,
    description: str = "Transferring",
    total: int | None = None,
) -> Iterator[R]:
    """Apply `function` to every item on a bounded thread pool, yielding results in completion order.

    At most `2 * max_workers` items are in flight at once. The first exception stops new work from starting, waits
    for the running tasks, and is raised; tasks already finished stay done (each is a whole-object operation).
    """
    workers = validate_workers(max_workers) if max_workers is not None else default_workers()
    items = iter(items)
    progress = _progress(total, description) if total is not None else _NoProgress()
    window = 2 * workers
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="octue-transfer") as pool:
            pending: set[concurrent.futures.Future[R]] = set()
            exhausted = False
            while pending or not exhausted:
                while not exhausted and len(pending) < window:
                    item = next(items, _END)
                    if item is _END:
                        exhausted = True
                    else:
                        pending.add(pool.submit(function, item))  # type: ignore[arg-type]
                if not pending:
                    break
                done, pending = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in done:
                    error = future.exception()
                    if error is not None:
                        for other in pending:
                            other.cancel()
                        concurrent.futures.wait(pending)
                        raise error
                    progress.update(1)
                    yield future.result()
    finally:
        progress.close()


_END: Any = object()
