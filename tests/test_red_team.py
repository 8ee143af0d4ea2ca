"""Red-team attacks on what landed for storage ownership, the cache and integrity: each test is one attack as a user
or a hostile writer would make it, through real Dagster runs on the emulator where Dagster is involved."""

from __future__ import annotations

import datetime
import json
import os

import pytest
from dagster import DagsterInstance, Definitions, asset, materialize
from dagster_gcp import GCSResource
from hypothesis import given, settings
from hypothesis import strategies as st

from octue_dagster import ChecksumMismatchError, Dataset, Datafile, OctueDagsterError, UnsupportedTypeError
from octue_dagster.core.storage.store import Store, make_client
from octue_dagster.dagster import asset_storage, retention
from octue_dagster.dagster.addresses import asset_address, default_object_name
from octue_dagster.dagster.io_manager import DatafileIOManager
from octue_dagster.dagster.owned_objects import OWNER_KEY
from octue_dagster.dagster.resources import DatafileResource
from octue_dagster.dagster.retention_job import build_retention_job
from octue_dagster.exceptions import DatafileNotFoundError, InvalidCloudPathError, InvalidInputError
from octue_dagster.testing.emulator import EMULATOR_VARIABLE

from faultproxy import Fault
from test_retention import _local
from scratch import scratch_folder

PLAN: dict = {}


@asset
def renamed() -> Datafile:
    return _local(PLAN["name"], PLAN["content"])


def _resources(bucket: str, **options) -> dict:
    return {"io_manager": DatafileIOManager(bucket=bucket, gcs=GCSResource(), **options)}


# --- retention against a materialization in progress ------------------------------------------------------------------


def test_retention_during_a_materialization_never_removes_the_object_being_recorded(bucket, client, monkeypatch):
    """A retention pass (older_than_days=0, "clean up everything now") runs while a run has stored an asset's new
    object but Dagster has not yet recorded its materialization. The object is unreferenced for a moment only: it
    must stay, or the run records a URI that no longer exists (and the old object was already replaced)."""
    instance = DagsterInstance.ephemeral()
    resources = _resources(bucket, object_names="datafile")
    PLAN.update(name="first.csv", content=b"first")
    assert materialize([renamed], resources=resources, instance=instance).success

    passes = []
    original = asset_storage.record_outputs

    def retention_between_storing_and_recording(context, stored, count):
        store = Store(make_client())
        passes.append(
            retention.RetentionPass(
                store, instance, bucket=bucket, prefix="dagster", older_than=datetime.timedelta(0)
            ).run(dry_run=False)
        )
        original(context, stored, count)

    monkeypatch.setattr(asset_storage, "record_outputs", retention_between_storing_and_recording)
    PLAN.update(name="second.csv", content=b"second")
    assert materialize([renamed], resources=resources, instance=instance).success
    assert passes and passes[0]["deleted"] == 0 and passes[0]["kept"] == 1
    [record] = instance.fetch_materializations(renamed.key, limit=1).records
    uri = record.asset_materialization.metadata["dagster/uri"].value
    assert uri == f"gs://{bucket}/dagster/renamed/=/second.csv"
    assert client.bucket(bucket).get_blob("dagster/renamed/=/second.csv").download_as_bytes() == b"second"


def test_retention_still_removes_a_leftover_older_than_the_latest_materialization(bucket, client, monkeypatch):
    """The rule that keeps in-progress objects must not keep leftovers for ever: an owned object written before the
    latest materialization was recorded, which that materialization does not point to, goes."""
    instance = DagsterInstance.ephemeral()
    resources = _resources(bucket, object_names="datafile")
    PLAN.update(name="first.csv", content=b"first")
    assert materialize([renamed], resources=resources, instance=instance).success
    first = client.bucket(bucket).get_blob("dagster/renamed/=/first.csv")
    # A leftover as a concurrent run of the same partition leaves (its removal met a newer generation).
    leftover = client.bucket(bucket).blob("dagster/renamed/=/old.csv")
    leftover.metadata = dict(first.metadata)
    leftover.upload_from_string(b"superseded")
    PLAN.update(name="second.csv", content=b"second")
    monkeypatch.setattr(Store, "delete_object", lambda self, path, **kwargs: None)  # the removal was lost
    assert materialize([renamed], resources=resources, instance=instance).success
    monkeypatch.undo()
    monkeypatch.setattr(retention, "CLOCK_SKEW_MARGIN", datetime.timedelta(0))
    counts = retention.RetentionPass(
        Store(client), instance, bucket=bucket, prefix="dagster", older_than=datetime.timedelta(0)
    ).run(dry_run=False)
    assert counts["deleted"] == 2  # first.csv and old.csv
    assert [blob.name for blob in client.list_blobs(bucket)] == ["dagster/renamed/=/second.csv"]


