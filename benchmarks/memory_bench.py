"""Measurement 5: peak memory above the interpreter's own while hashing, uploading and downloading the big file.

Each operation runs in a fresh child process (`benchmarks.memory_child`), for ours and for the plain baseline, so
that nothing allocated by earlier measurements is counted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from google.cloud import storage

from benchmarks.table import Row

GOAL_MIB = 100


def _run_child(operation: str, side: str, arguments: list[str], cwd: Path) -> float:
    """MiB of peak RSS above the RSS right before the operation, in a fresh interpreter."""
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory_child", operation, side, *arguments],
        cwd=cwd,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"memory child {operation}/{side} failed:\n{result.stderr}")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    if not report["peak_reset"]:
        print(f"warning: could not reset peak RSS in the {operation}/{side} child; figure is a lower bound",
              file=sys.stderr)
    return (report["peak_kib"] - report["before_kib"]) / 1024


def memory_rows(client: storage.Client, path: Path, bucket: str, workdir: Path, project_root: Path) -> list[Row]:
    """Peak MiB above baseline for hash, upload and download, ours vs the plain client (or plain crc32c reads)."""
    mib = path.stat().st_size / 2**20
    peaks: dict[tuple[str, str], float] = {}
    for side in ("ours", "base"):
        peaks["hash", side] = _run_child("hash", side, [str(path)], project_root)

        name = f"memory/{side}-{uuid.uuid4().hex[:8]}.bin"
        peaks["upload", side] = _run_child("upload", side, [str(path), bucket, name], project_root)

        target = workdir / f"memory-download-{side}.bin"
        peaks["download", side] = _run_child("download", side, [bucket, name, str(target)], project_root)
        target.unlink()
        client.bucket(bucket).blob(name).delete()
    return [
        Row(f"peak memory: {operation} {mib:.0f} MiB", peaks[operation, "ours"], peaks[operation, "base"], "MiB",
            f"< {GOAL_MIB} MiB", peaks[operation, "ours"] < GOAL_MIB)
        for operation in ("hash", "upload", "download")
    ]
