"""Per-step working folders under the default multiprocess executor: parallel steps using the same file names,
retries and re-execution, each step's folder removed by its own process once its outputs are stored."""

import os
from pathlib import Path

from dagster import (
    Definitions,
    ReexecutionOptions,
    RetryPolicy,
    asset,
    define_asset_job,
    execute_job,
    instance_for_test,
    materialize,
)
from dagster._core.definitions.reconstruct import ReconstructableJob
from dagster_gcp import GCSResource

from octue_dagster import Datafile
from octue_dagster.dagster.io_manager import DatafileIOManager
from octue_dagster.dagster.resources import DatafileResource


def _write_new(datafiles: DatafileResource, text: str) -> Datafile:
    # Both assets use the same name: each step attempt has its own folder.
    datafile = datafiles.new("data.csv")
    with datafile.open("w") as file:
        file.write(text)
    Path(os.environ["OCTUE_TEST_SEEN"], f"{text}.path").write_text(datafile.local_path)
    return datafile


@asset
def left(datafiles: DatafileResource) -> Datafile:
    return _write_new(datafiles, "left")


@asset
def right(datafiles: DatafileResource) -> Datafile:
    return _write_new(datafiles, "right")


@asset(retry_policy=RetryPolicy(max_retries=1))
def flaky(context, datafiles: DatafileResource) -> Datafile:
    datafile = datafiles.new("data.csv")  # the same name again in the retry
    with datafile.open("w") as file:
        file.write(f"attempt {context.retry_number}")
    if context.retry_number == 0:
        raise RuntimeError("the first attempt fails after writing its file")
    return datafile


@asset
def fails_once(datafiles: DatafileResource, left: Datafile) -> Datafile:
    marker = Path(os.environ["OCTUE_TEST_SEEN"], "fail-once")
    datafile = datafiles.new("data.csv")
    with datafile.open("w") as file:
        file.write("re-executed")
    if not marker.exists():
        marker.write_text("failed")
        raise RuntimeError("fails in the first run only")
    return datafile


def _definitions() -> Definitions:
    gcs = GCSResource()
    return Definitions(
        assets=[left, right, flaky, fails_once],
        jobs=[
            define_asset_job("parallel", selection=["left", "right"]),
            define_asset_job("retried", selection=["flaky"]),
            define_asset_job("chain", selection=["left", "fails_once"]),
        ],
        resources={
            "io_manager": DatafileIOManager(bucket=os.environ["OCTUE_TEST_BUCKET"], gcs=gcs),
            "datafiles": DatafileResource(gcs=gcs, working_dir=os.environ["OCTUE_TEST_WORKING_DIR"]),
        },
    )


def parallel_job():
    return _definitions().resolve_job_def("parallel")


def retried_job():
    return _definitions().resolve_job_def("retried")


def chain_job():
    return _definitions().resolve_job_def("chain")


def _environment(monkeypatch, bucket: str, tmp_path: Path) -> tuple[Path, Path]:
    working, seen = tmp_path / "working", tmp_path / "seen"
    seen.mkdir()
    monkeypatch.setenv("OCTUE_TEST_BUCKET", bucket)
    monkeypatch.setenv("OCTUE_TEST_WORKING_DIR", str(working))
    monkeypatch.setenv("OCTUE_TEST_SEEN", str(seen))
    return working, seen


def _leftovers(working: Path) -> list[str]:
    return sorted(str(path.relative_to(working)) for path in working.rglob("*")) if working.exists() else []


def test_parallel_steps_with_the_same_file_names_each_get_their_own_folder(bucket, client, monkeypatch, tmp_path):
    working, seen = _environment(monkeypatch, bucket, tmp_path)
    job = ReconstructableJob.for_file(os.path.abspath(__file__), "parallel_job")
    with instance_for_test(temp_dir=str(tmp_path)) as instance:
        for repeat in range(3):
            with execute_job(job, instance=instance) as result:
                assert result.success, repeat
                step_pids = {event.pid for event in result.all_events if event.is_step_success}
                run_id = result.run_id
            assert len(step_pids) == 2
            for text in ("left", "right"):
                path = Path((seen / f"{text}.path").read_text())
                assert path == working / run_id / text / "attempt-0" / "data.csv"
                stored = client.bucket(bucket).get_blob(f"dagster/{text}/=/{text}.csv")
                assert stored.download_as_bytes() == text.encode()
            # Each step process removed its own folder, and the last one the emptied run folder.
            assert _leftovers(working) == []


