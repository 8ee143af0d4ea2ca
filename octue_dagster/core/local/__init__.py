"""Local files: crc32c hashing at disk speed with a cache of results, atomic writes (temporary file, then rename), and
streaming profiles of CSV and HDF5 files for the catalog (columns, row count, first rows)."""
