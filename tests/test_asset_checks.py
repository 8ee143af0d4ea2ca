"""Asset checks on stored objects, through real materializations on the emulator: an intact object passes (also after
re-tagging), and an object overwritten (by Octue's SDK), deleted, stripped of its owner mark or restored from another
generation fails, as does a missing required label or tag; partitioned assets name the failing partitions, dataset
assets the failing files. No check downloads anything."""

from __future__ import annotations

import pytest
import requests
from dagster import (
    AssetCheckSeverity,
    AssetKey,
    AssetSelection,
    BackfillPolicy,
    DagsterInstance,
    MaterializeResult,
    MultiPartitionsDefinition,
    StaticPartitionsDefinition,
    asset,
    materialize,
)
from dagster_gcp import GCSResource

from octue_dagster import (
    Datafile,
    DatafileIOManager,
    DatafileResource,
    Dataset,
    InvalidInputError,
    InvalidLabelError,
    InvalidTagError,
    OctueDagsterError,
    RetagSpec,
    build_datafile_asset_checks,
    retag_objects,
)
from octue_dagster.core.storage.store import Store
from octue_dagster.dagster.asset_checks import INTACT_CHECK, METADATA_CHECK
from octue_dagster.dagster.owned_objects import OWNER_KEY

from test_octue_sdk_live import octue_python, run_sdk  # noqa: F401 - the live SDK's venv fixture

PARTS = StaticPartitionsDefinition(["a", "b", "c", "d"])
# Dimensions declared out of name order: Dagster orders them by name in the key string ("d1|n"), as the mark does.
GRID = MultiPartitionsDefinition(
    {"site": StaticPartitionsDefinition(["n", "s"]), "day": StaticPartitionsDefinition(["d1", "d2"])}
)


@asset
def readings() -> Datafile:
    return _local("readings.csv", "t,v\n0,1\n", labels={"raw"}, tags={"site": "north"})


@asset(partitions_def=PARTS, backfill_policy=BackfillPolicy.single_run())
def daily(context) -> dict[str, Datafile]:
    return {
        key: _local(f"daily-{key}.csv", f"t,v\n0,{key}\n", labels={"raw"}, tags={"day": key})
        for key in context.partition_keys
    }


@asset(partitions_def=GRID)
def grid(context) -> Datafile:
    return _local("grid.csv", f"cell,{context.partition_key}\n", labels={"raw"})


@asset
def farm() -> Dataset:
    folder = LOCAL["folder"] / "farm"
    folder.mkdir(exist_ok=True)
    for turbine in ("t1", "t2", "t3"):
        (folder / f"{turbine}.csv").write_text(f"t,v\n0,{turbine}\n")
        Datafile(folder / f"{turbine}.csv", labels={"raw"}, tags={"turbine": turbine}).update_metadata()
    return Dataset(folder, name="farm", labels={"wind"})


#: Where the assets write their local files: the running test's tmp_path.
LOCAL: dict = {}


def _local(name: str, text: str, **metadata) -> Datafile:
    path = LOCAL["folder"] / name
    path.write_text(text)
    return Datafile(path, ignore_stored_metadata=True, **metadata)


@pytest.fixture(autouse=True)
def local_folder(tmp_path):
    LOCAL["folder"] = tmp_path
    yield
    LOCAL.clear()


class MediaSpy:
    """Counts media downloads (`alt=media`) sent by any storage client in this process."""

    def __init__(self) -> None:
        self.downloads: list[str] = []
        self.requests: list[str] = []
        #: The requests of the last check run.
        self.check_requests: list[str] = []


@pytest.fixture
def media_spy(monkeypatch) -> MediaSpy:
    spy = MediaSpy()
    original = requests.Session.request

    def request(session, method, url, *args, **kwargs):
        spy.requests.append(f"{method.upper()} {url}")
        if method.upper() == "GET" and "alt=media" in url:
            spy.downloads.append(url)
        return original(session, method, url, *args, **kwargs)

    monkeypatch.setattr(requests.Session, "request", request)
    return spy


def _resources(bucket: str) -> dict:
    gcs = GCSResource()
    return {
        "io_manager": DatafileIOManager(bucket=bucket, prefix="dagster", gcs=gcs),
        "datafiles": DatafileResource(gcs=gcs),
    }


