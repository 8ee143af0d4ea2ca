"""The download cache: verified copies of cloud objects, one lock per object, a size limit with LRU eviction.

The public calls are re-exported here, so `octue_dagster.core.cache.configure(max_bytes=...)` and
`python -m octue_dagster.core.cache clear` work as documented.
"""

from octue_dagster.core.cache.copies import (
    CACHE_DIR_VARIABLE,
    MAX_BYTES_VARIABLE,
    EvictionReport,
    cache_root,
    clear,
    configure,
    entries,
    evict,
    max_bytes,
    usage_bytes,
)

__all__ = [
    "CACHE_DIR_VARIABLE",
    "MAX_BYTES_VARIABLE",
    "EvictionReport",
    "cache_root",
    "clear",
    "configure",
    "entries",
    "evict",
    "max_bytes",
    "usage_bytes",
]
