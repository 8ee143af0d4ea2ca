"""The one bounded concurrent runner for many-object work: re-tagging, deletes, dataset uploads and downloads.

Real GCS answers each request in 20-40 ms, so work on thousands of objects is bound by latency, not by CPU or
bandwidth, and overlapping requests is what makes it fast. `run_concurrently` calls a function on items taken lazily
from an iterable (for example a paged listing), with at most `concurrency` calls running and at most `window` items
taken but not yet handed back, so memory stays flat however many objects there are. Options add a memory budget (what
concurrent uploads may hold in buffers together) and a tqdm progress bar (drawn only when stderr is a terminal, so the
logs of scheduled runs stay clean).

A failure of one item is that item's `Outcome`; it never stops or changes the others. `run_all` is the same runner
for work that should stop at the first failure (a dataset upload): it yields results and raises the first error
after the calls already running have finished, starting no more.

The runner keeps its own worker threads fed from one queue and hands outcomes back through another, instead of a
`ThreadPoolExecutor` and `concurrent.futures.wait`: waiting on a set of futures re-registers a waiter on each of them
per completion (a cost that grows with the window), and a future per item is more work than the item itself when
the item needs no request (an unchanged file of a dataset re-upload).
"""

from __future__ import annotations

import dataclasses
import os
import queue
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

from octue_dagster.exceptions import InvalidInputError

T = TypeVar("T")
R = TypeVar("R")

#: Requests in flight at once for many-object work: enough to hide ~25 ms of latency per request at a few hundred
#: requests per second, few enough to stay well inside GCS's per-bucket limits and a VM's sockets.
DEFAULT_CONCURRENCY = 16
#: The most requests in flight that a setting may ask for.
MAX_CONCURRENCY = 256
#: Environment variable that sets the default number of concurrent transfers (dataset uploads and downloads).
WORKERS_VARIABLE = "OCTUE_DAGSTER_TRANSFER_WORKERS"
DEFAULT_WORKERS = DEFAULT_CONCURRENCY
#: What concurrent transfers may hold in memory together (upload chunks), whatever the number of workers.
DEFAULT_MEMORY_BUDGET_BYTES = 64 * 1024 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome(Generic[T, R]):
    """What happened to one item: its `result`, or the `error` it raised (then `result` is `None`)."""

    item: T
    result: R | None = None
    error: Exception | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def validate_concurrency(concurrency: int) -> int:
    """`concurrency` if it is a whole number from 1 to `MAX_CONCURRENCY`, else an error saying what to pass."""
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or not 1 <= concurrency <= MAX_CONCURRENCY:
        raise InvalidInputError(
            f"concurrency must be a whole number of requests in flight from 1 to {MAX_CONCURRENCY}; got "
            f"{concurrency!r}. 1 runs one request at a time; the default is {DEFAULT_CONCURRENCY}."
        )
    return concurrency


def default_workers() -> int:
    """The number of concurrent transfers: `$OCTUE_DAGSTER_TRANSFER_WORKERS`, else 16."""
    configured = os.environ.get(WORKERS_VARIABLE)
    if configured is None:
        return DEFAULT_WORKERS
    try:
        return validate_concurrency(int(configured))
    except ValueError:
        raise InvalidInputError(
            f"{WORKERS_VARIABLE}={configured!r} is not a positive whole number of concurrent transfers."
        ) from None


class MemoryBudget:
    """A counting limit on bytes held at once: `with budget.hold(n): ...` waits until `n` bytes are free.

    Example::

        budget = MemoryBudget(64 * 1024 * 1024)
        with budget.hold(8 * 1024 * 1024):
            upload(...)
    """

    def __init__(self, limit_bytes: int) -> None:
        self.limit = max(1, limit_bytes)
        self._free = self.limit
        self._condition = threading.Condition()

    def hold(self, size: int) -> _Hold:
        # A task larger than the whole budget runs alone rather than never.
        return _Hold(self, min(max(0, size), self.limit))

    def _acquire(self, size: int) -> None:
        if size == 0:
            return
        with self._condition:
            self._condition.wait_for(lambda: self._free >= size)
            self._free -= size

    def _release(self, size: int) -> None:
        if size == 0:
            return
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


def _progress(total: int | None, description: str) -> Any:
    if not show_progress():
        return _NoProgress()
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="file", leave=False)