def _check(instance, bucket, assets, spy: MediaSpy | None = None, **options):
    """Run the checks of `assets` alone (no materialization) and return their evaluations by check name."""
    checks = build_datafile_asset_checks(assets, **options)
    if spy is not None:
        spy.downloads.clear()
        spy.requests.clear()
    result = materialize(
        [*assets, *checks],
        instance=instance,
        resources=_resources(bucket),
        selection=AssetSelection.checks_for_assets(*assets),
    )
    assert result.success
    if spy is not None:
        spy.check_requests = list(spy.requests)
        assert spy.downloads == []
    evaluations = result.get_asset_check_evaluations()
    assert not result.get_asset_materialization_events()
    return {(evaluation.asset_key.to_user_string(), evaluation.check_name): evaluation for evaluation in evaluations}


def _materialize(instance, bucket, assets, **kwargs):
    result = materialize(assets, instance=instance, resources=_resources(bucket), **kwargs)
    assert result.success
    return result


def _blob(client, bucket, name):
    return client.bucket(bucket).get_blob(name)


READINGS = "dagster/readings/=/readings.csv"


def test_an_intact_object_passes_from_metadata_alone(bucket, client, media_spy):
    instance = DagsterInstance.ephemeral()
    _materialize(instance, bucket, [readings])
    evaluations = _check(instance, bucket, [readings], media_spy, required_labels=["raw"], required_tags=["site"])
    intact = evaluations[("readings", INTACT_CHECK)]
    blob = _blob(client, bucket, READINGS)
    assert intact.passed, intact.description
    metadata = {key: value.value for key, value in intact.metadata.items()}
    assert metadata["uri"] == f"gs://{bucket}/{READINGS}"
    assert metadata["recorded_generation"] == metadata["current_generation"] == str(blob.generation)
    assert metadata["recorded_crc32c"] == metadata["current_crc32c"] == blob.crc32c
    assert evaluations[("readings", METADATA_CHECK)].passed
    # One metadata request for the object (and the I/O manager's bucket check at start-up): no listing, no download.
    object_requests = [request for request in media_spy.check_requests if "/o" in request.split("?")[0]]
    assert len(object_requests) == 1
    assert object_requests[0].startswith("GET ")
    assert f"/b/{bucket}/o/dagster%2Freadings%2F%3D%2Freadings.csv?" in object_requests[0]


def test_retagging_keeps_the_object_intact(bucket, client, media_spy):
    instance = DagsterInstance.ephemeral()
    _materialize(instance, bucket, [readings])
    before = _blob(client, bucket, READINGS)
    counts = retag_objects(Store(client), f"gs://{bucket}/dagster/", RetagSpec(add_labels=["validated"]))
    after = _blob(client, bucket, READINGS)
    # (The emulator keeps the metageneration at 1; GCS would count the patch.)
    assert counts.changed == 1 and after.generation == before.generation
    assert "validated" in after.metadata["octue__labels"]
    evaluations = _check(instance, bucket, [readings], media_spy, required_labels=["raw", "validated"])
    assert evaluations[("readings", INTACT_CHECK)].passed, evaluations[("readings", INTACT_CHECK)].description
    assert evaluations[("readings", METADATA_CHECK)].passed


def test_an_object_overwritten_by_octues_sdk_fails(octue_python, emulator, bucket, client, tmp_path, media_spy):
    instance = DagsterInstance.ephemeral()
    _materialize(instance, bucket, [readings])
    recorded = _blob(client, bucket, READINGS)
    uri = f"gs://{bucket}/{READINGS}"
    run_sdk(
        octue_python,
        emulator,
        f"""
        with open("replacement.csv", "w") as file:
            file.write("t,v\\n0,999\\n")
        datafile = Datafile(path="replacement.csv", labels={{"raw"}})
        datafile.upload({uri!r})
        print(json.dumps({{"uploaded": True}}))
        """,
        tmp_path,
    )
    now = _blob(client, bucket, READINGS)
    assert now.generation != recorded.generation and now.crc32c != recorded.crc32c
    intact = _check(instance, bucket, [readings], media_spy)[("readings", INTACT_CHECK)]
    assert not intact.passed and intact.severity == AssetCheckSeverity.ERROR
    assert f"{uri} was overwritten outside Dagster" in intact.description
    assert f"generation {now.generation}" in intact.description
    assert f"generation {recorded.generation}" in intact.description
    assert now.crc32c in intact.description and recorded.crc32c in intact.description
    assert "owner mark" in intact.description  # Octue's SDK writes its own metadata only
    assert intact.metadata["current_generation"].value == str(now.generation)


