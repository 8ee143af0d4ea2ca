"""Benchmarks for octue_dagster: each measurement runs ours and a plain baseline side by side on the same bytes.

`python -m benchmarks` starts its own GCS emulator and a temporary cache, runs every measurement, prints one table and
writes it to `benchmarks/results/latest.txt`. `--quick` runs a small version in about a minute.
"""
