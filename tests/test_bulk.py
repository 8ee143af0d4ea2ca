"""`run_concurrently`: every item once, failures per item, bounded concurrency and a bounded window (no timing)."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from octue_dagster import InvalidInputError
from octue_dagster.core.storage.runner import run_concurrently


class Meter:
    """Counts calls running at once, and how far ahead of the consumer the producer has been read."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.peak_running = 0
        self.taken = 0
        self.release = threading.Event()

    def produce(self, count: int):
        for index in range(count):
            with self.lock:
                self.taken += 1
            yield index

    def call(self, item: int) -> int:
        with self.lock:
            self.running += 1
            self.peak_running = max(self.peak_running, self.running)
        try:
            if item % 7 == 3:
                raise ValueError(f"item {item} is bad")
            return item * 2
        finally:
            with self.lock:
                self.running -= 1


@settings(max_examples=30, deadline=None)
@given(count=st.integers(0, 120), concurrency=st.integers(1, 12), window=st.none() | st.integers(1, 30))
def test_every_item_has_exactly_one_outcome_and_failures_stay_per_item(count, concurrency, window):
    meter = Meter()
    outcomes = list(run_concurrently(meter.call, meter.produce(count), concurrency=concurrency, window=window))
    assert sorted(outcome.item for outcome in outcomes) == list(range(count))
    for outcome in outcomes:
        if outcome.item % 7 == 3:
            assert not outcome.ok and str(outcome.error) == f"item {outcome.item} is bad" and outcome.result is None
        else:
            assert outcome.ok and outcome.result == outcome.item * 2
    assert meter.peak_running <= concurrency


def test_the_producer_is_read_only_a_window_ahead_of_the_consumer():
    meter = Meter()
    outcomes = run_concurrently(meter.call, meter.produce(10_000), concurrency=4, window=8)
    for consumed, _ in enumerate(outcomes, start=1):
        assert meter.taken - consumed <= 8  # items taken but not yet handed back never exceed the window
        if consumed == 100:
            break
    outcomes.close()  # stops taking items; the calls already running finish
    assert meter.taken <= 100 + 8 and meter.running == 0


def test_calls_overlap_up_to_the_concurrency():
    # Each call waits until `concurrency` calls are running at once, which only a pool of that size can reach.
    concurrency = 6
    barrier = threading.Barrier(concurrency, timeout=30)
    outcomes = list(run_concurrently(lambda item: barrier.wait(), range(concurrency * 3), concurrency=concurrency))
    assert all(outcome.ok for outcome in outcomes) and len(outcomes) == concurrency * 3


def test_a_failing_listing_propagates_after_running_calls_finish():
    finished: list[int] = []

    def items():
        yield from range(5)
        raise ConnectionError("listing broke")

    with pytest.raises(ConnectionError, match="listing broke"):
        for _ in run_concurrently(finished.append, items(), concurrency=3):
            pass
    assert sorted(finished) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("bad", [0, -1, 1000, 2.5, "8", True])
def test_bad_concurrency_is_refused_with_the_allowed_range(bad):
    with pytest.raises(InvalidInputError, match="from 1 to"):
        list(run_concurrently(str, [1], concurrency=bad))
