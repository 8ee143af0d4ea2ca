"""Served bytes always match what Dagster recorded (issue 17, part 1).

(Two runs of one partition at once, 30 rounds in both naming modes: `tests/test_partition_races.py`.)
- The object restored from an older generation outside Dagster (server-side copy, owner mark kept): the load refuses
  it with `StaleMaterializationError` naming both versions and the fix; identical bytes at a new generation load.
- The recorded object deleted: `CloudObjectNotFoundError` naming the recorded URI.
- SIGTERM right after GCS committed the upload: the run stops, and what Dagster recorded is the new object.
"""


import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    DagsterInstance,
    DailyPartitionsDefinition,
    asset,
    materialize,
)
from dagster_gcp import GCSResource

from octue_dagster import Datafile
from octue_dagster.dagster.io_manager import DatafileIOManager
from octue_dagster.dagster.recorded_versions import latest_recorded
from octue_dagster.exceptions import CloudObjectNotFoundError, StaleMaterializationError

DAYS = DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-03")
DAY = "2024-01-01"
# Where each worker process writes its files (set from the test's tmp_path before the workers start).
WORK_DIR_VARIABLE = "OCTUE_DAGSTER_TEST_WORK_DIR"


def _new_file(name: str, content: bytes) -> Datafile:
    folder = Path(os.environ[WORK_DIR_VARIABLE]) / f"{os.getpid()}-{os.urandom(4).hex()}"
    folder.mkdir(parents=True)
    datafile = Datafile(folder / name)
    with datafile.open("wb") as file:
        file.write(content)
    return datafile


@asset(partitions_def=DAYS, io_manager_key="by_asset")
def named_by_asset(context: AssetExecutionContext) -> Datafile:
    # The run's own content, a few KiB so that the two runs' uploads overlap in time.
    return _new_file("upstream.csv", f"run,{context.run.run_id}\n".encode() * 200)


@asset(partitions_def=DAYS, io_manager_key="by_datafile")
def named_by_datafile(context: AssetExecutionContext) -> Datafile:
    # A new object name every run, so each store supersedes (and must remove) the previous run's object.
    return _new_file(f"{context.run.run_id}.csv", f"run,{context.run.run_id}\n".encode() * 200)


@asset(partitions_def=DAYS, io_manager_key="by_asset", ins={"upstream": AssetIn("named_by_asset")})
def reads_by_asset(upstream: Datafile) -> Datafile:
    with upstream.open("rb") as file:
        return _new_file("copy.csv", file.read())


@asset(partitions_def=DAYS, io_manager_key="by_asset", ins={"upstream": AssetIn("named_by_datafile")})
def reads_by_datafile(upstream: Datafile) -> Datafile:
    with upstream.open("rb") as file:
        return _new_file("copy.csv", file.read())


ASSETS = [named_by_asset, named_by_datafile, reads_by_asset, reads_by_datafile]


def _resources(bucket: str) -> dict:
    gcs = GCSResource()
    return {
        "by_asset": DatafileIOManager(bucket=bucket, gcs=gcs),
        "by_datafile": DatafileIOManager(bucket=bucket, gcs=gcs, object_names="datafile"),
    }


# --- an object replaced outside Dagster --------------------------------------------------------------------------------


def _run(bucket: str, instance: DagsterInstance, tmp_path: Path, monkeypatch, *selection) -> object:
    monkeypatch.setenv(WORK_DIR_VARIABLE, str(tmp_path / "work"))
    return materialize(
        list(selection), partition_key=DAY, instance=instance, resources=_resources(bucket), raise_on_error=False
    )


def _failure(result) -> str:
    return next(str(event.event_specific_data.error) for event in result.all_events if event.is_step_failure)


def test_an_object_restored_from_an_older_generation_is_refused_naming_both(client, bucket, tmp_path, monkeypatch):
    instance = DagsterInstance.ephemeral()
    assert _run(bucket, instance, tmp_path, monkeypatch, named_by_asset).success
    name = f"dagster/named_by_asset/partition={DAY}/named_by_asset.csv"
    first = client.bucket(bucket).get_blob(name)
    backup = client.bucket(bucket).copy_blob(first, client.bucket(bucket), "backup/old.csv")
    assert _run(bucket, instance, tmp_path, monkeypatch, named_by_asset).success
    second = client.bucket(bucket).get_blob(name)
    # Restored by a server-side copy: the old bytes, the owner mark carried over with the metadata.
    client.bucket(bucket).copy_blob(backup, client.bucket(bucket), name)
    restored = client.bucket(bucket).get_blob(name)
    assert restored.crc32c == first.crc32c != second.crc32c

    result = materialize(
        [named_by_asset.to_source_asset(), reads_by_asset],
        partition_key=DAY,
        instance=instance,
        resources=_resources(bucket),
        raise_on_error=False,
    )
    assert not result.success
    message = _failure(result)
    assert StaleMaterializationError.__name__ in message
    assert f"generation {second.generation} crc32c {second.crc32c}" in message
    assert f"generation {restored.generation} crc32c {restored.crc32c}" in message
    assert "Re-materialize asset named_by_asset partition '2024-01-01'" in message
    # The fix works: re-materializing makes the record and the object agree again.
    assert _run(bucket, instance, tmp_path, monkeypatch, named_by_asset, reads_by_asset).success


