"""Many-object work with requests in flight at the same time: a bounded thread pool over a stream of items.

Real GCS answers each request in 20-40 ms, so work on thousands of objects is bound by latency, not by CPU or
bandwidth, and overlapping requests is what makes it fast. `run_concurrently` runs a function over items taken
lazily from an iterable (for example a paged listing), with at most `concurrency` calls running and at most
`window` items taken but not yet handed back, so memory stays flat however many objects there are. A failure of one
item is that item's outcome; it never stops or changes the others.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from octue_dagster.exceptions import InvalidInputError

T = TypeVar("T")
R = TypeVar("R")

#: Requests in flight at once for many-object work: enough to hide ~25 ms of latency per request at a few hundred
#: requests per second, few enough to stay well inside GCS's per-bucket limits and a VM's sockets.
DEFAULT_CONCURRENCY = 16
#: The most requests in flight that a setting may ask for.
MAX_CONCURRENCY = 256


@dataclasses.dataclass(frozen=True)
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


def run_concurrently(
    function: Callable[[T], R],
    items: Iterable[T],
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    window: int | None = None,
) -> Iterator[Outcome[T, R]]:
    """Call `function` on every item, `concurrency` at a time, yielding each item's `Outcome` as it completes.

    Items are taken from `items` only as slots free up: at most `window` (default `2 * concurrency`) are taken and
    not yet yielded. Exceptions raised by `function` become outcomes; an exception raised by `items` itself (the
    listing failing) propagates after the outcomes of every item already taken have been yielded. With
    `concurrency=1` every call runs in the calling thread, in order. Closing the iterator early waits for the calls
    already running and starts no more, so nothing is left writing in the background.
    """
    validate_concurrency(concurrency)
    if concurrency == 1:
        for item in items:
            yield _call(function, item)
        return
    window = max(window or 2 * concurrency, concurrency)
    source = iter(items)
    executor = concurrent.futures.ThreadPoolExecutor(concurrency, thread_name_prefix="octue-dagster-bulk")
    pending: set[concurrent.futures.Future[Outcome[T, R]]] = set()
    try:
        exhausted, source_error = False, None
        while True:
            if not exhausted:
                wanted, added = window - len(pending), 0
                try:
                    for item in itertools.islice(source, wanted):
                        pending.add(executor.submit(_call, function, item))
                        added += 1
                except Exception as error:  # the listing failed: finish what was taken, then say so
                    source_error = error
                exhausted = source_error is not None or added < wanted
            if not pending:
                if source_error is not None:
                    raise source_error
                return
            done, pending = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                yield future.result()
    finally:
        for future in pending:
            future.cancel()
        executor.shutdown(wait=True, cancel_futures=True)


def _call(function: Callable[[T], R], item: T) -> Outcome[T, R]:
    try:
        return Outcome(item, function(item))
    except Exception as error:  # one item's failure is its outcome, reported by the caller per item
        return Outcome(item, None, error)


__all__ = ["DEFAULT_CONCURRENCY", "MAX_CONCURRENCY", "Outcome", "run_concurrently", "validate_concurrency"]
