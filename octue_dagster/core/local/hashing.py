"""crc32c hashes of local files, streamed and cached by file identity, size and modification time, and of bytes as
they are written (`HashingWriter`), so that a download is verified in the same pass that stores it."""

from __future__ import annotations

import base64
import io
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import IO

import crc32c

#: Read size for hashing: large enough that the C extension, not the Python loop, dominates.
HASH_BLOCK_BYTES = 4 * 1024 * 1024

#: How many files' hashes are remembered; long-running workers touch many files, so the cache is bounded (LRU).
CACHE_ENTRIES = 10_000

_cache: OrderedDict[str, tuple[int, int, int, int, int, str]] = OrderedDict()
_cache_lock = threading.Lock()


def _identity(stat: os.stat_result) -> tuple[int, int, int, int, int]:
    # ctime too: an in-place edit that restores the mtime (rsync -t, `touch -r`) cannot restore the ctime.
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def _store(key: str, entry: tuple[int, int, int, int, int, str]) -> None:
    with _cache_lock:
        _cache[key] = entry
        _cache.move_to_end(key)
        while len(_cache) > CACHE_ENTRIES:
            _cache.popitem(last=False)


def encode_crc32c(value: int) -> str:
    """Base64 of a crc32c integer in big-endian bytes, as GCS reports it."""
    return base64.b64encode(value.to_bytes(4, "big")).decode("ascii")


def crc32c_base64(data: bytes) -> str:
    """Base64 of the big-endian crc32c of `data`: the form GCS reports for an object's `crc32c`."""
    return encode_crc32c(crc32c.crc32c(data))


def hash_file(path: str | os.PathLike[str]) -> str:
    """The base64 crc32c of a file's content, read in blocks so that memory use does not grow with the file.

    The result is cached per path until the file's inode, size, modification or change time changes, so a second
    call on an unchanged file does not read it again.
    """
    path = os.fspath(path)
    stat = os.stat(path)
    key = os.path.realpath(path)
    identity = _identity(stat)
    with _cache_lock:
        cached = _cache.get(key)
    if cached is not None and cached[:5] == identity:
        return cached[5]
    value = read_file_hash(path)
    _store(key, (*identity, value))
    return value


def read_file_hash(path: str | os.PathLike[str]) -> str:
    """The base64 crc32c of a file's content, always read from disk (for verifying, where no cache may be trusted)."""
    with open(path, "rb", buffering=0) as file:
        return read_stream_hash(file)


def read_stream_hash(file: IO[bytes], on_block: Callable[[bytearray, int], None] | None = None) -> str:
    """The base64 crc32c of what is left to read in an open binary file (read in blocks into one buffer).

    `on_block(buffer, length)`, if given, sees every block in order: the first `length` bytes of `buffer`, valid only
    during the call (the buffer is reused). Work that must see every byte shares this read, without a copy.
    """
    checksum = 0
    buffer = bytearray(HASH_BLOCK_BYTES)
    view = memoryview(buffer)
    while read := file.readinto(buffer):  # type: ignore[attr-defined]
        checksum = crc32c.crc32c(view[:read], checksum)
        if on_block is not None:
            on_block(buffer, read)
    return encode_crc32c(checksum)


def hash_file_blocks(path: str | os.PathLike[str], on_block: Callable[[bytearray, int], None]) -> str:
    """The base64 crc32c of a file, always read from disk, with every block also passed to `on_block` (for example
    to count a CSV's records in the same pass). The result fills the cache, so a later `hash_file` does not re-read."""
    path = os.fspath(path)
    stat = os.stat(path)  # the identity before reading: a change during the read makes the cached value unused
    with open(path, "rb", buffering=0) as file:
        value = read_stream_hash(file, on_block)
    _store(os.path.realpath(path), (*_identity(stat), value))
    return value


def remember_hash(path: str | os.PathLike[str], value: str) -> None:
    """Record a hash already known for a file (for example, verified while downloading it) to save a re-read."""
    stat = os.stat(path)
    _store(os.path.realpath(path), (*_identity(stat), value))


class HashingWriter(io.RawIOBase):
    """A write-only binary stream that passes every byte to `file` and keeps their crc32c and count as they go.

    Handing this to a download (instead of the file itself) verifies the content in the same pass that writes it: no
    second read of a multi-GB file, and no reliance on the response's `X-Goog-Hash` header, without which
    google-cloud-storage skips its own check. Downloads only append, except that a transcoded response restarts from
    byte 0 (`seek(0)`), which starts the hash again.
    """

    def __init__(self, file: IO[bytes]) -> None:
        super().__init__()
        self._file = file
        self._checksum = 0
        self.bytes_written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self._file.write(data)
        self._checksum = crc32c.crc32c(data, self._checksum)
        count = len(data) if not isinstance(data, memoryview) else data.nbytes
        self.bytes_written += count
        return count

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if (offset, whence) in ((0, os.SEEK_CUR), (0, os.SEEK_END)):
            return self.bytes_written
        if (offset, whence) != (0, os.SEEK_SET):
            raise io.UnsupportedOperation("a download may only restart from the beginning")
        self._file.seek(0)
        self._file.truncate()
        self._checksum, self.bytes_written = 0, 0
        return 0

    def tell(self) -> int:
        return self.bytes_written

    def flush(self) -> None:
        self._file.flush()

    @property
    def crc32c(self) -> str:
        """The base64 crc32c of everything written so far, as GCS reports an object's."""
        return encode_crc32c(self._checksum)
