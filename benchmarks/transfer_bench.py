"""Measurement 4: `Datafile.upload` / `Datafile.download` against the plain client's `upload_from_filename` /
`download_to_filename`, on the same local file and the same object bytes."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from google.cloud import storage

from benchmarks.measure import timed
from benchmarks.table import Row
from octue_dagster import cache, hashing
from octue_dagster.datafile import Datafile

#: "No slower" allows this much for run-to-run noise (both sides share two cores with the emulator).
NOISE_TOLERANCE = 1.05


def upload_ours(client: storage.Client, path: Path, bucket: str, name: str) -> None:
    """What a user does: a datafile for a local file, uploaded to a new object (hash not yet cached)."""
    hashing._cache.clear()  # a freshly written file has no cached hash; measure the hashing Datafile.upload needs
    Datafile(path, cloud_path=f"gs://{bucket}/{name}", storage_client=client).upload()


def upload_baseline(client: storage.Client, path: Path, bucket: str, name: str) -> None:
    client.bucket(bucket).blob(name).upload_from_filename(str(path))


def download_ours(client: storage.Client, bucket: str, name: str, cache_dir: Path) -> Path:
    """A cloud datafile downloaded into a fresh cache (the default place its copy goes)."""
    os.environ[cache.CACHE_DIR_VARIABLE] = str(cache_dir)
    return Path(Datafile(f"gs://{bucket}/{name}", storage_client=client).download())


def download_baseline(client: storage.Client, bucket: str, name: str, target: Path) -> Path:
    client.bucket(bucket).blob(name).download_to_filename(str(target))
    return target


def transfer_rows(client: storage.Client, path: Path, bucket: str, workdir: Path, rounds: int) -> list[Row]:
    """Best-of-`rounds` seconds for each side; the order alternates between rounds so neither always goes first."""
    size = path.stat().st_size
    expected = hashing.hash_file(path)
    times: dict[str, list[float]] = {"up-ours": [], "up-base": [], "down-ours": [], "down-base": []}
    previous_cache = os.environ.get(cache.CACHE_DIR_VARIABLE)
    try:
        for round_number in range(rounds):
            names = {side: f"transfer/{side}-{uuid.uuid4().hex[:8]}.bin" for side in ("ours", "base")}
            uploads = [("up-ours", upload_ours, names["ours"]), ("up-base", upload_baseline, names["base"])]
            for key, upload, name in uploads if round_number % 2 == 0 else reversed(uploads):
                times[key].append(timed(lambda: upload(client, path, bucket, name))[0])
            for name in names.values():
                assert client.bucket(bucket).get_blob(name).crc32c == expected, f"{name} does not hold the file's bytes"

            source = names["base"]  # both download the very same object
            downloads = ["down-ours", "down-base"] if round_number % 2 == 0 else ["down-base", "down-ours"]
            for key in downloads:
                scratch = workdir / f"{key}-{round_number}"
                scratch.mkdir()
                if key == "down-ours":
                    seconds, target = timed(lambda: download_ours(client, bucket, source, scratch))
                else:
                    seconds, target = timed(lambda: download_baseline(client, bucket, source, scratch / "copy.bin"))
                times[key].append(seconds)
                assert target.stat().st_size == size
                shutil.rmtree(scratch)  # keep at most one downloaded copy on disk
            for name in names.values():
                client.bucket(bucket).blob(name).delete()  # keep the emulator's memory bounded
    finally:
        if previous_cache is None:
            os.environ.pop(cache.CACHE_DIR_VARIABLE, None)
        else:
            os.environ[cache.CACHE_DIR_VARIABLE] = previous_cache

    mib = size / 2**20
    rows = []
    for label, ours_key, base_key in (("upload", "up-ours", "up-base"), ("download", "down-ours", "down-base")):
        ours, base = min(times[ours_key]), min(times[base_key])
        rows.append(Row(f"{label} {mib:.0f} MiB time", ours, base, "s", "<= 1.00 (+5% noise)",
                        ours / base <= NOISE_TOLERANCE))
    return rows
