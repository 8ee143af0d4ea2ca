"""A content write keeps other writers' metadata: it is three-way merged like a patch, conditional on the
metageneration merged against, and carries foreign custom metadata keys (round-3 attack: "a content write drops
other writers' metadata").

These run through the `enforcing_proxy` fixture, which answers 412 to a write (patch or upload) whose
`ifMetagenerationMatch` no longer holds, as GCS does and fake-gcs-server does not.
"""

from __future__ import annotations

import warnings

import pytest

from octue_dagster import Datafile
from octue_dagster.core.listing.selection import RetagSpec, retag_objects
from octue_dagster.core.storage.store import Store, make_client
from octue_dagster.exceptions import ConflictError, OctueCompatibilityWarning


@pytest.fixture
def store(enforcing_proxy, bucket) -> Store:
    """A store whose requests go through the precondition-enforcing proxy."""
    return Store(make_client())


def _write(store: Store, uri: str, content: str, **metadata) -> Datafile:
    datafile = Datafile(uri, store=store, **metadata)
    with datafile.open("w") as file:
        file.write(content)
    return datafile


def _stored(store: Store, uri: str) -> tuple[Datafile, dict[str, str], bytes]:
    fresh = Datafile(uri, store=store)
    blob = store.client.bucket(fresh.gcs_path.bucket).get_blob(fresh.gcs_path.name)
    return fresh, dict(blob.metadata or {}), blob.download_as_bytes()


def test_a_retag_since_the_datafile_read_the_object_survives_its_content_write(store, bucket):
    uri = f"gs://{bucket}/readings/data.csv"
    _write(store, uri, "v1", labels={"raw"}, tags={"site": "north"})
    reader = Datafile(uri, store=store)  # reads the object: generation G, metageneration 1

    counts = retag_objects(store, f"gs://{bucket}/readings/", RetagSpec(add_labels={"reviewed"}, set_tags={"qc": 1}))
    assert counts.changed == 1  # a metadata patch: same generation, new metageneration

    reader.labels.add("mine")
    with reader.open("w") as file:
        file.write("v2")

    fresh, _, content = _stored(store, uri)
    assert content == b"v2"
    assert fresh.labels == {"raw", "reviewed", "mine"}
    assert fresh.tags == {"site": "north", "qc": 1}
    assert reader.labels == {"raw", "reviewed", "mine"} and reader.generation == fresh.generation


def test_a_retag_landing_between_the_read_and_the_upload_is_refused_then_merged(store, bucket, enforcing_proxy):
    uri = f"gs://{bucket}/data.csv"
    _write(store, uri, "v1", labels={"raw"})
    reader = Datafile(uri, store=store)
    reader.tags["mine"] = True
    uploads = []
    original = store.upload_file

    def upload_after_a_retag(*args, **kwargs):
        if not uploads:  # the re-tag patches after the writer read the metadata it merged against
            retag_objects(Store(make_client()), uri, RetagSpec(remove_labels={"raw"}, add_labels={"late"}))
        uploads.append(kwargs["if_metageneration_match"])
        return original(*args, **kwargs)

    store.upload_file = upload_after_a_retag  # type: ignore[method-assign]
    with reader.open("w") as file:
        file.write("v2")

    # The first upload carried a stale metageneration and was refused (412); the second merged the re-tag.
    assert len(uploads) == 2 and uploads[1] == uploads[0] + 1
    fresh, _, content = _stored(store, uri)
    assert content == b"v2" and fresh.labels == {"late"} and fresh.tags == {"mine": True}


def test_content_replaced_by_another_writer_is_still_a_conflict(store, bucket):
    uri = f"gs://{bucket}/data.csv"
    _write(store, uri, "v1")
    reader = Datafile(uri, store=store)
    _write(store, uri, "theirs")  # a new generation
    with pytest.raises(ConflictError, match="another writer"):
        with reader.open("w") as file:
            file.write("mine")
    assert _stored(store, uri)[2] == b"theirs"


@pytest.mark.parametrize("ignore_stored_metadata", [False, True])
def test_a_fresh_datafile_rewriting_an_object_keeps_a_persons_custom_key(store, bucket, ignore_stored_metadata):
    uri = f"gs://{bucket}/data.csv"
    _write(store, uri, "v1", labels={"raw"})
    # A person (or another tool) adds a key of their own, outside Octue's namespace.
    blob = store.client.bucket(bucket).get_blob("data.csv")
    blob.metadata = {"reviewed-by": "alice"}
    blob.patch()

    with warnings.catch_warnings():
        # Stored labels overriding the given ones is announced (OctueCompatibilityWarning); not this test's subject.
        warnings.simplefilter("ignore", OctueCompatibilityWarning)
        rewriter = Datafile(uri, store=store, labels={"processed"}, ignore_stored_metadata=ignore_stored_metadata)
    with rewriter.open("w") as file:
        file.write("v2")

    fresh, metadata, content = _stored(store, uri)
    assert content == b"v2" and metadata["reviewed-by"] == "alice"
    # Octue's precedence (issue 14): stored labels win over given ones, unless the stored metadata is ignored.
    assert fresh.labels == ({"processed"} if ignore_stored_metadata else {"raw"})


def test_uploading_a_changed_local_file_to_its_own_object_keeps_a_retag_and_foreign_keys(store, bucket, tmp_path):
    uri = f"gs://{bucket}/data.csv"
    local = tmp_path / "data.csv"
    local.write_text("v1")
    datafile = Datafile(str(local), cloud_path=uri, store=store, labels={"raw"})
    datafile.upload()
    retag_objects(store, uri, RetagSpec(add_labels={"reviewed"}))
    blob = store.client.bucket(bucket).get_blob("data.csv")
    blob.metadata = {"owner": "bob"}
    blob.patch()

    local.write_text("v2")
    datafile.labels.add("mine")
    datafile.upload()

    fresh, metadata, content = _stored(store, uri)
    assert content == b"v2" and metadata["owner"] == "bob"
    assert fresh.labels == {"raw", "reviewed", "mine"}


def test_the_io_manager_storing_new_content_keeps_a_retag_that_lands_before_its_upload(
    store, bucket, monkeypatch, tmp_path
):
    from dagster import asset, materialize
    from dagster_gcp import GCSResource

    from octue_dagster.dagster.io_manager import DatafileIOManager

    versions = iter(["v1", "v2"])

    @asset
    def readings() -> Datafile:
        datafile = Datafile(str(tmp_path / f"readings-{len(list(tmp_path.iterdir()))}.csv"), labels={"raw"})
        with datafile.open("w") as file:
            file.write(next(versions))
        return datafile

    resources = {"io_manager": DatafileIOManager(bucket=bucket, gcs=GCSResource())}
    assert materialize([readings], resources=resources).success
    uri = f"gs://{bucket}/dagster/readings/=/readings.csv"
    uploads = []
    original = Store.upload_file

    def upload_after_a_retag(self, *args, **kwargs):
        if not uploads:  # the re-tag patches after the I/O manager read the object it merges against
            retag_objects(Store(make_client()), uri, RetagSpec(add_labels={"reviewed"}))
        uploads.append(kwargs.get("if_metageneration_match"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Store, "upload_file", upload_after_a_retag)
    assert materialize([readings], resources=resources).success

    assert len(uploads) == 2 and uploads[1] == uploads[0] + 1  # refused once (412), then merged
    fresh, metadata, content = _stored(store, uri)
    assert content == b"v2" and fresh.labels == {"raw", "reviewed"}
    assert metadata["octue_dagster__owner"]