def test_a_deleted_object_fails(bucket, client, media_spy):
    instance = DagsterInstance.ephemeral()
    _materialize(instance, bucket, [readings])
    _blob(client, bucket, READINGS).delete()
    evaluations = _check(instance, bucket, [readings], media_spy, required_labels=["raw"])
    intact = evaluations[("readings", INTACT_CHECK)]
    assert not intact.passed
    assert intact.description.startswith(f"gs://{bucket}/{READINGS} was deleted")
    assert intact.metadata["current_generation"].value == "(deleted)"
    assert not evaluations[("readings", METADATA_CHECK)].passed


def test_an_object_that_lost_its_owner_mark_fails(bucket, client, media_spy):
    instance = DagsterInstance.ephemeral()
    _materialize(instance, bucket, [readings])
    blob = _blob(client, bucket, READINGS)
    # A full metadata update (PUT) without the mark: fake-gcs-server keeps patched-out keys as empty strings.
    blob._properties["metadata"] = {key: value for key, value in blob.metadata.items() if key != OWNER_KEY}
    blob.update()
    assert OWNER_KEY not in (_blob(client, bucket, READINGS).metadata or {})
    intact = _check(instance, bucket, [readings], media_spy)[("readings", INTACT_CHECK)]
    assert not intact.passed
    assert "lost the I/O manager's owner mark" in intact.description
    assert "overwritten" not in intact.description  # same generation, same content: only the mark is wrong


def test_an_object_restored_from_an_older_generation_fails_on_its_generation(bucket, client, media_spy):
    """Restoring an older generation onto the name (a server-side copy, in a bucket with versioning) makes a new
    generation with the recorded crc32c and the recorded owner mark: only the generation tells it apart from what
    Dagster recorded."""
    storage_bucket = client.get_bucket(bucket)
    storage_bucket.versioning_enabled = True
    storage_bucket.patch()
    instance = DagsterInstance.ephemeral()
    _materialize(instance, bucket, [readings])
    recorded = _blob(client, bucket, READINGS)
    storage_bucket.blob(READINGS).upload_from_string(b"someone else's bytes")  # overwritten outside Dagster ...
    source = storage_bucket.blob(READINGS, generation=recorded.generation)
    storage_bucket.copy_blob(source, storage_bucket, READINGS, source_generation=recorded.generation)  # ... restored
    restored = _blob(client, bucket, READINGS)
    assert restored.crc32c == recorded.crc32c and restored.generation != recorded.generation
    assert restored.metadata[OWNER_KEY] == recorded.metadata[OWNER_KEY]
    intact = _check(instance, bucket, [readings], media_spy)[("readings", INTACT_CHECK)]
    assert not intact.passed
    assert f"replaced outside Dagster by generation {restored.generation} with the same crc32c" in intact.description
    assert f"recorded generation {recorded.generation}" in intact.description
    assert "owner mark" not in intact.description


def test_a_missing_required_label_or_tag_fails_naming_it(bucket, media_spy):
    instance = DagsterInstance.ephemeral()
    _materialize(instance, bucket, [readings])
    evaluations = _check(
        instance, bucket, [readings], media_spy, required_labels=["raw", "validated"], required_tags=["site", "owner"]
    )
    labels = evaluations[("readings", METADATA_CHECK)]
    assert not labels.passed
    assert "lacks the required label(s) 'validated'" in labels.description
    assert "lacks the required tag(s) 'owner'" in labels.description
    assert evaluations[("readings", INTACT_CHECK)].passed


def test_a_partitioned_asset_names_its_failing_partition(bucket, client, media_spy):
    instance = DagsterInstance.ephemeral()
    # A single-run backfill over all four partitions: one materialization (and URI) per partition.
    tags = {"dagster/asset_partition_range_start": "a", "dagster/asset_partition_range_end": "d"}
    _materialize(instance, bucket, [daily], tags=tags)
    client.bucket(bucket).blob("dagster/daily/partition=c/daily.csv").upload_from_string(b"overwritten")
    evaluations = _check(instance, bucket, [daily], media_spy, required_tags=["day"], concurrency=2)
    intact = evaluations[("daily", INTACT_CHECK)]
    assert not intact.passed
    assert intact.description.startswith("1 of 4 materialized partitions failed. partition 'c': ")
    assert intact.metadata["partitions_checked"].value == 4 and intact.metadata["partitions_failed"].value == 1
    assert intact.metadata["failed_partitions"].value == ["c"]
    rows = [record.data for record in intact.metadata["failures"].value.records]
    assert {row["partition"] for row in rows} == {"c"}
    assert rows[0]["uri"] == f"gs://{bucket}/dagster/daily/partition=c/daily.csv"
    # The overwrite dropped the object's Octue metadata too, so its tag is missing; the other partitions have theirs.
    labels = evaluations[("daily", METADATA_CHECK)]
    assert not labels.passed and labels.metadata["failed_partitions"].value == ["c"]


