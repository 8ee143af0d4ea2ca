"""Two runs of one partition at once (issue 17, part 1): 30 rounds, both naming modes, in separate processes
sharing one persistent Dagster instance and one bucket.

Each round, two spawned processes start a run of the same partition at the same moment. A run stores the partition
in both naming modes (`object_names="asset"`: one object, overwritten; `"datafile"`: a new object name every run,
the old object removed) and then a downstream asset reads both. After every round:

- the latest materialization of each upstream asset names an object that exists, at the recorded generation and
  crc32c, and nothing else the I/O manager wrote is left in the partition's folder;
- each run's downstream asset read exactly the bytes its own run stored and recorded;
- both runs succeeded (the second waits for the first's record, then stores over it).
"""

import multiprocessing
import os
import threading

from dagster import AssetIn, AssetKey, DagsterInstance, asset, instance_for_test, materialize

from octue_dagster import Datafile
from octue_dagster.core.local.hashing import crc32c_base64
from octue_dagster.dagster.recorded_versions import latest_recorded
from reliability_summary import save_summary
from test_recorded_versions import DAY, DAYS, WORK_DIR_VARIABLE, _new_file, _resources, named_by_asset, named_by_datafile

ROUNDS = 30
WORKERS = 2


def content(run_id: str) -> bytes:
    return f"run,{run_id}\n".encode() * 200


@asset(
    partitions_def=DAYS,
    io_manager_key="by_asset",
    ins={"by_asset": AssetIn("named_by_asset"), "by_datafile": AssetIn("named_by_datafile")},
)
def reads_both(by_asset: Datafile, by_datafile: Datafile) -> Datafile:
    with by_asset.open("rb") as first, by_datafile.open("rb") as second:
        return _new_file("both.csv", first.read() + second.read())


ASSETS = [named_by_asset, named_by_datafile, reads_both]


def run_rounds(instance_ref, bucket: str, work_dir: str, rounds: int, start, results) -> None:
    """A worker process: each round, wait for the go, then run the three assets for the one partition."""
    os.environ[WORK_DIR_VARIABLE] = work_dir
    instance = DagsterInstance.from_ref(instance_ref)
    resources = _resources(bucket)
    for _ in range(rounds):
        try:
            start.wait()
        except threading.BrokenBarrierError:  # the test stopped early (a failed check)
            return
        result = materialize(ASSETS, partition_key=DAY, instance=instance, resources=resources, raise_on_error=False)
        errors = [
            str(event.event_specific_data.error.message)[:300]
            for event in result.all_events
            if event.is_step_failure
        ]
        results.put((result.success, result.run_id, errors))


def _check_round(instance: DagsterInstance, client, bucket: str, runs: list[str]) -> None:
    for upstream in ("named_by_asset", "named_by_datafile"):
        recorded = latest_recorded(instance, AssetKey(upstream), DAY)
        assert recorded is not None and recorded.run_id in runs
        name = recorded.uri.removeprefix(f"gs://{bucket}/")
        blob = client.bucket(bucket).get_blob(name)
        assert blob is not None, f"the recorded {recorded.uri} does not exist"
        assert (str(blob.generation), blob.crc32c) == (recorded.generation, recorded.crc32c)
        # Nothing but the recorded object is left in the partition's folder once both runs have finished.
        folder = name.rsplit("/", 1)[0] + "/"
        assert [item.name for item in client.list_blobs(bucket, prefix=folder)] == [name]
    # Each run's downstream read exactly the upstream bytes its own run wrote and recorded (one process runs the
    # whole run, and holds the upstream partitions' store locks until it ends).
    records = instance.fetch_materializations(AssetKey("reads_both"), limit=len(runs)).records
    assert sorted(record.run_id for record in records) == sorted(runs)
    for record in records:
        expected = crc32c_base64(content(record.run_id) * 2)
        assert record.asset_materialization.metadata["crc32c"].value == expected


def test_two_runs_of_one_partition_at_once_keep_record_and_object_in_step(client, bucket, tmp_path):
    context = multiprocessing.get_context("spawn")
    (tmp_path / "dagster").mkdir()
    with instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        start = context.Barrier(WORKERS + 1)
        results = context.Queue()
        workers = [
            context.Process(
                target=run_rounds, args=(instance.get_ref(), bucket, str(tmp_path / "work"), ROUNDS, start, results)
            )
            for _ in range(WORKERS)
        ]
        for worker in workers:
            worker.start()
        outcomes = []
        try:
            for _ in range(ROUNDS):
                start.wait(timeout=120)
                round_outcomes = [results.get(timeout=120) for _ in range(WORKERS)]
                outcomes += round_outcomes
                assert all(success for success, _, _ in round_outcomes), round_outcomes
                _check_round(instance, client, bucket, [run_id for _, run_id, _ in round_outcomes])
        finally:
            start.abort()  # a worker still waiting for a round that will not come stops (BrokenBarrierError)
            for worker in workers:
                worker.join(timeout=60)
                if worker.exitcode is None:
                    worker.kill()
                    worker.join()
        assert [worker.exitcode for worker in workers] == [0] * WORKERS
    failures = [(run_id, errors) for success, run_id, errors in outcomes if not success]
    assert not failures, failures
    save_summary(
        "recorded_versions",
        {"rounds": ROUNDS, "runs": len(outcomes), "naming_modes": 2, "failed_runs": len(failures)},
    )


