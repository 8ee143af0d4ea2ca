"""crc32c hashes of local files, read through memory maps and cached by file identity, size and modification time,
and of bytes as they are written (`HashingWriter`), so that a download is verified in the same pass that stores it.

Files are hashed through `mmap`, a window at a time: crc32c then reads the page cache directly, at the speed of
crc32c over bytes in memory, where `readinto` first copies every byte into a buffer (measured: 0.055 s against
0.025 s for 256 MiB). Windows are unmapped as they are done, so memory stays flat whatever the file's size.

The risk of a mapping is SIGBUS: touching a mapped page that a concurrent in-place truncation has cut off kills the
process, and Python cannot turn that signal into an exception. So each window is checked before it is read: its end
must still be within the file (`fstat`), and the kernel is asked to map all its pages at once
(`MADV_POPULATE_READ`, Linux 5.14+), which reports pages past the end as an error instead of raising SIGBUS. A file
that shrank is hashed again (by reading, then by mapping), and a hash is recorded only if the file's identity (size,
modification and change times) is the same after hashing as before. What remains is a truncation in the
sub-millisecond gap between populating a window and reading it; files replaced by a rename (as this library, most
editors and most tools write them) are never affected, because a mapping keeps the old file alive. Set
`OCTUE_DAGSTER_HASH_MMAP=0` to hash by reading only (folders that other programs truncate in place while they are
being hashed). Files that cannot be mapped (empty, not regular files such as FIFOs, file systems without mmap) are
read in blocks.
"""

from __future__ import annotations

import base64
import errno
import io
import mmap
import os
import stat as stat_module
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import IO

import crc32c

from octue_dagster.exceptions import LocalFileChangedError

#: Read size for hashing: large enough that the C extension, not the Python loop, dominates.
HASH_BLOCK_BYTES = 4 * 1024 * 1024

#: Size of each mapped window: small enough that the gap between checking a window and reading it is well under a
#: millisecond, large enough that mapping costs little beside hashing.
MMAP_WINDOW_BYTES = 16 * 1024 * 1024
#: Files smaller than this are read (mapping costs more than copying a few blocks).
MMAP_MIN_BYTES = 1024 * 1024
#: Set to 0 to hash by reading only.
MMAP_VARIABLE = "OCTUE_DAGSTER_HASH_MMAP"
#: Linux's `MADV_POPULATE_READ` (5.14+): map a range's pages now, reporting pages past the end of the file as an
#: error (EFAULT) rather than raising SIGBUS. Not exported by Python's `mmap` module before 3.13.
_MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22 if os.uname().sysname == "Linux" else None)
#: Cleared when the kernel turns out not to know `MADV_POPULATE_READ` (then only the `fstat` check guards windows).
_populate_supported = _MADV_POPULATE_READ is not None
#: How many times a file that changed while being hashed is hashed again before `LocalFileChangedError`.
CHANGED_FILE_ATTEMPTS = 3

#: How many files' hashes are remembered; long-running workers touch many files, so the cache is bounded (LRU). An
#: entry is about 360 bytes, so this is at most about 36 MB. A dataset of more files than this is hashed again on every
#: upload (the LRU order is the upload order): at 10,000 a 20,000-file re-upload read every file and took 6.5 s.
CACHE_ENTRIES = 100_000

_cache: OrderedDict[tuple[int, int], tuple[int, int, int, int, int, str]] = OrderedDict()
_cache_lock = threading.Lock()


def _identity(stat: os.stat_result) -> tuple[int, int, int, int, int]:
    # ctime too: an in-place edit that restores the mtime (rsync -t, `touch -r`) cannot restore the ctime.
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def _key(stat: os.stat_result) -> tuple[int, int]:
    """A file's cache key: its device and inode, so that every path to it (links, `..`, relative paths) shares one
    entry without resolving the path (`realpath` cost more than the rest of a cached `hash_file`)."""
    return (stat.st_dev, stat.st_ino)


def _store(key: tuple[int, int], entry: tuple[int, int, int, int, int, str]) -> None:
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

    The result is cached per file (device and inode) until its size, modification or change time changes, so a
    second call on an unchanged file, by any path, does not read it again.
    """
    path = os.fspath(path)
    stat = os.stat(path)
    key = _key(stat)
    identity = _identity(stat)
    with _cache_lock:
        cached = _cache.get(key)
    if cached is not None and cached[:5] == identity:
        return cached[5]
    value = read_file_hash(path)
    _store(key, (*identity, value))
    return value


def cached_hash(path: str | os.PathLike[str]) -> str | None:
    """The hash `hash_file` would return if it has it for the file as it is now (one `stat`, never a read), else
    `None` (also for a file that does not exist)."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    with _cache_lock:
        cached = _cache.get(_key(stat))
    return cached[5] if cached is not None and cached[:5] == _identity(stat) else None