def test_in_a_partition_run_the_check_covers_that_runs_partitions_only(bucket, client):
    instance = DagsterInstance.ephemeral()
    tags = {"dagster/asset_partition_range_start": "a", "dagster/asset_partition_range_end": "d"}
    _materialize(instance, bucket, [daily], tags=tags)
    client.bucket(bucket).blob("dagster/daily/partition=c/daily.csv").upload_from_string(b"overwritten")
    checks = build_datafile_asset_checks([daily])
    # Materializing partitions a and b with the check: it checks those two (intact), not the whole asset ...
    tags = {"dagster/asset_partition_range_start": "a", "dagster/asset_partition_range_end": "b"}
    (evaluation,) = _materialize(instance, bucket, [daily, *checks], tags=tags).get_asset_check_evaluations()
    assert evaluation.passed and evaluation.metadata["partitions_checked"].value == 2
    assert evaluation.description.startswith("The objects of all 2 partitions of this run are as")
    # ... while run alone (the UI's "Execute", a checks job), it covers every materialized partition.
    intact = _check(instance, bucket, [daily])[("daily", INTACT_CHECK)]
    assert intact.metadata["partitions_checked"].value == 4 and intact.metadata["failed_partitions"].value == ["c"]


def test_failures_beyond_the_table_are_counted_and_the_first_partitions_listed(bucket, client, monkeypatch):
    from octue_dagster.dagster import check_results

    monkeypatch.setattr(check_results, "TABLE_ROWS", 1)
    instance = DagsterInstance.ephemeral()
    tags = {"dagster/asset_partition_range_start": "a", "dagster/asset_partition_range_end": "d"}
    _materialize(instance, bucket, [daily], tags=tags)
    for key in ("d", "b", "c"):
        client.bucket(bucket).blob(f"dagster/daily/partition={key}/daily.csv").delete()
    intact = _check(instance, bucket, [daily])[("daily", INTACT_CHECK)]
    assert not intact.passed and intact.metadata["partitions_failed"].value == 3
    assert intact.metadata["failed_partitions"].value == ["b"]
    assert [row.data["partition"] for row in intact.metadata["failures"].value.records] == ["b"]
    assert intact.description.startswith("3 of 4 materialized partitions failed. partition 'b': ")


def test_every_partition_of_a_multi_partitioned_asset_passes_with_its_own_owner_mark(bucket, media_spy):
    instance = DagsterInstance.ephemeral()
    for key in GRID.get_partition_keys():
        _materialize(instance, bucket, [grid], partition_key=key)
    intact = _check(instance, bucket, [grid], media_spy)[("grid", INTACT_CHECK)]
    assert intact.passed, intact.description
    assert intact.metadata["partitions_checked"].value == 4


def test_a_dataset_with_one_file_overwritten_fails_naming_the_file(bucket, client, media_spy):
    instance = DagsterInstance.ephemeral()
    result = _materialize(instance, bucket, [farm])
    table = result.get_asset_materialization_events()[0].materialization.metadata["files"].value
    generations = {record.data["name"]: record.data["generation"] for record in table.records}
    assert generations["t2.csv"] == str(_blob(client, bucket, "dagster/farm/=/t2.csv").generation)
    assert _check(instance, bucket, [farm], media_spy, required_labels=["raw"])[("farm", INTACT_CHECK)].passed

    client.bucket(bucket).blob("dagster/farm/=/t2.csv").upload_from_string(b"t,v\n0,overwritten\n")
    evaluations = _check(instance, bucket, [farm], media_spy, required_labels=["raw"])
    intact = evaluations[("farm", INTACT_CHECK)]
    assert not intact.passed
    assert intact.description.startswith(f"gs://{bucket}/dagster/farm/=/t2.csv was overwritten outside Dagster")
    assert intact.metadata["files_checked"].value == 3
    assert [row.data["uri"] for row in intact.metadata["failures"].value.records] == [f"gs://{bucket}/dagster/farm/="]
    assert "lacks the required label(s) 'raw'" in evaluations[("farm", METADATA_CHECK)].description


