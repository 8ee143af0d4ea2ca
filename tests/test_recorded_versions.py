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


# --- SIGTERM during a re-tag -------------------------------------------------------------------------------------------


_TERMINATED_RETAG = textwrap.dedent(
    """
    import os, signal, sys
    from dagster import DagsterInstance
    from dagster_gcp import GCSResource
    from octue_dagster import DatafileResource, build_retag_job
    from octue_dagster.core.storage.store import Store

    original = Store.patch_metadata
    patched = []

    def patch_then_terminated(self, *args, **kwargs):
        info = original(self, *args, **kwargs)
        patched.append(info)
        if len(patched) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # the re-tag run is terminated part way
        return info

    Store.patch_metadata = patch_then_terminated
    job = build_retag_job("mark", "gs://{bucket}/dagster/named_by_asset/", add_labels=["validated"])
    result = job.execute_in_process(
        resources={{"datafiles": DatafileResource(gcs=GCSResource())}},
        instance=DagsterInstance.ephemeral(), raise_on_error=False,
    )
    print("SUCCESS" if result.success else "FAILED", len(patched))
    """
)


def test_a_retag_terminated_part_way_leaves_every_record_loadable(client, bucket, tmp_path, monkeypatch):
    """A re-tag changes metadata only: terminated part way, each object is tagged or not (never half), keeps its
    generation and crc32c, so every partition still loads as the version Dagster recorded."""
    instance = DagsterInstance.ephemeral()
    monkeypatch.setenv(WORK_DIR_VARIABLE, str(tmp_path / "work"))
    days = DAYS.get_partition_keys()
    for day in days:
        assert materialize([named_by_asset], partition_key=day, instance=instance, resources=_resources(bucket)).success
    before = {blob.name: blob for blob in client.list_blobs(bucket, prefix="dagster/named_by_asset/")}
    completed = subprocess.run(
        [sys.executable, "-c", _TERMINATED_RETAG.format(bucket=bucket)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 0 and completed.stdout.split()[0] in ("SUCCESS", "FAILED"), completed.stderr[-2000:]
    after = {blob.name: blob for blob in client.list_blobs(bucket, prefix="dagster/named_by_asset/")}
    assert sorted(after) == sorted(before)
    tagged = 0
    for name, blob in after.items():
        assert (blob.generation, blob.crc32c) == (before[name].generation, before[name].crc32c)
        labels = Datafile(f"gs://{bucket}/{name}").labels
        assert labels in (set(), {"validated"})
        tagged += labels == {"validated"}
    assert tagged >= 2
    for day in days:
        result = materialize(
            [named_by_asset.to_source_asset(), reads_by_asset], partition_key=day, instance=instance,
            resources=_resources(bucket), raise_on_error=False,
        )
        assert result.success


# --- odd object names --------------------------------------------------------------------------------------------------


ODD_NAME = "résumé #1 ?&=%25+ (final).csv"


@asset(io_manager_key="by_asset", metadata={"octue_dagster/object_name": ODD_NAME})
def oddly_named() -> Datafile:
    return _new_file("plain.csv", b"odd,name\n")


@asset(io_manager_key="by_asset")
def reads_oddly_named(oddly_named: Datafile) -> Datafile:
    with oddly_named.open("rb") as file:
        return _new_file("copy.csv", file.read())


def test_odd_object_names_are_recorded_and_loaded_as_the_recorded_version(client, bucket, tmp_path, monkeypatch):
    instance = DagsterInstance.ephemeral()
    monkeypatch.setenv(WORK_DIR_VARIABLE, str(tmp_path / "work"))
    resources = _resources(bucket)
    assert materialize([oddly_named, reads_oddly_named], instance=instance, resources=resources).success
    recorded = latest_recorded(instance, AssetKey("oddly_named"), None)
    assert recorded is not None and recorded.uri == f"gs://{bucket}/dagster/oddly_named/=/{ODD_NAME}"
    blob = client.bucket(bucket).get_blob(f"dagster/oddly_named/=/{ODD_NAME}")
    assert (str(blob.generation), blob.crc32c) == (recorded.generation, recorded.crc32c)
    # Replaced outside Dagster under that name: refused, the odd name quoted as it is.
    client.bucket(bucket).blob(f"dagster/oddly_named/=/{ODD_NAME}").upload_from_string(b"other")
    restored = client.bucket(bucket).get_blob(f"dagster/oddly_named/=/{ODD_NAME}")
    restored.metadata = blob.metadata
    restored.patch()
    result = materialize(
        [oddly_named.to_source_asset(), reads_oddly_named], instance=instance, resources=resources,
        raise_on_error=False,
    )
    assert not result.success and ODD_NAME in _failure(result) and "StaleMaterializationError" in _failure(result)


# --- the multiprocess executor -----------------------------------------------------------------------------------------


BUCKET_VARIABLE = "OCTUE_DAGSTER_TEST_BUCKET"


def multiprocess_job():
    """`named_by_datafile` under Dagster's multiprocess executor (each step in its own process), for `execute_job`."""
    from dagster import Definitions, define_asset_job, multiprocess_executor

    definitions = Definitions(
        assets=[named_by_datafile],
        resources=_resources(os.environ[BUCKET_VARIABLE]),
        jobs=[define_asset_job("one_partition", selection=[named_by_datafile])],
        executor=multiprocess_executor,
    )
    return definitions.resolve_job_def("one_partition")


def test_under_the_multiprocess_executor_the_old_object_goes_only_after_the_new_record(
    client, bucket, tmp_path, monkeypatch
):
    """The step's own process records the materialization before it tears the I/O manager down, so the superseded
    object is removed there, after the record: the recorded object exists at every moment of the two runs."""
    from dagster import build_reconstructable_job, execute_job, instance_for_test

    monkeypatch.setenv(BUCKET_VARIABLE, bucket)
    monkeypatch.setenv(WORK_DIR_VARIABLE, str(tmp_path / "work"))
    (tmp_path / "dagster").mkdir()
    with instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        names = []
        for _ in range(2):
            # The step processes import this module from the tests folder.
            job = build_reconstructable_job(
                "test_recorded_versions", "multiprocess_job", reconstructor_working_directory=str(Path(__file__).parent)
            )
            with execute_job(job, instance=instance, tags={"dagster/partition": DAY}) as result:
                assert result.success
            names.append([blob.name for blob in client.list_blobs(bucket, prefix="dagster/named_by_datafile/")])
            recorded = latest_recorded(instance, AssetKey("named_by_datafile"), DAY)
            assert recorded is not None and names[-1] == [recorded.uri.removeprefix(f"gs://{bucket}/")]
        assert names[0] != names[1]