def test_identical_bytes_at_a_new_generation_still_load(client, bucket, tmp_path, monkeypatch):
    instance = DagsterInstance.ephemeral()
    assert _run(bucket, instance, tmp_path, monkeypatch, named_by_asset).success
    name = f"dagster/named_by_asset/partition={DAY}/named_by_asset.csv"
    blob = client.bucket(bucket).get_blob(name)
    client.bucket(bucket).copy_blob(blob, client.bucket(bucket), name)  # same bytes, new generation
    assert client.bucket(bucket).get_blob(name).generation != blob.generation
    result = materialize(
        [named_by_asset.to_source_asset(), reads_by_asset],
        partition_key=DAY,
        instance=instance,
        resources=_resources(bucket),
        raise_on_error=False,
    )
    assert result.success


def test_a_deleted_recorded_object_is_named_in_the_error(client, bucket, tmp_path, monkeypatch):
    instance = DagsterInstance.ephemeral()
    assert _run(bucket, instance, tmp_path, monkeypatch, named_by_datafile).success
    [blob] = client.list_blobs(bucket, prefix="dagster/named_by_datafile/")
    uri = f"gs://{bucket}/{blob.name}"
    blob.delete()
    result = materialize(
        [named_by_datafile.to_source_asset(), reads_by_datafile],
        partition_key=DAY,
        instance=instance,
        resources=_resources(bucket),
        raise_on_error=False,
    )
    assert not result.success
    message = _failure(result)
    assert CloudObjectNotFoundError.__name__ in message and uri in message and "that object is gone" in message


# --- SIGTERM while the object is written -------------------------------------------------------------------------------


_TERMINATED_RUN = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from dagster import DagsterInstance, materialize
    from octue_dagster.core.storage.store import Store
    import test_recorded_versions as module

    original = Store.upload_file
    when = {when!r}

    def upload_then_terminated(self, *args, **kwargs):
        if when == "before":
            os.kill(os.getpid(), signal.SIGTERM)
        info = original(self, *args, **kwargs)
        if when == "after":
            # GCS has committed the object; the signal lands before `handle_output` returns.
            os.kill(os.getpid(), signal.SIGTERM)
        return info

    Store.upload_file = upload_then_terminated
    os.environ[module.WORK_DIR_VARIABLE] = {work!r}
    instance = DagsterInstance.from_ref(DagsterInstance.get().get_ref())
    result = materialize([module.named_by_asset], partition_key=module.DAY, instance=instance,
                         resources=module._resources({bucket!r}), raise_on_error=False)
    print(result.run_id, "SUCCESS" if result.success else "FAILED")
    """
)


@pytest.mark.parametrize("when", ["before", "after"])
def test_sigterm_during_the_upload_leaves_the_record_and_the_object_in_step(client, bucket, tmp_path, when):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("")
    environment = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": os.pathsep.join(sys.path)}
    script = _TERMINATED_RUN.format(
        tests=str(Path(__file__).parent), when=when, work=str(tmp_path / "work"), bucket=bucket
    )
    runs = []
    for _ in range(2):  # the first run makes the previous materialization; the second is terminated
        completed = subprocess.run(
            [sys.executable, "-c", script if runs else script.replace(f"when = {when!r}", "when = None")],
            env=environment, capture_output=True, text=True, timeout=120,
        )
        runs.append(completed)
    assert "SUCCESS" in runs[0].stdout, runs[0].stderr[-2000:]
    assert runs[1].returncode == 0 and runs[1].stdout.strip().endswith(("SUCCESS", "FAILED")), runs[1].stderr[-3000:]
    with DagsterInstance.from_config(str(home)) as instance:
        recorded = latest_recorded(instance, AssetKey("named_by_asset"), DAY)
        records = instance.fetch_materializations(AssetKey("named_by_asset"), limit=5).records
    blob = client.bucket(bucket).get_blob(f"dagster/named_by_asset/partition={DAY}/named_by_asset.csv")
    # Whatever the timing, the latest record names the object that is there, at its generation and crc32c; the
    # terminated run's write (it reached GCS) is the one recorded.
    assert recorded is not None and (recorded.generation, recorded.crc32c) == (str(blob.generation), blob.crc32c)
    assert len(records) == 2 and recorded.run_id == runs[1].stdout.split()[-2]
