"""Network faults through real Dagster runs: `DatafileIOManager`'s store and load, under every fault of the proxy,
either succeed or fail the run with the library's own error, and the stored object (content, labels, tags) is the
previous materialization's or the new one, never a mix. A failed run leaves the previous object and materialization.

The I/O manager gets its client the way users' code does, from a `GCSResource` (a plain google-cloud-storage client,
not one made by `make_client`), pointed at `faultproxy.FaultProxy`. As in `tests/test_faults.py`, the library's
retry rules are kept with a shorter back-off, and each request times out after 0.5 s so that a stall is a timeout.

Also here: `Store.copy_object` after a rewrite whose answer was lost and whose retry GCS answers with 412
(fake-gcs-server ignores `ifGenerationMatch` on rewrites, so the proxy gives the 412 as GCS would).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dagster import AssetKey, DagsterInstance, asset, materialize
from dagster_gcp import GCSResource

from octue_dagster import ConflictError, Datafile, OctueDagsterError
from octue_dagster.core.metadata import values as md
from octue_dagster.core.storage.gcs_path import GCSPath
from octue_dagster.core.storage.store import ObjectInfo, Store, make_client
from octue_dagster.dagster.resources import StoreConfig
from octue_dagster.dagster.ui_metadata import URI_KEY
from octue_dagster.testing.emulator import EMULATOR_VARIABLE
from octue_dagster.dagster.io_manager import DatafileIOManager

from conftest import QUICK_SETTINGS
from faultproxy import Fault, FaultProxy, standard_faults
from reliability_summary import save_summary

STALL_SECONDS = 1.5
OLD = bytes(range(256)) * 400  # 100 KiB: a cut at 1,000 bytes lands mid-upload
NEW = b"new content " * 9000
TIMESTAMP = datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.timezone.utc)
OBJECT_NAME = "dagster/stored/=/stored.bin"
SOURCE_NAME = "incoming/data.bin"  # copied to the asset's object, which it replaces

_summary: dict[str, Any] = {"cases": 0, "faults_injected": 0, "outcomes": {}, "lost": 0}


@pytest.fixture(scope="module", autouse=True)
def write_summary():
    """Record what this module did (cases, faults fired, outcomes) for docs/reliability.md."""
    yield
    save_summary("io_manager_faults", _summary)


class ProxiedGCSResource(GCSResource):
    """`GCSResource` whose (plain, unmodified) client talks to the fault proxy, with a short per-request timeout."""

    proxy_url: str

    def get_client(self):
        previous = os.environ.get(EMULATOR_VARIABLE)
        os.environ[EMULATOR_VARIABLE] = self.proxy_url
        try:
            client = super().get_client()
        finally:
            os.environ[EMULATOR_VARIABLE] = previous or ""
        return client


# --- the assets: what each run returns comes from PLAN ----------------------------------------------------------------

#: What `stored` returns in the current run: ("local", content, labels, tags) or ("cloud", uri).
PLAN: dict[str, Any] = {}
#: What `reader` saw of its input.
SEEN: dict[str, Any] = {}


@asset
def stored() -> Datafile:
    if PLAN["kind"] == "cloud":
        return Datafile(PLAN["uri"], storage_client=make_client())
    datafile = Datafile(
        Path(PLAN["folder"]) / "data.bin", labels=PLAN["labels"], tags=PLAN["tags"], timestamp=TIMESTAMP
    )
    with datafile.open("wb") as file:
        file.write(PLAN["content"])
    return datafile


@asset
def reader(stored: Datafile) -> None:
    with stored.open("rb") as file:
        SEEN["read"] = (file.read(), set(stored.labels), dict(stored.tags))


def _resources(bucket: str, gcs: GCSResource) -> dict:
    quick = StoreConfig(**dataclasses.asdict(QUICK_SETTINGS))
    return {"io_manager": DatafileIOManager(bucket=bucket, gcs=gcs, store_settings=quick)}


# --- operations ------------------------------------------------------------------------------------------------------

OLD_STATE = (OLD, frozenset({"old"}), '{"run": "old"}')
NEW_STATE = (NEW, frozenset({"new"}), '{"run": "new"}')


@dataclasses.dataclass(frozen=True)
class Operation:
    """One I/O manager operation: what the run does, its expected new state, and which request the fault targets."""

    name: str
    plan: Callable[[str, Path], dict[str, Any]]
    expected: tuple
    method: str
    path: str
    loads: bool = False  # run `reader` on the stored asset instead of storing


OPERATIONS = [
    # A local datafile with new content: one conditional multipart upload.
    Operation("store: upload", lambda bucket, folder: _local(folder, NEW, {"new"}, "new"), NEW_STATE,
              "POST", r"/upload/"),
    # A cloud datafile elsewhere: a server-side copy (rewrite).
    Operation("store: copy", lambda bucket, folder: {"kind": "cloud", "uri": f"gs://{bucket}/{SOURCE_NAME}"},
              NEW_STATE, "POST", r"rewriteTo"),
    # Identical content and metadata: nothing is written; the fault hits the listing of the asset's folder.
    Operation("store: identical", lambda bucket, folder: _local(folder, OLD, {"old"}, "old"), OLD_STATE,
              "GET", r"/o\?.*prefix=dagster%2Fstored"),
    # Identical content, new labels and tags: only a metadata patch.
    Operation("store: identical, retagged", lambda bucket, folder: _local(folder, OLD, {"new"}, "new"),
              (OLD, frozenset({"new"}), '{"run": "new"}'), "PATCH", r"/o/dagster%2Fstored"),
    # load_input: one listing of the upstream folder; the asset then downloads the content.
    Operation("load", lambda bucket, folder: {}, OLD_STATE, "GET", r"/o\?.*prefix=dagster%2Fstored", loads=True),
]


def _local(folder: Path, content: bytes, labels: set[str], run: str) -> dict[str, Any]:
    return {"kind": "local", "folder": str(folder), "content": content, "labels": labels, "tags": {"run": run}}


FAULTS = standard_faults(STALL_SECONDS)


# --- checks ----------------------------------------------------------------------------------------------------------


def object_state(client, bucket: str) -> tuple[tuple, int, str]:
    """((content, labels, tags), generation, crc32c) of the asset's object, read directly from the emulator."""
    blob = client.bucket(bucket).get_blob(OBJECT_NAME)
    assert blob is not None, "the previous materialization's object is gone"
    stored_metadata = md.from_cloud_metadata(blob.metadata or {}, f"gs://{bucket}/{OBJECT_NAME}")
    state = (blob.download_as_bytes(), frozenset(stored_metadata.labels), json.dumps(stored_metadata.tags, sort_keys=True))
    return state, int(blob.generation), blob.crc32c