# --- retention against forged and hostile owner marks ------------------------------------------------------------------


@pytest.mark.parametrize(
    "owner, folder",
    [
        ({"asset_key": ["renamed"], "partition": 5}, "dagster/renamed/partition=5/"),
        ({"asset_key": ["renamed"], "partition": [1, 2]}, "dagster/renamed/partition=%5B1%2C%202%5D/"),
        ({"asset_key": ["renamed"], "partition": True}, "dagster/renamed/partition=True/"),
        ({"asset_key": ["renamed"], "partition": {"a": 1, "b": "x"}}, "dagster/renamed/a=1/b=x/"),
        ({"asset_key": "renamed", "partition": None}, "dagster/r/e/n/a/m/e/d/=/"),
        ({"run_id": 7, "step_key": "s", "output": "result", "mapping_key": None}, "dagster/run=7/step=s/output=result/=/"),
        ({"run_id": "r", "step_key": ["s"], "output": "result", "mapping_key": None}, "dagster/run=r/"),
    ],
)
def test_retention_counts_an_object_with_a_hostile_owner_mark_as_foreign(bucket, client, owner, folder):
    """Anyone can write an object whose mark looks like ours but whose values are not what the I/O manager writes
    (a number or list as the partition, a string as the asset key). Retention must leave it, not crash."""
    blob = client.bucket(bucket).blob(folder + "x.csv")
    blob.metadata = {OWNER_KEY: json.dumps(owner, sort_keys=True, separators=(",", ":"))}
    blob.upload_from_string(b"hand written")
    counts = retention.RetentionPass(
        Store(client), DagsterInstance.ephemeral(), bucket=bucket, prefix="dagster", older_than=datetime.timedelta(0)
    ).run(dry_run=False)
    assert (counts["foreign"], counts["deleted"]) == (1, 0)
    assert client.bucket(bucket).get_blob(folder + "x.csv") is not None


def test_a_negative_age_threshold_at_launch_is_refused_by_name(bucket):
    """`older_than_days` given in the launch config (not the job builder) is checked too: a negative age would make
    every finished run's outputs and every superseded object removable, whatever their age."""
    job = build_retention_job("retention", bucket=bucket, older_than_days=30)
    defs = Definitions(jobs=[job], resources={"datafiles": DatafileResource(gcs=GCSResource())})
    config = {"ops": {"retention_op": {"config": {"dry_run": False, "older_than_days": -1}}}}
    with pytest.raises(InvalidInputError, match="older_than"):
        defs.resolve_job_def("retention").execute_in_process(run_config=config, instance=DagsterInstance.ephemeral())


# --- error quality of the I/O manager ----------------------------------------------------------------------------------


@asset
def returns_a_folder() -> Datafile:
    return Datafile(scratch_folder())


@asset
def returns_a_missing_file() -> Datafile:
    return Datafile(os.path.join(scratch_folder(), "never-written.csv"))


@pytest.mark.parametrize("returning", [returns_a_folder, returns_a_missing_file])
def test_an_asset_returning_a_missing_or_non_file_local_path_gets_a_library_error(bucket, returning):
    with pytest.raises(DatafileNotFoundError) as raised:
        materialize([returning], resources=_resources(bucket), instance=DagsterInstance.ephemeral())
    assert isinstance(raised.value, OctueDagsterError)
    assert returning.key.to_user_string() in str(raised.value)


