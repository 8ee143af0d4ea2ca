"""Local files: crc32c hashing at disk speed with a cache of results, and atomic writes (temporary file, then rename)."""