def error_chain(result) -> list[tuple[str, str]]:
    """(class name, message) of every error in the failed step's chain (Dagster wraps the I/O manager's error)."""
    chain = []
    for event in result.get_step_failure_events():
        error = event.event_specific_data.error
        while error is not None:
            chain.append((error.cls_name, error.message))
            error = error.cause or error.context
    return chain


def _library_error_names() -> set[str]:
    names, pending = set(), [OctueDagsterError]
    while pending:
        cls = pending.pop()
        names.add(cls.__name__)
        pending.extend(cls.__subclasses__())
    return names


@pytest.mark.parametrize("fault_name", list(FAULTS))
@pytest.mark.parametrize("operation", OPERATIONS, ids=[operation.name for operation in OPERATIONS])
def test_io_manager_under_fault(operation, fault_name, proxy, client, bucket, tmp_path):
    proxy.clear()
    instance = DagsterInstance.ephemeral()
    # The previous materialization, past the proxy: OLD with label "old".
    PLAN.clear()
    PLAN.update(_local(tmp_path / "previous", OLD, {"old"}, "old"))
    (tmp_path / "previous").mkdir()
    assert materialize([stored], resources=_resources(bucket, GCSResource()), instance=instance).success
    previous_event = instance.get_latest_materialization_event(AssetKey("stored"))
    before, generation_before, _ = object_state(client, bucket)
    assert before == OLD_STATE
    source = Datafile(f"gs://{bucket}/{SOURCE_NAME}", storage_client=client, labels={"new"}, tags={"run": "new"},
                      timestamp=TIMESTAMP)
    with source.open("wb") as file:
        file.write(NEW)

    (tmp_path / "run").mkdir()
    PLAN.clear()
    PLAN.update(operation.plan(bucket, tmp_path / "run"))
    SEEN.clear()
    fault = FAULTS[fault_name](operation.method, operation.path)
    if fault is not None:
        proxy.add(fault)
    assets = [stored.to_source_asset(), reader] if operation.loads else [stored]
    gcs = ProxiedGCSResource(proxy_url=proxy.url)
    result = materialize(assets, resources=_resources(bucket, gcs), instance=instance, raise_on_error=False)

    after, generation_after, crc32c_after = object_state(client, bucket)
    fired = fault.fired if fault is not None else 0
    chain = [] if result.success else error_chain(result)
    outcome = "succeeded" if result.success else next(
        (f"failed: {name}" for name, _ in chain if name in _library_error_names()), f"failed: {chain[:1]}"
    )
    _summary["cases"] += 1
    _summary["faults_injected"] += fired
    _summary["outcomes"].setdefault(operation.name, {})[fault_name] = {"outcome": outcome, "fired": fired}
    if after not in (OLD_STATE, operation.expected):
        _summary["lost"] += 1

    # The object is the previous materialization's or the new one, never a mix.
    assert after in (OLD_STATE, operation.expected), f"the stored object is mixed: {after}"
    if fault is not None and fault_name != "http-503-always":
        assert fired >= 1, "the fault never fired: the test did not test anything"
    latest = instance.get_latest_materialization_event(AssetKey("stored"))
    if result.success:
        assert after == operation.expected
        if operation.loads:
            assert SEEN["read"] == (OLD, {"old"}, {"run": "old"})
            assert generation_after == generation_before
            return
        if operation.expected[0] == OLD:  # same content: the object is not rewritten
            assert generation_after == generation_before
        if operation.expected == OLD_STATE:  # nothing changed: nothing at all is written
            assert [e.method for e in proxy.exchanges if e.method not in ("GET", "HEAD")] == []
        # The new materialization describes exactly the stored object, and its data version is that crc32c.
        materialization = latest.asset_materialization
        assert latest.run_id == result.run_id != previous_event.run_id
        assert materialization.metadata[URI_KEY].value == f"gs://{bucket}/{OBJECT_NAME}"
        assert materialization.metadata["generation"].value == str(generation_after)
        assert materialization.metadata["crc32c"].value == crc32c_after
        assert materialization.tags["dagster/data_version"] == crc32c_after
        assert set(materialization.metadata["labels"].value) == set(operation.expected[1])
    else:
        # A failed run keeps the previous object and records no materialization; the error is the library's own.
        assert (after, generation_after) == (before, generation_before)
        assert latest.run_id == previous_event.run_id
        library = [(name, message) for name, message in chain if name in _library_error_names()]
        assert library and len(library[0][1]) > 20, f"unclear error: {chain}"