# --- names Octue's SDK would take for its own metadata ------------------------------------------------------------------


_octue_pieces = st.sampled_from(["a", ".", "/", ".octue", ".signed_metadata_files", "signed_metadata_files", "%"])
_octue_texts = st.lists(_octue_pieces, min_size=1, max_size=4).map("".join)


@settings(max_examples=400, deadline=None)
@given(st.lists(_octue_texts, min_size=1, max_size=3), st.one_of(st.none(), _octue_texts), st.sampled_from(["d.csv", "d"]))
def test_no_asset_or_partition_key_makes_an_object_name_octue_would_skip(key, partition, file_name):
    """Octue's SDK skips (and treats as its own) any object whose name ends in `.octue` or holds
    `.signed_metadata_files`; partition keys can be anything, so a key holding those must not produce such a name:
    the stored file would be invisible to every listing, and so never loaded and never replaced."""
    address = asset_address("b-1", "dagster", key, partition)
    try:
        path = address.object_path(default_object_name(address, file_name))
    except InvalidCloudPathError as error:  # only the object name itself may be refused, and by name
        assert "Octue" in str(error)
        return
    assert not (path.name.endswith(".octue") or ".signed_metadata_files" in path.name), path.name


@pytest.mark.parametrize("name", [".octue", "readings.octue", "a.signed_metadata_files.csv"])
def test_a_chosen_object_name_octue_would_take_for_metadata_is_refused(bucket, name):
    @asset(metadata={"octue_dagster/object_name": name})
    def chosen() -> Datafile:
        return _local("x.csv", b"x")

    with pytest.raises(InvalidCloudPathError, match="Octue"):
        materialize([chosen], resources=_resources(bucket), instance=DagsterInstance.ephemeral())


# --- dataset downloads: every byte verified, nothing trusted by size or name, nothing outside the folder ----------------


def test_a_dataset_download_refuses_a_flipped_byte_and_a_same_size_local_impostor(
    client, bucket, proxy, emulator, monkeypatch, tmp_path
):
    for name, content in [("a.bin", b"a" * 40_000), ("b.bin", b"b" * 40_000)]:
        client.bucket(bucket).blob(f"ds/{name}").upload_from_string(content)
    # A same-size, same-name file already in the target folder must not be taken for the object's content.
    (tmp_path / "b.bin").write_bytes(b"X" * 40_000)
    proxy.clear()
    monkeypatch.setenv(EMULATOR_VARIABLE, proxy.url)
    faulty = make_client()
    monkeypatch.setenv(EMULATOR_VARIABLE, emulator.url)
    fault = proxy.add(Fault("corrupt_response", "GET", r"a\.bin.*alt=media|alt=media.*a\.bin", after_bytes=10,
                            strip_headers=("X-Goog-Hash",)))
    dataset = Dataset(f"gs://{bucket}/ds", store=Store(faulty))
    with pytest.raises(ChecksumMismatchError, match="a.bin"):
        dataset.download(tmp_path)
    assert fault.fired == 1
    assert not (tmp_path / "a.bin").exists()
    assert (tmp_path / "b.bin").read_bytes() == b"b" * 40_000
    Dataset(f"gs://{bucket}/ds", store=Store(faulty)).download(tmp_path)  # the fault has passed
    assert (tmp_path / "a.bin").read_bytes() == b"a" * 40_000


def test_a_dataset_object_named_to_climb_out_of_the_folder_never_writes_outside(client, bucket, tmp_path):
    client.bucket(bucket).blob("ds/ok.txt").upload_from_string(b"ok")
    client.bucket(bucket).blob("ds/../../escaped.txt").upload_from_string(b"evil")
    target = tmp_path / "deep" / "inside"
    try:
        Dataset(f"gs://{bucket}/ds", store=Store(client)).download(target)
    except OctueDagsterError as error:
        assert "escaped.txt" in str(error)
    assert sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*") if path.is_file()) in (
        [],
        ["deep/inside/ok.txt"],
    )