def test_an_asset_never_materialized_warns(bucket):
    evaluation = _check(DagsterInstance.ephemeral(), bucket, [readings])[("readings", INTACT_CHECK)]
    assert not evaluation.passed and evaluation.severity == AssetCheckSeverity.WARN
    assert "no materialization yet" in evaluation.description


def test_the_checks_read_gcs_through_a_gcs_resource(bucket):
    instance = DagsterInstance.ephemeral()
    _materialize(instance, bucket, [readings])
    checks = build_datafile_asset_checks([readings], resource_key="gcs")
    result = materialize(
        [readings, *checks],
        instance=instance,
        resources={**_resources(bucket), "gcs": GCSResource()},
        selection=AssetSelection.checks_for_assets(readings),
    )
    assert [evaluation.passed for evaluation in result.get_asset_check_evaluations()] == [True]


def test_bad_settings_are_refused_naming_what_to_give():
    with pytest.raises(InvalidLabelError):
        build_datafile_asset_checks([readings], required_labels=["Not A Label"])
    with pytest.raises(InvalidTagError):
        build_datafile_asset_checks([readings], required_tags=["Bad-Tag"])
    with pytest.raises(InvalidInputError, match="single string"):
        build_datafile_asset_checks([readings], required_tags="site")
    with pytest.raises(InvalidInputError, match="given twice"):
        build_datafile_asset_checks([readings, readings])
    with pytest.raises(InvalidInputError, match="@asset"):
        build_datafile_asset_checks([42])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError, match="'raw/readings'"):
        build_datafile_asset_checks(["raw//readings"])
    with pytest.raises(InvalidInputError, match="concurrency"):
        build_datafile_asset_checks([readings], concurrency=0)
    with pytest.raises(ValueError) as raised:
        build_datafile_asset_checks([readings], resource_key="not a key")
    assert isinstance(raised.value, OctueDagsterError)


def test_a_resource_that_cannot_reach_gcs_is_refused(bucket):
    instance = DagsterInstance.ephemeral()
    checks = build_datafile_asset_checks([readings], resource_key="settings")
    result = materialize(
        [readings, *checks],
        instance=instance,
        resources={**_resources(bucket), "settings": {"not": "a gcs resource"}},
        selection=AssetSelection.checks_for_assets(readings),
        raise_on_error=False,
    )
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error.cause
    assert failure.cls_name == "InvalidInputError" and "resource 'settings', which is a dict" in failure.message


def test_the_readme_example_checks_the_readme_pipeline(bucket, client):
    import re
    from pathlib import Path

    blocks = re.findall(r"```python\n(.*?)```", (Path(__file__).parent.parent / "README.md").read_text(), flags=re.S)
    pipeline = next(code for code in blocks if "DatafileIOManager" in code)
    example = next(code for code in blocks if "build_datafile_asset_checks" in code)
    namespace: dict = {}
    for block in (pipeline, example):
        exec(compile(block.replace("my-bucket", bucket), "README.md", "exec", dont_inherit=True), namespace)
    defs = namespace["defs"]
    instance = DagsterInstance.ephemeral()
    assets = [namespace["raw_readings"], namespace["cleaned_readings"]]
    materialized = materialize(
        [*assets, *namespace["checks"]], resources=defs.resources, partition_key="2024-03-02", instance=instance
    )
    assert materialized.success
    evaluations = materialized.get_asset_check_evaluations()
    assert sorted((e.asset_key.to_user_string(), e.check_name, e.passed) for e in evaluations) == [
        ("cleaned_readings", INTACT_CHECK, True),
        ("raw_readings", METADATA_CHECK, True),
        ("raw_readings", INTACT_CHECK, True),
    ]
    client.bucket(bucket).blob("dagster/cleaned_readings/partition=2024-03-02/cleaned_readings.csv").delete()
    nightly = defs.resolve_job_def("check_stored_objects").execute_in_process(instance=instance)
    results = {(e.asset_key.to_user_string(), e.check_name): e for e in nightly.get_asset_check_evaluations()}
    assert results[("raw_readings", INTACT_CHECK)].passed and results[("raw_readings", METADATA_CHECK)].passed
    deleted = results[("cleaned_readings", INTACT_CHECK)]
    assert not deleted.passed and deleted.metadata["failed_partitions"].value == ["2024-03-02"]
    assert "cleaned_readings.csv was deleted" in deleted.description


