"""Measurement 8: sliced downloads of one large object with google-cloud-storage's transfer manager
(`download_chunks_concurrently`, with its combined crc32c check) against the current single-stream path.

Both sides download the same object with the same client into the same folder; the transfer manager runs on
threads and on processes (its default, since threads contend for the interpreter lock), at 8 workers of 32 MiB
slices. Uploads are not compared: the transfer manager's chunked upload is the XML multipart API, which
fake-gcs-server does not serve. The result decides whether large downloads switch to slicing (see the README).
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

from google.cloud import storage
from google.cloud.storage import transfer_manager

from benchmarks.measure import MIB, timed
from benchmarks.table import Row
from octue_dagster.core.local import hashing
from octue_dagster.core.storage.gcs_path import GCSPath
from octue_dagster.core.storage.store import Store

WORKERS = 8
SLICE_BYTES = 32 * MIB


def sliced_rows(client: storage.Client, path: Path, bucket: str, workdir: Path, rounds: int) -> list[Row]:
    """Best-of-`rounds` seconds: current path (the store's checksummed download) vs sliced, threads and processes."""
    expected = hashing.hash_file(path)
    name = f"sliced/source-{uuid.uuid4().hex[:8]}.bin"
    client.bucket(bucket).blob(name).upload_from_filename(str(path))
    store = Store(client)
    info = store.require_object(GCSPath(bucket, name))
    times: dict[str, list[float]] = {"current": [], "threads": [], "processes": []}

    def current(target: Path) -> None:
        with open(target, "wb") as file:
            store.download_file(info, file)

    def sliced(target: Path, worker_type: str) -> None:
        blob = client.bucket(bucket).get_blob(name)
        transfer_manager.download_chunks_concurrently(
            blob, str(target), chunk_size=SLICE_BYTES, worker_type=worker_type, max_workers=WORKERS,
            download_kwargs={"if_generation_match": info.generation}, crc32c_checksum=True,
        )

    sides = [
        ("current", current),
        ("threads", lambda target: sliced(target, transfer_manager.THREAD)),
        ("processes", lambda target: sliced(target, transfer_manager.PROCESS)),
    ]
    try:
        for round_number in range(rounds):
            for key, function in sides if round_number % 2 == 0 else reversed(sides):
                target = workdir / f"sliced-{key}.bin"
                times[key].append(timed(lambda: function(target))[0])
                assert hashing.hash_file(target) == expected, f"{key} did not download the object's bytes"
                target.unlink()
            print("  round " + str(round_number + 1) + ": " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()),
                  file=sys.stderr, flush=True)
    finally:
        client.bucket(bucket).blob(name).delete()
    mib = path.stat().st_size / MIB
    return [
        Row(f"sliced download {mib:.0f} MiB, {WORKERS} threads x {SLICE_BYTES // MIB} MiB (baseline: current path)",
            min(times["threads"]), min(times["current"]), "s", "report only (adopt if < 1)", None),
        Row(f"sliced download {mib:.0f} MiB, {WORKERS} processes x {SLICE_BYTES // MIB} MiB (baseline: current path)",
            min(times["processes"]), min(times["current"]), "s", "report only (adopt if < 1)", None),
    ]