# --- server-side copy: a retried rewrite answered with 412 -------------------------------------------------------------


@pytest.fixture
def proxied_store(proxy: FaultProxy, emulator, monkeypatch: pytest.MonkeyPatch):
    proxy.clear()
    monkeypatch.setenv(EMULATOR_VARIABLE, proxy.url)
    proxied = make_client()
    monkeypatch.setenv(EMULATOR_VARIABLE, emulator.url)
    return Store(proxied, settings=QUICK_SETTINGS)


def _put(client, bucket: str, name: str, content: bytes, labels: set[str]) -> ObjectInfo:
    blob = client.bucket(bucket).blob(name)
    blob.metadata = md.to_cloud_metadata("1c4b0b36-6a49-4b6a-9d55-1b0f5f4a0a11", None, labels, {})
    blob.upload_from_string(content)
    return Store(client).get_object(GCSPath(bucket, name))


def test_copy_whose_answer_was_lost_and_retry_got_412_is_its_own_copy(proxy, proxied_store, client, bucket):
    source = _put(client, bucket, "source.bin", OLD, {"source"})
    destination = GCSPath(bucket, "copy.bin")
    metadata = md.to_cloud_metadata("0f0e0d0c-0b0a-4909-8807-060504030201", None, {"copied"}, {})
    # The first rewrite reaches the server and is done, but its answer is lost; GCS answers the retry with 412,
    # because the destination no longer has generation 0.
    lost = proxy.add(Fault("cut_response", "POST", r"rewriteTo", after_bytes=20))
    refused = proxy.add(Fault("status", "POST", r"rewriteTo", status=412))
    info = proxied_store.copy_object(source, destination, custom_metadata=metadata, if_generation_match=0)
    assert (lost.fired, refused.fired) == (1, 1)
    assert [exchange.fault for exchange in proxy.exchanges if "rewriteTo" in exchange.target] == [
        "cut_response",
        "status",
    ]
    stored = client.bucket(bucket).get_blob("copy.bin")
    assert info.path == destination and info.generation == stored.generation
    assert info.crc32c == stored.crc32c == source.crc32c
    assert stored.download_as_bytes() == OLD
    assert {key: stored.metadata.get(key) for key in metadata} == metadata


@pytest.mark.parametrize("other_content", [NEW, OLD], ids=["other content", "same content, other metadata"])
def test_copy_refused_with_412_because_another_writer_is_there_raises_conflict(
    proxy, proxied_store, client, bucket, other_content
):
    source = _put(client, bucket, "source.bin", OLD, {"source"})
    destination = GCSPath(bucket, "copy.bin")
    metadata = md.to_cloud_metadata("0f0e0d0c-0b0a-4909-8807-060504030201", None, {"copied"}, {})

    def other_writer_first() -> None:
        _put(client, bucket, "copy.bin", other_content, {"other-writer"})

    refused = proxy.add(Fault("status", "POST", r"rewriteTo", status=412, before=other_writer_first))
    with pytest.raises(ConflictError, match="another writer"):
        proxied_store.copy_object(source, destination, custom_metadata=metadata, if_generation_match=0)
    assert refused.fired == 1
    stored = client.bucket(bucket).get_blob("copy.bin")
    assert stored.download_as_bytes() == other_content
    assert md.from_cloud_metadata(stored.metadata, "gs://x/copy.bin").labels == {"other-writer"}