def read_file_hash(path: str | os.PathLike[str]) -> str:
    """The base64 crc32c of a file's content, always read from disk (for verifying, where no cache may be trusted).

    The file is hashed through memory-mapped windows where it can be (see the module's docstring), else read in
    blocks. If it changes while being hashed, it is hashed again; `LocalFileChangedError` if it keeps changing.
    """
    with open(path, "rb", buffering=0) as file:
        descriptor = file.fileno()
        for _ in range(CHANGED_FILE_ATTEMPTS):
            before = os.fstat(descriptor)
            if not stat_module.S_ISREG(before.st_mode):
                return read_stream_hash(file)  # a FIFO, device or the like: no size, no identity to check
            file.seek(0)
            checksum = _mapped_checksum(descriptor, before.st_size) if _may_map(before) else None
            if checksum is None:
                checksum = _read_checksum(file)
            if _identity(os.fstat(descriptor)) == _identity(before):
                return encode_crc32c(checksum)
    raise LocalFileChangedError(
        f"The file {os.fspath(path)!r} changed while it was being hashed, {CHANGED_FILE_ATTEMPTS} times in a row: "
        f"something is rewriting it in place. Hash it again once it is complete."
    )


def _may_map(stat: os.stat_result) -> bool:
    return stat.st_size >= MMAP_MIN_BYTES and os.environ.get(MMAP_VARIABLE, "1") != "0"


def _mapped_checksum(descriptor: int, size: int) -> int | None:
    """The crc32c of the first `size` bytes, hashed window by window in place; `None` if the file cannot be mapped or
    shrank below `size` (the caller then reads it, and checks its identity)."""
    global _populate_supported
    checksum, offset = 0, 0
    while offset < size:
        length = min(MMAP_WINDOW_BYTES, size - offset)
        if os.fstat(descriptor).st_size < offset + length:
            return None  # truncated: touching the missing pages would raise SIGBUS
        try:
            window = mmap.mmap(descriptor, length, offset=offset, access=mmap.ACCESS_READ)
        except (OSError, ValueError):
            return None  # a file system without mmap, or a file that shrank to nothing
        with window:
            if _populate_supported:
                try:
                    window.madvise(_MADV_POPULATE_READ)
                except OSError as error:
                    if error.errno == errno.EFAULT:
                        return None  # part of the window is past the end of the file now
                    _populate_supported = False  # EINVAL: a kernel before 5.14; fstat alone guards windows
            checksum = crc32c.crc32c(window, checksum)
        offset += length
    return checksum


def _read_checksum(file: IO[bytes], on_block: Callable[[bytearray, int], None] | None = None) -> int:
    checksum = 0
    buffer = bytearray(HASH_BLOCK_BYTES)
    view = memoryview(buffer)
    while read := file.readinto(buffer):  # type: ignore[attr-defined]
        checksum = crc32c.crc32c(view[:read], checksum)
        if on_block is not None:
            on_block(buffer, read)
    return checksum


def read_stream_hash(file: IO[bytes], on_block: Callable[[bytearray, int], None] | None = None) -> str:
    """The base64 crc32c of what is left to read in an open binary file (read in blocks into one buffer).

    `on_block(buffer, length)`, if given, sees every block in order: the first `length` bytes of `buffer`, valid only
    during the call (the buffer is reused). Work that must see every byte shares this read, without a copy.
    """
    return encode_crc32c(_read_checksum(file, on_block))


def hash_file_blocks(path: str | os.PathLike[str], on_block: Callable[[bytearray, int], None]) -> str:
    """The base64 crc32c of a file, always read from disk, with every block also passed to `on_block` (for example
    to count a CSV's records in the same pass). The result fills the cache, so a later `hash_file` does not re-read,
    unless the file changed while it was read."""
    with open(path, "rb", buffering=0) as file:
        before = os.fstat(file.fileno())
        value = read_stream_hash(file, on_block)
        if _identity(os.fstat(file.fileno())) == _identity(before):
            _store(_key(before), (*_identity(before), value))
    return value


def remember_hash(path: str | os.PathLike[str], value: str) -> None:
    """Record a hash already known for a file (for example, verified while downloading it) to save a re-read."""
    stat = os.stat(path)
    _store(_key(stat), (*_identity(stat), value))


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
