"""One memory measurement in a fresh interpreter: `python -m benchmarks.memory_child OPERATION SIDE ...`.

The child imports and sets up everything first (client, connection, Datafile), then resets the kernel's peak-RSS mark
(writing 5 to /proc/self/clear_refs), records its RSS, runs the one operation and prints, as JSON, its RSS before
and its peak RSS during the operation. The difference is the memory the operation itself needed.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

from google.cloud import storage

from benchmarks.hash_bench import plain_file_crc32c
from octue_dagster.core.local import hashing
from octue_dagster.core.storage import store
from octue_dagster.core.datafile.datafile import Datafile


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as file:
        match = re.search(rf"^{field}:\s+(\d+) kB", file.read(), re.MULTILINE)
    assert match, f"no {field} in /proc/self/status"
    return int(match.group(1))


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False if the kernel refused."""
    try:
        with open("/proc/self/clear_refs", "w") as file:
            file.write("5")
        return True
    except OSError:
        return False


def prepare(operation: str, side: str, arguments: list[str], client: storage.Client) -> Callable[[], object]:
    """Set up one operation and return it, ready to run."""
    if operation == "hash":
        path = Path(arguments[0])
        return (lambda: hashing.hash_file(path)) if side == "ours" else (lambda: plain_file_crc32c(path))
    if operation == "upload":
        path, bucket, name = Path(arguments[0]), arguments[1], arguments[2]
        if side == "ours":
            datafile = Datafile(path, cloud_path=f"gs://{bucket}/{name}", storage_client=client)
            return datafile.upload
        blob = client.bucket(bucket).blob(name)
        return lambda: blob.upload_from_filename(str(path))
    if operation == "download":
        bucket, name, target = arguments[0], arguments[1], Path(arguments[2])
        if side == "ours":
            datafile = Datafile(f"gs://{bucket}/{name}", storage_client=client)
            return lambda: datafile.download(target)
        blob = client.bucket(bucket).blob(name)
        return lambda: blob.download_to_filename(str(target))
    raise SystemExit(f"unknown operation {operation!r}")


def main(argv: list[str]) -> None:
    operation, side, *arguments = argv
    client = store.Store.default().client
    if operation != "hash":
        bucket = arguments[1] if operation == "upload" else arguments[0]
        # Open the HTTP connection before measuring, as a long-running process would have.
        list(client.list_blobs(bucket, max_results=1))
    run = prepare(operation, side, arguments, client)
    reset = _reset_peak()
    before = _status_kib("VmRSS")
    run()
    peak = _status_kib("VmHWM")
    print(json.dumps({"before_kib": before, "peak_kib": peak, "peak_reset": reset}))


if __name__ == "__main__":
    main(sys.argv[1:])
