"""Hashing local files through memory-mapped windows: the same crc32c as over the bytes, one window mapped at a time,
and files that cannot be mapped or change while hashed are read instead or reported, never a crash."""

from __future__ import annotations

import errno
import mmap
import os
import threading

import crc32c
import pytest

from octue_dagster.core.local import hashing
from octue_dagster.exceptions import LocalFileChangedError, OctueDagsterError

WINDOW = 64 * 1024  # a multiple of mmap.ALLOCATIONGRANULARITY on every platform that has one of 4 or 64 KiB


def expected(data: bytes) -> str:
    return hashing.encode_crc32c(crc32c.crc32c(data))


class WindowSpy:
    """Stands in for `mmap.mmap`: makes real maps, records them, and checks only one is open at a time."""

    def __init__(self) -> None:
        self.made: list[mmap.mmap] = []
        self.most_open = 0

    def __call__(self, *args, **kwargs) -> mmap.mmap:
        window = mmap.mmap(*args, **kwargs)  # the real class: the spy is installed on hashing's module reference
        self.made.append(window)
        self.most_open = max(self.most_open, sum(not made.closed for made in self.made))
        return window


@pytest.fixture
def spy(monkeypatch) -> WindowSpy:
    monkeypatch.setattr(hashing, "MMAP_WINDOW_BYTES", WINDOW)
    monkeypatch.setattr(hashing, "MMAP_MIN_BYTES", 1)
    monkeypatch.delenv(hashing.MMAP_VARIABLE, raising=False)
    recorder = WindowSpy()
    monkeypatch.setattr(hashing, "mmap", _ModuleWith(mmap, mmap=recorder))
    return recorder


class _ModuleWith:
    """A module with some names replaced (everything else, such as constants, from the real module)."""

    def __init__(self, module, **overrides) -> None:
        self._module, self._overrides = module, overrides

    def __getattr__(self, name: str):
        return self._overrides[name] if name in self._overrides else getattr(self._module, name)


@pytest.mark.parametrize("size", [1, WINDOW - 1, WINDOW, WINDOW + 1, 3 * WINDOW + 123])
def test_mapped_hash_is_crc32c_of_the_bytes_one_window_at_a_time(tmp_path, spy, size):
    data = os.urandom(size)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    assert hashing.read_file_hash(path) == expected(data)
    assert len(spy.made) == -(-size // WINDOW)  # every byte went through a mapped window
    assert spy.most_open == 1 and all(window.closed for window in spy.made)  # memory stays one window


def test_an_empty_file_is_read_not_mapped(tmp_path, spy):
    path = tmp_path / "empty.bin"
    path.write_bytes(b"")
    assert hashing.read_file_hash(path) == expected(b"")
    assert spy.made == []


def test_a_fifo_is_read_not_mapped(tmp_path, spy):
    path = tmp_path / "pipe"
    os.mkfifo(path)
    data = os.urandom(3 * WINDOW + 5)

    def write() -> None:
        with open(path, "wb") as pipe:
            pipe.write(data)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert hashing.read_file_hash(path) == expected(data)
    finally:
        writer.join(timeout=30)
    assert spy.made == []


def test_a_file_system_without_mmap_is_read(tmp_path, monkeypatch):
    monkeypatch.setattr(hashing, "MMAP_MIN_BYTES", 1)

    def refuse(*args, **kwargs):
        raise OSError(errno.ENODEV, "No such device")

    monkeypatch.setattr(hashing, "mmap", _ModuleWith(mmap, mmap=refuse))
    data = os.urandom(2 * WINDOW)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    assert hashing.read_file_hash(path) == expected(data)


def test_hashing_by_reading_only_when_mmap_is_switched_off(tmp_path, spy, monkeypatch):
    monkeypatch.setenv(hashing.MMAP_VARIABLE, "0")
    data = os.urandom(2 * WINDOW)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    assert hashing.read_file_hash(path) == expected(data)
    assert spy.made == []


def test_a_file_truncated_while_hashed_gets_the_hash_of_what_it_holds_after(tmp_path, spy, monkeypatch):
    data = os.urandom(4 * WINDOW)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    real = crc32c.crc32c
    calls = []

    def truncating_crc32c(buffer, value=0):
        calls.append(1)
        if len(calls) == 1:  # after the first window is hashed, another program cuts the file in place
            os.truncate(path, WINDOW + 10)
        return real(buffer, value)

    monkeypatch.setattr(hashing, "crc32c", _ModuleWith(crc32c, crc32c=truncating_crc32c))
    # The next window is found cut off before it is touched (no SIGBUS); the file is hashed again, as it now is.
    assert hashing.read_file_hash(path) == expected(data[: WINDOW + 10])


def test_a_window_the_kernel_cannot_populate_is_not_touched(tmp_path, monkeypatch):
    monkeypatch.setattr(hashing, "MMAP_WINDOW_BYTES", WINDOW)
    monkeypatch.setattr(hashing, "MMAP_MIN_BYTES", 1)
    monkeypatch.setattr(hashing, "_populate_supported", True)
    monkeypatch.setattr(hashing, "_MADV_POPULATE_READ", 22)
    touched = []

    class CutOff:
        """A window whose pages are past the end of the file: MADV_POPULATE_READ answers EFAULT."""

        def __init__(self, *args, **kwargs) -> None:
            pass

        def madvise(self, option: int) -> None:
            raise OSError(errno.EFAULT, "Bad address")

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            pass

    def crc_spy(buffer, value=0):
        touched.append(type(buffer).__name__)
        return crc32c.crc32c(buffer, value)

    monkeypatch.setattr(hashing, "mmap", _ModuleWith(mmap, mmap=CutOff))
    monkeypatch.setattr(hashing, "crc32c", _ModuleWith(crc32c, crc32c=crc_spy))
    data = os.urandom(2 * WINDOW)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    assert hashing.read_file_hash(path) == expected(data)  # read instead
    assert "CutOff" not in touched


def test_a_file_that_keeps_changing_raises_a_library_error(tmp_path, spy, monkeypatch):
    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(2 * WINDOW))
    real = crc32c.crc32c

    def appending_crc32c(buffer, value=0):
        with open(path, "ab") as file:  # a writer that never stops
            file.write(b"x")
        return real(buffer, value)

    monkeypatch.setattr(hashing, "crc32c", _ModuleWith(crc32c, crc32c=appending_crc32c))
    with pytest.raises(LocalFileChangedError, match="changed while it was being hashed") as raised:
        hashing.hash_file(path)
    assert isinstance(raised.value, OctueDagsterError) and isinstance(raised.value, OSError)
    with hashing._cache_lock:
        assert (path.stat().st_dev, path.stat().st_ino) not in hashing._cache  # nothing recorded