def test_a_blocking_check_that_fails_stops_downstream_assets(bucket):
    @asset(deps=[readings])
    def report() -> None:
        raise AssertionError("report must not run when a blocking check on readings fails")

    instance = DagsterInstance.ephemeral()
    checks = build_datafile_asset_checks([readings], required_labels=["validated"], blocking=True)
    result = materialize(
        [readings, report, *checks], instance=instance, resources=_resources(bucket), raise_on_error=False
    )
    assert not result.success
    evaluations = {evaluation.check_name: evaluation for evaluation in result.get_asset_check_evaluations()}
    assert evaluations[INTACT_CHECK].passed and not evaluations[METADATA_CHECK].passed
    assert evaluations[METADATA_CHECK].blocking
    assert [event.asset_key for event in result.get_asset_materialization_events()] == [AssetKey("readings")]
    assert "report" not in {event.step_key for event in result.get_step_success_events()}


def test_the_checks_use_each_assets_own_io_manager_by_default(bucket):
    @asset(io_manager_key="files")
    def elsewhere() -> Datafile:
        return _local("elsewhere.csv", "t,v\n0,2\n", labels={"raw"})

    instance = DagsterInstance.ephemeral()
    resources = {"files": DatafileIOManager(bucket=bucket, prefix="other", gcs=GCSResource())}
    assert materialize([elsewhere], instance=instance, resources=resources).success
    checks = build_datafile_asset_checks([elsewhere], required_labels=["raw"])
    result = materialize(
        [elsewhere, *checks],
        instance=instance,
        resources=resources,
        selection=AssetSelection.checks_for_assets(elsewhere),
    )
    evaluations = {evaluation.check_name: evaluation for evaluation in result.get_asset_check_evaluations()}
    assert evaluations[INTACT_CHECK].passed and evaluations[METADATA_CHECK].passed
    assert evaluations[INTACT_CHECK].metadata["uri"].value == f"gs://{bucket}/other/elsewhere/=/elsewhere.csv"


def test_an_object_that_cannot_be_read_fails_its_partition_only(bucket, proxy, monkeypatch):
    from faultproxy import Fault

    from octue_dagster.testing.emulator import EMULATOR_VARIABLE

    instance = DagsterInstance.ephemeral()
    tags = {"dagster/asset_partition_range_start": "a", "dagster/asset_partition_range_end": "d"}
    _materialize(instance, bucket, [daily], tags=tags)
    monkeypatch.setenv(EMULATOR_VARIABLE, proxy.url)
    proxy.add(Fault("status", method="GET", path="partition%3Db%2Fdaily.csv", status=403, times=10))
    try:
        intact = _check(instance, bucket, [daily])[("daily", INTACT_CHECK)]
    finally:
        proxy.clear()
    assert not intact.passed and intact.metadata["failed_partitions"].value == ["b"]
    assert intact.metadata["partitions_checked"].value == 4
    assert f"partition 'b': gs://{bucket}/dagster/daily/partition=b/daily.csv could not be read" in intact.description


def test_a_materialization_not_stored_by_the_io_manager_fails_saying_so(bucket):
    @asset
    def recorded_elsewhere() -> MaterializeResult:
        return MaterializeResult(metadata={"rows": 3})

    instance = DagsterInstance.ephemeral()
    assert materialize([recorded_elsewhere], instance=instance).success
    intact = _check(instance, bucket, [recorded_elsewhere])[("recorded_elsewhere", INTACT_CHECK)]
    assert not intact.passed and "records no dagster/uri: it was not stored by DatafileIOManager" in intact.description


