"""crc32c hashes of local files, streamed and cached by file identity, size and modification time."""

from __future__ import annotations

import base64
import os
import threading
from collections import OrderedDict

import crc32c

#: Read size for hashing: large enough that the C extension, not the Python loop, dominates.
HASH_BLOCK_BYTES = 4 * 1024 * 1024

#: How many files' hashes are remembered; long-running workers touch many files, so the cache is bounded (LRU).
CACHE_ENTRIES = 10_000

_cache: OrderedDict[str, tuple[int, int, int, int, str]] = OrderedDict()
_cache_lock = threading.Lock()


def _store(key: str, entry: tuple[int, int, int, int, str]) -> None:
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

    The result is cached per path until the file's inode, size or modification time changes, so a second call
    on an unchanged file does not read it again.
    """
    path = os.fspath(path)
    stat = os.stat(path)
    key = os.path.realpath(path)
    identity = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
    with _cache_lock:
        cached = _cache.get(key)
    if cached is not None and cached[:4] == identity:
        return cached[4]

    checksum = 0
    buffer = bytearray(HASH_BLOCK_BYTES)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as file:
        while read := file.readinto(buffer):
            checksum = crc32c.crc32c(view[:read], checksum)
    value = encode_crc32c(checksum)
    _store(key, (*identity, value))
    return value


def remember_hash(path: str | os.PathLike[str], value: str) -> None:
    """Record a hash already known for a file (for example, verified while downloading it) to save a re-read."""
    stat = os.stat(path)
    _store(os.path.realpath(path), (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, value))