def run_concurrently(
    function: Callable[[T], R],
    items: Iterable[T],
    *,
    concurrency: int | None = None,
    window: int | None = None,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
    memory_of: Callable[[T], int] | None = None,
    progress: str | None = None,
    total: int | None = None,
    quick: Callable[[T], R | None] | None = None,
) -> Iterator[Outcome[T, R]]:
    """Call `function` on every item, `concurrency` at a time, yielding each item's `Outcome` as it completes.

    - `concurrency`: calls running at once (default `$OCTUE_DAGSTER_TRANSFER_WORKERS`, else 16). With 1, every call
      runs in the calling thread, in order.
    - `window`: items taken from `items` and not yet yielded, at most (default `2 * concurrency`): items are taken
      only as slots free up, so a listing of a million objects streams through.
    - `memory_of`: the bytes a call on an item holds in memory; calls wait until their bytes fit in
      `memory_budget_bytes` together (a call larger than the whole budget runs alone).
    - `progress`: a description for a tqdm bar of `total` items, drawn only when stderr is a terminal.
    - `quick`: a cheap check run in the calling thread as each item is taken: a result other than `None` is the
      item's result, without handing it to a thread (an unchanged file of a dataset re-upload needs no request, and
      handing thousands of such items between threads costs more than the items).

    Exceptions raised by `function` become outcomes; an exception raised by `items` itself (the listing failing)
    propagates after the outcomes of every item already taken have been yielded. Closing the iterator early waits
    for the calls already running and starts no more, so nothing is left writing in the background.

    Example::

        for outcome in run_concurrently(store.delete_object, paths, concurrency=32):
            if not outcome.ok:
                print(outcome.item, outcome.error)
    """
    workers = default_workers() if concurrency is None else validate_concurrency(concurrency)
    call: Callable[[T], R] = function
    if memory_of is not None:
        call = _within_budget(function, memory_of, MemoryBudget(memory_budget_bytes))
    bar = _progress(total, progress) if progress is not None else _NoProgress()
    try:
        if workers == 1:
            for item in items:
                outcome = _settled(quick, item) if quick is not None else None
                if outcome is None:
                    outcome = _call(call, item)
                bar.update(1)
                yield outcome
            return
        for outcome in _run_on_threads(call, items, workers, max(window or 2 * workers, workers), quick):
            bar.update(1)
            yield outcome
    finally:
        bar.close()


def run_all(function: Callable[[T], R], items: Iterable[T], **options: Any) -> Iterator[R]:
    """Like `run_concurrently` (same options), but yield results and stop at the first failure.

    The first exception raised by `function` stops new calls from starting, waits for the running ones (each is a
    whole-object operation, so what finished stays done), and is raised.
    """
    outcomes = run_concurrently(function, items, **options)
    try:
        for outcome in outcomes:
            if outcome.error is not None:
                outcomes.close()  # start no more; wait for the running calls
                raise outcome.error
            yield outcome.result  # type: ignore[misc]
    finally:
        outcomes.close()


def _within_budget(function: Callable[[T], R], memory_of: Callable[[T], int], budget: MemoryBudget) -> Callable[[T], R]:
    def call(item: T) -> R:
        with budget.hold(memory_of(item)):
            return function(item)

    return call


class _Fatal:
    """A `BaseException` (KeyboardInterrupt, SystemExit) raised on a worker thread, to re-raise on the caller's."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


_STOP: Any = object()


def _settled(quick: Callable[[T], R | None], item: T) -> Outcome[T, R] | None:
    """The item's outcome if `quick` settles it (a result, or an error), else `None`."""
    outcome = _call(quick, item)
    return None if outcome.ok and outcome.result is None else outcome  # type: ignore[return-value]


def _run_on_threads(
    function: Callable[[T], R], items: Iterable[T], workers: int, window: int, quick: Callable[[T], R | None] | None
) -> Iterator[Outcome[T, R]]:
    work: queue.SimpleQueue[Any] = queue.SimpleQueue()
    done: queue.SimpleQueue[Outcome[T, R] | _Fatal] = queue.SimpleQueue()
    stopping = threading.Event()

    def worker() -> None:
        while True:
            item = work.get()
            if item is _STOP:
                return
            if stopping.is_set():  # closed early: items still queued are not started
                continue
            try:
                done.put(_call(function, item))
            except BaseException as error:  # noqa: BLE001 - handed to the caller's thread, not swallowed
                done.put(_Fatal(error))

    threads: list[threading.Thread] = []
    source = iter(items)
    in_flight, exhausted = 0, False
    source_error: Exception | None = None
    try:
        while True:
            while not exhausted and in_flight < window:
                try:
                    item = next(source)
                except StopIteration:
                    exhausted = True
                    break
                except Exception as error:  # the listing failed: finish what was taken, then say so
                    source_error, exhausted = error, True
                    break
                if quick is not None:
                    settled = _settled(quick, item)
                    if settled is not None:
                        yield settled
                        continue
                work.put(item)
                in_flight += 1
                if len(threads) < workers and len(threads) < in_flight:
                    # Threads start as work arrives, so a run over three items starts three, not sixteen.
                    thread = threading.Thread(target=worker, name=f"octue-dagster-runner-{len(threads)}", daemon=True)
                    thread.start()
                    threads.append(thread)
            if in_flight == 0:
                if source_error is not None:
                    raise source_error
                return
            outcome = done.get()
            in_flight -= 1
            if isinstance(outcome, _Fatal):
                raise outcome.error
            yield outcome
    finally:
        stopping.set()
        for _ in threads:
            work.put(_STOP)
        for thread in threads:
            thread.join()


def _call(function: Callable[[T], R], item: T) -> Outcome[T, R]:
    try:
        return Outcome(item, function(item))
    except Exception as error:  # one item's failure is its outcome, reported by the caller per item
        return Outcome(item, None, error)


__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_MEMORY_BUDGET_BYTES",
    "MAX_CONCURRENCY",
    "MemoryBudget",
    "Outcome",
    "WORKERS_VARIABLE",
    "default_workers",
    "run_all",
    "run_concurrently",
    "show_progress",
    "validate_concurrency",
]