def test_assets_given_by_key_are_checked_as_their_materializations_say(bucket, client):
    """Configuration (a component's YAML) names assets by key: partitions and dimensions come from the records."""
    instance = DagsterInstance.ephemeral()
    _materialize(instance, bucket, [readings])
    tags = {"dagster/asset_partition_range_start": "a", "dagster/asset_partition_range_end": "d"}
    _materialize(instance, bucket, [daily], tags=tags)
    for key in GRID.get_partition_keys():
        _materialize(instance, bucket, [grid], partition_key=key)
    client.bucket(bucket).blob("dagster/daily/partition=d/daily.csv").delete()
    checks = build_datafile_asset_checks(["readings", "daily", AssetKey("grid")], required_labels=["raw"])
    result = materialize(
        [readings, daily, grid, *checks],
        instance=instance,
        resources=_resources(bucket),
        selection=AssetSelection.checks_for_assets(readings, daily, grid),
    )
    evaluations = {(e.asset_key.to_user_string(), e.check_name): e for e in result.get_asset_check_evaluations()}
    unpartitioned = evaluations[("readings", INTACT_CHECK)]
    assert unpartitioned.passed and "partitions_checked" not in unpartitioned.metadata
    assert evaluations[("grid", INTACT_CHECK)].passed, evaluations[("grid", INTACT_CHECK)].description
    assert evaluations[("grid", INTACT_CHECK)].metadata["partitions_checked"].value == 4
    daily_intact = evaluations[("daily", INTACT_CHECK)]
    assert not daily_intact.passed and daily_intact.metadata["failed_partitions"].value == ["d"]


def test_a_multi_dimension_owner_mark_must_match_the_asset_and_every_dimension():
    from octue_dagster.dagster.addresses import asset_owner
    from octue_dagster.dagster.asset_checks import multi_dimension_owner

    key = AssetKey(["grid"])
    mark = asset_owner(key.path, {"site": "n", "day": "d1"})
    assert multi_dimension_owner(key, "d1|n", mark) == mark
    assert multi_dimension_owner(key, "n|d1", mark) is None  # not Dagster's order (by dimension name)
    assert multi_dimension_owner(key, "d2|n", mark) is None
    assert multi_dimension_owner(AssetKey(["other"]), "d1|n", mark) is None
    assert multi_dimension_owner(key, "d1|n", "not json") is None
    assert multi_dimension_owner(key, "d1", asset_owner(key.path, "d1")) is None


def test_a_dataset_beyond_its_recorded_table_is_compared_through_its_digest(bucket, client, monkeypatch):
    from octue_dagster.dagster import ui_metadata

    monkeypatch.setattr(ui_metadata, "DATASET_TABLE_ROWS", 1)  # the table lists t1.csv; t2 and t3 only in the digest
    instance = DagsterInstance.ephemeral()
    metadata = _materialize(instance, bucket, [farm]).get_asset_materialization_events()[0].materialization.metadata
    assert metadata["files_not_listed"].value == 2 and metadata["files_digest"].value
    evaluations = _check(instance, bucket, [farm], required_labels=["raw"])
    intact = evaluations[("farm", INTACT_CHECK)]
    assert intact.passed and intact.metadata["files_checked"].value == 3
    assert "the other 2 were confirmed through its digest" in intact.description
    labels = evaluations[("farm", METADATA_CHECK)]
    assert labels.passed and labels.metadata["files_checked"].value == 3

    # A file beyond the table changes: the digest no longer matches, which is reported, as a warning.
    client.bucket(bucket).blob("dagster/farm/=/t3.csv").upload_from_string(b"t,v\n0,changed\n")
    intact = _check(instance, bucket, [farm])[("farm", INTACT_CHECK)]
    assert not intact.passed and intact.severity == AssetCheckSeverity.WARN
    assert "the 2 files beyond the 1 the materialization listed could not be confirmed" in intact.description
    # A file in the table changes too: an error, naming it.
    client.bucket(bucket).blob("dagster/farm/=/t1.csv").upload_from_string(b"t,v\n0,changed\n")
    intact = _check(instance, bucket, [farm])[("farm", INTACT_CHECK)]
    assert not intact.passed and intact.severity == AssetCheckSeverity.ERROR
    assert intact.description.startswith(f"gs://{bucket}/dagster/farm/=/t1.csv was overwritten outside Dagster")


def test_a_run_of_one_partition_is_described_in_the_singular(bucket):
    instance = DagsterInstance.ephemeral()
    checks = build_datafile_asset_checks([daily])
    tags = {"dagster/asset_partition_range_start": "b", "dagster/asset_partition_range_end": "b"}
    (evaluation,) = _materialize(instance, bucket, [daily, *checks], tags=tags).get_asset_check_evaluations()
    assert evaluation.passed and evaluation.metadata["partitions_checked"].value == 1
    assert evaluation.description.startswith("The object of the only partition of this run is as"), evaluation.description