def test_a_retried_step_gets_a_fresh_folder_for_the_same_names(bucket, client, monkeypatch, tmp_path):
    working, _ = _environment(monkeypatch, bucket, tmp_path)
    job = ReconstructableJob.for_file(os.path.abspath(__file__), "retried_job")
    with instance_for_test(temp_dir=str(tmp_path)) as instance:
        with execute_job(job, instance=instance) as result:
            assert result.success
            assert any(event.event_type_value == "STEP_RESTARTED" for event in result.all_events)
    assert client.bucket(bucket).get_blob("dagster/flaky/=/flaky.csv").download_as_bytes() == b"attempt 1"
    assert _leftovers(working) == []


def test_re_execution_from_failure_uses_the_new_runs_folders(bucket, client, monkeypatch, tmp_path):
    working, _ = _environment(monkeypatch, bucket, tmp_path)
    job = ReconstructableJob.for_file(os.path.abspath(__file__), "chain_job")
    with instance_for_test(temp_dir=str(tmp_path)) as instance:
        with execute_job(job, instance=instance, raise_on_error=False) as first:
            assert not first.success
            first_run = first.run_id
        options = ReexecutionOptions.from_failure(first_run, instance)
        with execute_job(job, instance=instance, reexecution_options=options) as second:
            assert second.success
            # Only the failed step ran again; it loaded `left` from the first run's materialization.
            assert {event.step_key for event in second.all_events if event.is_step_success} == {"fails_once"}
    assert client.bucket(bucket).get_blob("dagster/fails_once/=/fails_once.csv").download_as_bytes() == b"re-executed"
    assert _leftovers(working) == []


@asset
def after_left(datafiles: DatafileResource, left: Datafile) -> Datafile:
    left_folder = Path(Path(os.environ["OCTUE_TEST_SEEN"], "left.path").read_text()).parent
    datafile = datafiles.new("data.csv")
    with datafile.open("w") as file:
        file.write(f"left's folder existed: {left_folder.exists()}")
    return datafile


def test_in_process_a_step_folder_goes_when_the_next_step_starts(bucket, client, tmp_path, monkeypatch):
    gcs = GCSResource()
    monkeypatch.setenv("OCTUE_TEST_SEEN", str(tmp_path))
    resources = {
        "io_manager": DatafileIOManager(bucket=bucket, gcs=gcs),
        "datafiles": DatafileResource(gcs=gcs, working_dir=str(tmp_path / "working")),
    }
    assert materialize([left, after_left], resources=resources).success
    stored = client.bucket(bucket).get_blob("dagster/after_left/=/after_left.csv").download_as_bytes()
    assert stored == b"left's folder existed: False"
    assert _leftovers(tmp_path / "working") == []


def test_in_process_runs_remove_their_folders_at_the_end_and_keep_them_when_asked(bucket, client, tmp_path):
    gcs = GCSResource()
    seen = tmp_path / "seen"
    seen.mkdir()
    os.environ["OCTUE_TEST_SEEN"] = str(seen)
    for keep in (False, True):
        working = tmp_path / f"working-{keep}"
        resources = {
            "io_manager": DatafileIOManager(bucket=bucket, gcs=gcs),
            "datafiles": DatafileResource(gcs=gcs, working_dir=str(working), keep_working_files=keep),
        }
        result = materialize([left, right], resources=resources)
        assert result.success
        kept = _leftovers(working)
        if keep:
            assert f"{result.run_id}/left/attempt-0/data.csv" in kept
            assert f"{result.run_id}/right/attempt-0/data.csv" in kept
        else:
            assert kept == []
    assert client.bucket(bucket).get_blob("dagster/left/=/left.csv") is not None
    del os.environ["OCTUE_TEST_SEEN"]