# --- values the I/O manager cannot store -------------------------------------------------------------------------------


@asset
def returns_text() -> str:
    return "hello"


@asset
def returns_nothing_unannotated():
    return None


@pytest.mark.parametrize("returning", [returns_text, returns_nothing_unannotated])
def test_a_value_the_io_manager_cannot_store_gets_a_library_type_error(bucket, returning):
    with pytest.raises(UnsupportedTypeError, match="Datafile") as raised:
        materialize([returning], resources=_resources(bucket), instance=DagsterInstance.ephemeral())
    assert isinstance(raised.value, OctueDagsterError) and isinstance(raised.value, TypeError)


def test_a_hand_built_path_with_a_bad_bucket_is_refused_by_the_cache_with_a_library_error():
    from octue_dagster.core.cache import copies as cache
    from octue_dagster.core.storage.gcs_path import GCSPath

    with pytest.raises(InvalidCloudPathError, match="bucket"):
        cache.cached_path(GCSPath("../..", "x"))


# --- a copy at a chosen local path, edited in place -----------------------------------------------------------------


def test_a_chosen_local_copy_edited_in_place_with_its_mtime_restored_is_not_served(client, bucket, tmp_path):
    """Tools that edit in place and keep timestamps (rsync -t, `touch -r`, restoring backups) leave size and mtime as
    they were: the copy must still not be taken for the object's content."""
    client.bucket(bucket).blob("chosen/data.bin").upload_from_string(b"0123456789")
    target = tmp_path / "data.bin"
    Datafile(f"gs://{bucket}/chosen/data.bin", local_path=target, store=Store(client)).download()
    before = os.stat(target)
    with open(target, "r+b") as file:
        file.write(b"X")
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    again = Datafile(f"gs://{bucket}/chosen/data.bin", local_path=target, store=Store(client))
    with again.open("rb") as file:
        assert file.read() == b"0123456789"


# --- a tampered record of what the I/O manager last wrote ---------------------------------------------------------------


@pytest.mark.parametrize(
    "record",
    ["[" * 4000 + "]" * 4000, '{"timestamp": "0001-01-01T00:00:00+05:00"}', '{"labels": 5}', "not json"],
    ids=["nested-4000-deep", "timestamp-out-of-range", "wrong-type", "garbled"],
)
def test_a_tampered_written_record_is_treated_as_unknown_not_a_crash(bucket, client, record):
    """Anyone with write access can change `octue_dagster__written` (it is plain custom metadata). The next
    materialization must still store the output: the record is then unknown, as for an object written before it."""
    from octue_dagster.dagster.owned_objects import WRITTEN_KEY

    PLAN.update(name="r.csv", content=b"same")
    assert materialize([renamed], resources=_resources(bucket), instance=DagsterInstance.ephemeral()).success
    blob = client.bucket(bucket).get_blob("dagster/renamed/=/renamed.csv")
    blob.metadata = {**blob.metadata, WRITTEN_KEY: record, "someone": "else"}
    blob.patch()
    PLAN.update(name="r.csv", content=b"changed")
    assert materialize([renamed], resources=_resources(bucket), instance=DagsterInstance.ephemeral()).success
    stored = client.bucket(bucket).get_blob("dagster/renamed/=/renamed.csv")
    assert stored.download_as_bytes() == b"changed" and stored.metadata["someone"] == "else"


# --- names of new working files -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [".octue", "results.octue", "a" * 256, "é" * 128, "a\x00b"])
def test_a_new_working_file_name_that_would_clobber_metadata_or_no_file_system_allows_is_refused(emulator, name):
    """`datafiles.new(".octue")` used to hand back the step folder's own metadata file: writing it destroyed the
    metadata of every other new file of the step (their next metadata write then failed as corrupt)."""
    resource = DatafileResource(gcs=GCSResource())
    kept = resource.new("kept.csv", labels=["mine"])
    with kept.open("w") as file:
        file.write("x")
    with pytest.raises(InvalidInputError):
        resource.new(name)
    assert Datafile(kept.local_path).labels == {"mine"}
