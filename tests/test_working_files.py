"""Per-step working folders under the default multiprocess executor: parallel steps using the same file names,
retries and re-execution, each step's folder removed by its own process once its outputs are stored."""

import os
import stat
import tempfile
from pathlib import Path

import pytest

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
from octue_dagster.core.local import folders as private_folders
from octue_dagster.dagster.resources import DatafileResource
from octue_dagster.dagster.working_files import OUTSIDE_STEPS, WorkingFolders, default_base
from octue_dagster.exceptions import UnsafeFolderError


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



# --- private working folders (round-3 attack: a shared temp folder hijacked by another local user) ------------------

OTHER_UID = 54321


def _give_to_another_user(folder: Path, monkeypatch) -> None:
    """Make `folder` another user's: really (as root), or by making this process a different user to the check."""
    if os.getuid() == 0:
        os.chown(folder, OTHER_UID, OTHER_UID)
    else:
        real_uid = os.getuid()
        monkeypatch.setattr(private_folders.os, "getuid", lambda: real_uid + 1)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@asset
def hijack_target(datafiles: DatafileResource) -> Datafile:
    datafile = datafiles.new("data.csv")
    with datafile.open("w") as file:
        file.write("the owner's bytes")
    return datafile


def test_the_default_base_is_per_user_and_every_working_folder_is_private(bucket, client, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    seen: list[Path] = []

    @asset
    def private(datafiles: DatafileResource) -> Datafile:
        datafile = datafiles.new("data.csv")
        with datafile.open("w") as file:
            file.write("private")
        seen.append(Path(datafile.local_path))
        for folder in [Path(datafile.local_path).parent, *Path(datafile.local_path).parent.parents][:4]:
            seen.append(folder)
            assert _mode(folder) == 0o700, folder
            assert os.lstat(folder).st_uid == os.getuid()
        return datafile

    gcs = GCSResource()
    resources = {"io_manager": DatafileIOManager(bucket=bucket, gcs=gcs), "datafiles": DatafileResource(gcs=gcs)}
    assert materialize([private], resources=resources).success
    base = default_base()
    assert base == tmp_path / f"octue-dagster-{os.getuid()}"
    assert seen[0].is_relative_to(base) and seen[-1] == base
    assert _mode(base) == 0o700


def test_a_base_another_user_created_first_is_refused_and_nothing_is_uploaded(bucket, client, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    base = default_base()
    base.mkdir(mode=0o755)  # made first by "the attacker", who owns it
    _give_to_another_user(base, monkeypatch)
    gcs = GCSResource()
    resources = {"io_manager": DatafileIOManager(bucket=bucket, gcs=gcs), "datafiles": DatafileResource(gcs=gcs)}
    with pytest.raises(UnsafeFolderError, match="belongs to another user") as raised:
        materialize([hijack_target], resources=resources)
    assert isinstance(raised.value, PermissionError) and "working_dir" in str(raised.value)
    assert list(client.list_blobs(bucket)) == []
    assert list(base.iterdir()) == []  # nothing was written in the attacker's folder


@pytest.mark.parametrize("how", ["world-writable", "symlink", "run-folder-of-another-user"])
def test_a_tampered_working_folder_is_refused(tmp_path, monkeypatch, how):
    base = tmp_path / "base"
    folders = WorkingFolders(base, chosen=False)
    if how == "world-writable":
        base.mkdir()
        base.chmod(0o777)
        match = "may be written by other users"
    elif how == "symlink":
        elsewhere = tmp_path / "attackers"
        elsewhere.mkdir()
        base.symlink_to(elsewhere)
        match = "symbolic link"
    else:
        # Below a private base nobody else can create anything; a base the user chose (and so does not own
        # exclusively) may hold a run folder someone else made.
        folders = WorkingFolders(base, chosen=True)
        run = base / OUTSIDE_STEPS
        run.mkdir(parents=True)
        _give_to_another_user(run, monkeypatch)
        match = "belongs to another user"
    with pytest.raises(UnsafeFolderError, match=match):
        folders.folder_for_current_step()


def test_a_folder_of_ours_readable_by_others_is_closed_and_a_chosen_one_is_left_as_it_is(tmp_path):
    default = tmp_path / "default"
    default.mkdir(mode=0o755)
    default.chmod(0o755)  # as made by an earlier version with a usual umask
    folder = WorkingFolders(default, chosen=False).folder_for_current_step()
    assert _mode(default) == 0o700 and _mode(folder) == 0o700 and _mode(folder.parent) == 0o700
    chosen = tmp_path / "chosen"
    chosen.mkdir()
    chosen.chmod(0o755)
    folder = WorkingFolders(chosen).folder_for_current_step()
    assert _mode(chosen) == 0o755 and _mode(folder) == 0o700
