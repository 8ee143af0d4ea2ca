"""Small measuring tools shared by the benchmarks: test files, timers, bytes read, HTTP request counting."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
_WRITE_BLOCK = 4 * MIB


def make_random_file(path: Path, size_bytes: int) -> Path:
    """Write `size_bytes` of random (incompressible) bytes to `path`, in blocks so that memory stays small."""
    with open(path, "wb") as file:
        remaining = size_bytes
        while remaining:
            block = os.urandom(min(_WRITE_BLOCK, remaining))
            file.write(block)
            remaining -= len(block)
    return path


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    """Run `function` once; return (wall-clock seconds, its result)."""
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def bytes_read_by_this_process() -> int:
    """Bytes this process has read through read-like system calls so far (`rchar` in /proc/self/io).

    `rchar` counts reads served from the page cache too, so it shows whether a file was re-read even when the disk
    was not touched.
    """
    with open("/proc/self/io") as file:
        for line in file:
            if line.startswith("rchar:"):
                return int(line.split()[1])
    raise RuntimeError("/proc/self/io has no rchar line")


class RequestCounter:
    """Counts the HTTP requests a storage client sends, by wrapping its session's `request` (as tests/conftest.py)."""

    def __init__(self) -> None:
        self.count = 0

    @contextlib.contextmanager
    def spying_on(self, client: Any) -> Iterator[RequestCounter]:
        session = client._http
        had_own = "request" in vars(session)
        original = session.request

        def spy(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return original(method, url, *args, **kwargs)

        session.request = spy
        try:
            yield self
        finally:
            if had_own:
                session.request = original
            else:
                del session.request  # the instance attribute shadowed the class's method; removing it restores that
