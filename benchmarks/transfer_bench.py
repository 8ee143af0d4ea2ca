"""Measurement 4: `Datafile.upload` / `Datafile.download` against the plain client's `upload_from_filename` /
`download_to_filename`, on the same local file and the same object bytes. The download, which verifies every byte
against the object's crc32c as it writes it, is also compared with the previous implementation (the client's own
check, which it skips when a response has no `X-Goog-Hash`)."""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from pathlib import Path

from google.cloud import storage

from benchmarks.measure import timed
from benchmarks.table import Row
from octue_dagster.core.cache import copies as cache
from octue_dagster.core.local import hashing
from octue_dagster.core.storage import store
from octue_dagster.core.datafile.datafile import Datafile

#: "No slower" allows this much for run-to-run noise (both sides share two cores with the emulator).
NOISE_TOLERANCE = 1.05


def upload_ours(client: storage.Client, path: Path, bucket: str, name: str) -> None:
    """What a user does: a datafile for a local file, uploaded to a new object (hash not yet cached)."""
    hashing._cache.clear()  # a freshly written file has no cached hash; measure the hashing Datafile.upload needs
    Datafile(path, cloud_path=f"gs://{bucket}/{name}", storage_client=client).upload()


def upload_baseline(client: storage.Client, path: Path, bucket: str, name: str) -> None:
    """The plain client with its defaults (resumable upload in 100 MiB chunks for files over 8 MiB)."""
    client.bucket(bucket).blob(name).upload_from_filename(str(path))


def upload_baseline_same_chunks(client: storage.Client, path: Path, bucket: str, name: str) -> None:
    """The plain client sending the same chunk size as ours, to separate the library's overhead from chunking."""
    client.bucket(bucket).blob(name, chunk_size=store.UPLOAD_CHUNK_BYTES).upload_from_filename(str(path))


def download_ours(client: storage.Client, bucket: str, name: str, cache_dir: Path) -> Path:
    """A cloud datafile downloaded into a fresh cache (the default place its copy goes)."""
    os.environ[cache.CACHE_DIR_VARIABLE] = str(cache_dir)
    return Path(Datafile(f"gs://{bucket}/{name}", storage_client=client).download())


def download_baseline(client: storage.Client, bucket: str, name: str, target: Path) -> Path:
    client.bucket(bucket).blob(name).download_to_filename(str(target))
    return target


def download_previous(client: storage.Client, bucket: str, name: str, target: Path) -> Path:
    """The download as it was before every byte was verified: one metadata request, then the client's own crc32c
    check while streaming into a temporary file that is synced and renamed into place (as the cache did)."""
    blob = client.bucket(bucket).get_blob(name)
    temporary = target.with_name(".partial")
    with open(temporary, "wb") as file:
        blob.download_to_file(file, if_generation_match=blob.generation, checksum="crc32c")
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, target)
    return target


def transfer_rows(client: storage.Client, path: Path, bucket: str, workdir: Path, rounds: int) -> list[Row]:
    """Best-of-`rounds` seconds for each side; the order alternates between rounds so that no side always goes first.

    One untimed upload first warms the emulator up (its first large upload is slow) and gives the object that both
    sides download. Each timed upload is checked and deleted at once, so the emulator holds at most two copies.
    """
    size = path.stat().st_size
    expected = hashing.hash_file(path)
    uploads = [("up-ours", upload_ours), ("up-base", upload_baseline), ("up-same", upload_baseline_same_chunks)]
    downloads = ["down-ours", "down-base", "down-prev"]
    times: dict[str, list[float]] = {key: [] for key, _ in uploads} | {key: [] for key in downloads}
    source = f"transfer/source-{uuid.uuid4().hex[:8]}.bin"
    upload_baseline(client, path, bucket, source)
    previous_cache = os.environ.get(cache.CACHE_DIR_VARIABLE)
    try:
        for round_number in range(rounds):
            forward = round_number % 2 == 0
            for key, upload in uploads if forward else reversed(uploads):
                name = f"transfer/{key}-{uuid.uuid4().hex[:8]}.bin"
                times[key].append(timed(lambda: upload(client, path, bucket, name))[0])
                blob = client.bucket(bucket).get_blob(name)
                assert blob is not None and blob.crc32c == expected, f"{name} does not hold the file's bytes"
                blob.delete()
            for key in downloads if forward else reversed(downloads):
                scratch = workdir / f"{key}-{round_number}"
                scratch.mkdir()
                if key == "down-ours":
                    seconds, target = timed(lambda: download_ours(client, bucket, source, scratch))
                elif key == "down-prev":
                    seconds, target = timed(lambda: download_previous(client, bucket, source, scratch / "copy.bin"))
                else:
                    seconds, target = timed(lambda: download_baseline(client, bucket, source, scratch / "copy.bin"))
                times[key].append(seconds)
                assert target.stat().st_size == size
                shutil.rmtree(scratch)  # keep at most one downloaded copy on disk
            print(f"  round {round_number + 1}: " + ", ".join(f"{key} {values[-1]:.2f} s" for key, values in times.items()),
                  file=sys.stderr, flush=True)
    finally:
        client.bucket(bucket).blob(source).delete()
        if previous_cache is None:
            os.environ.pop(cache.CACHE_DIR_VARIABLE, None)
        else:
            os.environ[cache.CACHE_DIR_VARIABLE] = previous_cache

    mib = size / 2**20
    chunk_mib = store.UPLOAD_CHUNK_BYTES / 2**20
    comparisons = (
        (f"upload {mib:.0f} MiB time", "up-ours", "up-base"),
        (f"upload {mib:.0f} MiB time, baseline at our {chunk_mib:.0f} MiB chunks", "up-ours", "up-same"),
        (f"download {mib:.0f} MiB time (every byte verified)", "down-ours", "down-base"),
        (f"download {mib:.0f} MiB time, baseline = previous (client-checked) download", "down-ours", "down-prev"),
    )
    rows = []
    for label, ours_key, base_key in comparisons:
        ours, base = min(times[ours_key]), min(times[base_key])
        rows.append(Row(label, ours, base, "s", "<= 1.00 (+5% noise)", ours / base <= NOISE_TOLERANCE))
    return rows
