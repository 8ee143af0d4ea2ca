"""The bounded concurrent runner behind dataset uploads and downloads (`run_all`: results, stop at the first error)."""

from __future__ import annotations

import io
import threading

import pytest

from octue_dagster.core.storage import runner as transfers
from octue_dagster.core.storage.runner import MemoryBudget, run_all
from octue_dagster.exceptions import InvalidInputError


def test_runs_every_item_with_bounded_concurrency():
    lock, running, peak = threading.Lock(), [0], [0]
    release = threading.Barrier(3, timeout=30)

    def work(item: int) -> int:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        if item < 3:
            release.wait()  # the first three run at the same time, proving they are concurrent
        with lock:
            running[0] -= 1
        return item * 2

    results = sorted(run_all(work, range(50), concurrency=3))
    assert results == [item * 2 for item in range(50)]
    assert peak[0] == 3


def test_the_first_error_is_raised_and_stops_new_work():
    started = []

    def work(item: int) -> int:
        started.append(item)
        if item == 0:
            raise ValueError("boom")
        return item

    with pytest.raises(ValueError, match="boom"):
        list(run_all(work, range(10_000), concurrency=2))
    assert len(started) < 100  # a bounded window, not all 10,000 submitted


def test_memory_budget_never_exceeds_its_limit():
    budget, lock, held, peak = MemoryBudget(100), threading.Lock(), [0], [0]

    def work(size: int) -> None:
        with budget.hold(size):
            with lock:
                held[0] += min(size, 100)
                peak[0] = max(peak[0], held[0])
            with lock:
                held[0] -= min(size, 100)

    list(run_all(work, [60, 60, 60, 500, 40, 40], concurrency=6))
    assert peak[0] <= 100


def test_worker_setting_is_validated(monkeypatch):
    monkeypatch.setenv(transfers.WORKERS_VARIABLE, "4")
    assert transfers.default_workers() == 4
    monkeypatch.setenv(transfers.WORKERS_VARIABLE, "many")
    with pytest.raises(InvalidInputError, match="OCTUE_DAGSTER_TRANSFER_WORKERS"):
        transfers.default_workers()
    with pytest.raises(InvalidInputError, match="1 to 256"):
        list(run_all(str, [1], concurrency=0))


def test_progress_bar_only_when_stderr_is_a_terminal(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(transfers.sys, "stderr", Terminal())
    assert transfers.show_progress()
    bar = transfers._progress(3, "x")
    assert type(bar).__name__ == "tqdm"
    bar.close()
    monkeypatch.undo()
    monkeypatch.setattr(transfers.sys, "stderr", None)
    assert not transfers.show_progress()
    assert isinstance(transfers._progress(3, "x"), transfers._NoProgress)
