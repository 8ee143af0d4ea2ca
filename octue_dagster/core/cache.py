"""Where downloaded copies of cloud objects live, and how an object name maps to a path that cannot escape.

Each object gets its own folder, named by a hash of `bucket/name`, holding the file under its (sanitised) base name
so that it keeps its extension, beside a record of the generation it was downloaded at. Hashing the name means that
`a/../../x`, absolute names, names with NUL bytes or 1,000-byte names can never make a path outside the cache, and
that objects `a` and `a/b` never collide.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

import platformdirs

from octue_dagster.core.gcs_path import GCSPath

CACHE_DIR_VARIABLE = "OCTUE_DAGSTER_CACHE_DIR"
#: How long any of the library's file locks is waited for before `filelock.Timeout` is raised: long enough for a
#: multi-GB download by another process to finish, short enough that a lock held by a hung process is reported.
LOCK_TIMEOUT_SECONDS = 600
_RECORD_NAME = ".generation.json"
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]")
_MAX_BASENAME = 120


_resolved_roots: dict[str | None, Path] = {}


def cache_root() -> Path:
    """The cache directory: `$OCTUE_DAGSTER_CACHE_DIR`, else the platform's user cache directory."""
    configured = os.environ.get(CACHE_DIR_VARIABLE)
    root = _resolved_roots.get(configured)
    if root is None:
        # Resolving costs system calls; it is done once per configured value, not on every hash or open.
        base = Path(configured) if configured else Path(platformdirs.user_cache_dir("octue-dagster", appauthor=False))
        root = _resolved_roots[configured] = base.resolve()
    return root


def safe_basename(object_name: str) -> str:
    """A file name for an object that keeps its extension and contains no separators or special names."""
    base = object_name.rstrip("/").rsplit("/", 1)[-1]
    base = _UNSAFE.sub("_", base).lstrip(".") or "object"
    if len(base) > _MAX_BASENAME:
        stem, dot, extension = base.rpartition(".")
        extension = extension[:20] if dot else ""
        base = base[: _MAX_BASENAME - len(extension) - 1] + ("." + extension if extension else "")
    return base


def object_cache_dir(path: GCSPath) -> Path:
    """The folder that holds the cached copy of one object."""
    # Defence in depth: bucket names are validated when parsed, but a GCSPath can be built by hand. The rest of the
    # path is a hex digest, so this check is all it takes to keep the folder inside the cache.
    if not path.bucket or "/" in path.bucket or "\\" in path.bucket or path.bucket.strip(".") == "":
        raise ValueError(f"Refusing to cache an object of the bucket {path.bucket!r}: not a bucket name.")
    digest = hashlib.sha256(f"{path.bucket}/{path.name}".encode("utf-8", "surrogatepass")).hexdigest()
    return cache_root() / "objects" / path.bucket / digest[:2] / digest[2:34]


def cached_path(path: GCSPath) -> Path:
    """Where the downloaded copy of `path` lives (it may not exist yet)."""
    return object_cache_dir(path) / safe_basename(path.name)


def lock_path(key: str) -> Path:
    """A lock file for `key` inside the cache, so that lock files never appear beside users' files."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    folder = cache_root() / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{digest[:40]}.lock"


def read_cached_generation(path: GCSPath) -> int | None:
    """The generation the cached copy of `path` was downloaded at, or `None` if there is no complete copy."""
    record = object_cache_dir(path) / _RECORD_NAME
    try:
        data = json.loads(record.read_text())
        if data.get("name") != path.name or not cached_path(path).is_file():
            return None
        if cached_path(path).stat().st_size != data.get("size"):
            return None
        return int(data["generation"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_cached_generation(path: GCSPath, generation: int) -> None:
    """Record that the cached copy of `path` is the object's content at `generation` (atomically)."""
    folder = object_cache_dir(path)
    size = cached_path(path).stat().st_size
    record = json.dumps({"bucket": path.bucket, "name": path.name, "generation": generation, "size": size})
    fd, temporary = tempfile.mkstemp(dir=folder, prefix=".record-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as file:
            file.write(record)
        os.replace(temporary, folder / _RECORD_NAME)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def forget_cached_generation(path: GCSPath) -> None:
    """Mark the cached copy of `path` as not matching any generation, so that the next read downloads again."""
    try:
        (object_cache_dir(path) / _RECORD_NAME).unlink()
    except FileNotFoundError:
        pass
