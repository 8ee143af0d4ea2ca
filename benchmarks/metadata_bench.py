"""Measurement 3: building cloud `Datafile`s for many small objects, against plain `bucket.get_blob` for each."""

from __future__ import annotations

import datetime
import uuid
from concurrent.futures import ThreadPoolExecutor

from google.cloud import storage

from benchmarks.measure import RequestCounter, timed
from benchmarks.table import Row
from octue_dagster.core.metadata import values as md
from octue_dagster.core.datafile.datafile import Datafile

_UPLOAD_THREADS = 8


def create_small_objects(client: storage.Client, bucket: str, count: int) -> list[str]:
    """Upload `count` small objects carrying Octue metadata (as a datafile would) and return their names."""
    timestamp = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
    names = [f"small/{index:05d}.csv" for index in range(count)]

    def upload(name: str) -> None:
        blob = client.bucket(bucket).blob(name)
        blob.metadata = md.to_cloud_metadata(str(uuid.uuid4()), timestamp, {"benchmark"}, {"index": name})
        blob.upload_from_string(f"a,b\n1,{name}\n".encode(), content_type="text/csv")

    with ThreadPoolExecutor(_UPLOAD_THREADS) as pool:
        list(pool.map(upload, names))
    return names


def metadata_read_rows(client: storage.Client, bucket: str, names: list[str], rounds: int) -> list[Row]:
    """Requests per object and best-of-`rounds` total time: `Datafile("gs://...")` for each name vs `bucket.get_blob`.

    Both use the same client, so connection reuse is the same; the order alternates between rounds because whichever
    runs second benefits from a warmer emulator.
    """
    counters = {"ours": RequestCounter(), "base": RequestCounter()}
    times: dict[str, list[float]] = {"ours": [], "base": []}

    def ours() -> None:
        for name in names:
            datafile = Datafile(f"gs://{bucket}/{name}", storage_client=client)
            assert datafile.hash_value and datafile.id

    def baseline() -> None:
        handle = client.bucket(bucket)
        for name in names:
            blob = handle.get_blob(name)
            assert blob is not None and blob.crc32c

    timed(lambda: client.bucket(bucket).get_blob(names[0]))  # open the connection before either is timed
    sides = [("ours", ours), ("base", baseline)]
    for round_number in range(rounds):
        for side, function in sides if round_number % 2 == 0 else reversed(sides):
            counters[side].count = 0
            with counters[side].spying_on(client):
                times[side].append(timed(function)[0])
    count = len(names)
    ours_per, baseline_per = counters["ours"].count / count, counters["base"].count / count
    return [
        Row(f"requests per cloud datafile (n={count})", ours_per, baseline_per, "req", "<= 1 (= get_blob)",
            ours_per <= 1 and ours_per <= baseline_per),
        Row(f"time to read metadata of {count} objects", min(times["ours"]), min(times["base"]), "s", "report only",
            None),
    ]
