"""Red-team attacks on the `defs.yaml` components: each test is one input a user (or a template rendered from the
environment) could write, or one way the components meet the rest of the library, and what must happen: a load-time
error naming the attribute, or a run that keeps the ownership rules. Components are loaded in process with the
resolution `dg check defs` and `dg dev` use; runs go against the emulator."""

from __future__ import annotations

import datetime
import textwrap
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster.components.testing.utils import component_defs
from pydantic import ValidationError

from octue_dagster import (
    Datafile,
    DatafileIOManagerComponent,
    DatafileResourceComponent,
    Dataset,
    ExternalDatafilesComponent,
    InvalidInputError,
    RetagComponent,
    RetentionComponent,
)
from octue_dagster.core.listing.selection import RetagSpec
from octue_dagster.core.storage.store import Store
from octue_dagster.dagster.retention import RetentionPass
from octue_dagster.dagster.observation import OBJECT_TAG


def _load(component: type[dg.Component], text: str) -> dg.Component:
    return component.resolve_from_yaml(textwrap.dedent(text))


def _error(component: type[dg.Component], text: str) -> str:
    """The message of the ValidationError loading `text` raises (any other exception fails the test)."""
    with pytest.raises(ValidationError) as caught:
        _load(component, text)
    return str(caught.value)


# --- numbers and names given as templates or quoted strings -----------------------------------------------------------


@pytest.mark.parametrize(
    ("component", "text", "attribute", "expected"),
    [
        (DatafileResourceComponent, "concurrency: \"{{ env('RT_EIGHT') }}\"", "concurrency", 8),
        (DatafileResourceComponent, "concurrency: '8'", "concurrency", 8),
        (DatafileIOManagerComponent, "bucket: b-b\nretry_deadline_seconds: \"{{ env('RT_EIGHT') }}\"",
         "retry_deadline_seconds", 8.0),
        (DatafileIOManagerComponent, "bucket: b-b\nlist_page_size: '500'", "list_page_size", 500),
        (RetentionComponent, "bucket: b-b\nolder_than_days: \"{{ env('RT_EIGHT') }}\"", "older_than_days", 8.0),
        (RetagComponent, "job_name: \"{{ env('RT_JOB') }}\"\nprefix: gs://b-b/\nadd_labels: [x]", "job_name",
         "nightly_retag"),
    ],
)
def test_a_number_or_name_from_a_template_or_a_quoted_string_loads(monkeypatch, component, text, attribute, expected):
    """`{{ env(...) }}` is how a dg project takes settings from its deployment; it renders to a string, as does a
    quoted YAML number. Dagster widens every attribute to also accept a string, and a bound such as `ge=1` on the
    widened type raised a bare TypeError ("Unable to apply constraint 'ge'") naming no attribute."""
    monkeypatch.setenv("RT_EIGHT", "8")
    monkeypatch.setenv("RT_JOB", "nightly_retag")
    assert getattr(_load(component, text), attribute) == expected


def test_a_sensor_interval_from_a_template_loads(monkeypatch):
    monkeypatch.setenv("RT_INTERVAL", "45")
    loaded = _load(
        ExternalDatafilesComponent,
        "sensor: {name: s, prefix: 'gs://b-b/in/', job_name: j, assets: [x],"
        " minimum_interval_seconds: \"{{ env('RT_INTERVAL') }}\", max_runs_per_tick: '5'}",
    )
    assert (loaded.sensor.minimum_interval_seconds, loaded.sensor.max_runs_per_tick) == (45, 5)


@pytest.mark.parametrize(
    ("value", "reason"),
    [("abc", "valid integer"), ("0", "greater than or equal to 1"), ("1000", "256")],
)
def test_a_template_rendering_to_a_bad_number_is_rejected_naming_the_attribute(monkeypatch, value, reason):
    monkeypatch.setenv("RT_CONCURRENCY", value)
    message = _error(DatafileResourceComponent, "concurrency: \"{{ env('RT_CONCURRENCY') }}\"")
    assert "concurrency" in message and reason in message, message


def test_a_template_rendering_to_a_bad_job_name_is_rejected_naming_the_attribute(monkeypatch):
    monkeypatch.setenv("RT_JOB", "nightly retag")
    message = _error(RetagComponent, "job_name: \"{{ env('RT_JOB') }}\"\nprefix: gs://b-b/\nadd_labels: [x]")
    assert "job_name" in message and "nightly retag" in message, message


# --- retention: ages that cannot be turned into a cutoff --------------------------------------------------------------


@pytest.mark.parametrize("days", ["1.0e+12", ".inf", "800000"])
def test_a_retention_age_beyond_any_date_is_rejected_at_load_naming_the_attribute(days):
    """`now - older_than_days` must be a date: a huge age (meaning "never") passed load and `dg check defs`, and every
    run then failed with a bare OverflowError."""
    message = _error(RetentionComponent, f"bucket: b-b\nolder_than_days: {days}")
    assert "older_than_days" in message, message


@pytest.mark.parametrize("days", [float("inf"), 1e12])
def test_the_python_retention_job_rejects_an_age_beyond_any_date(days):
    from octue_dagster.dagster.retention_job import build_retention_job

    with pytest.raises(InvalidInputError, match="older_than_days"):
        build_retention_job("cleanup", bucket="b-b", older_than_days=days)


def test_a_launch_time_age_beyond_any_date_fails_the_run_naming_the_option(bucket: str):
    defs = dg.Definitions.merge(
        component_defs(component=_load(DatafileResourceComponent, "{}")),
        component_defs(component=_load(RetentionComponent, f"bucket: {bucket}")),
    )
    result = defs.resolve_job_def("storage_retention").execute_in_process(
        run_config={"ops": {"storage_retention_op": {"config": {"older_than_days": 1e300}}}}, raise_on_error=False
    )
    assert not result.success
    [failure] = [event for event in result.all_events if event.is_step_failure]
    cause = failure.step_failure_data.error.cause
    assert cause.cls_name == "InvalidInputError" and "older_than_days" in cause.message, cause.message


# --- re-tagging: a change that contradicts itself ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ("add_labels: [checked, raw]\nremove_labels: [raw]", "'raw'"),
        ("set_tags: {qa: passed}\nremove_tags: [qa]", "'qa'"),
    ],
)
def test_a_retag_change_that_both_adds_and_removes_the_same_thing_is_rejected(change, named):
    """Adding and removing one label (or setting and removing one tag) was accepted and quietly removed it, the
    opposite of half of what the YAML asked for."""
    message = _error(RetagComponent, f"job_name: j\nprefix: gs://b-b/\n{change}")
    assert named in message and "both" in message, message
    fields = dict(line.split(": ", 1) for line in change.splitlines())
    with pytest.raises(InvalidInputError, match=named):
        RetagSpec(**{key: yaml.safe_load(value) for key, value in fields.items()})


# --- the prefix sensor and the I/O manager's own outputs --------------------------------------------------------------


def _upload(tmp_path: Path, uri: str, content: str) -> None:
    local = tmp_path / "uploads" / uri.rsplit("/", 1)[-1]
    local.parent.mkdir(exist_ok=True)
    local.write_text(content)
    Datafile(local, ignore_stored_metadata=True).upload(uri)


def test_the_sensor_does_not_request_its_job_again_for_what_that_job_stored(bucket: str, client, tmp_path: Path):
    """A sensor watching a prefix that also holds the I/O manager's folder (a shared `gs://bucket/data/`): its job
    materializes an asset, the I/O manager stores it under the prefix, and the next tick saw a new object and requested
    the job again, which stored a new generation, and so on: a run loop started by the pipeline's own writes."""
    _upload(tmp_path, f"gs://{bucket}/shared/incoming/readings.csv", "t,v\n1,2\n")
    external = _load(
        ExternalDatafilesComponent,
        f"""
        assets:
          - key: incoming
            path: gs://{bucket}/shared/incoming/
        sensor:
          name: shared_sensor
          prefix: gs://{bucket}/shared/
          job_name: refresh
          assets: [incoming, summary]
        """,
    )

    @dg.asset(deps=["incoming"])
    def summary() -> Datafile:
        path = tmp_path / "outputs" / "summary.csv"
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"rows\n{len(list(tmp_path.iterdir()))}\n")
        return Datafile(path)

    defs = dg.Definitions.merge(
        component_defs(component=_load(DatafileIOManagerComponent, f"bucket: {bucket}\nprefix: shared")),
        component_defs(component=_load(DatafileResourceComponent, "{}")),
        component_defs(component=external),
        dg.Definitions(assets=[summary]),
    )
    instance = dg.DagsterInstance.ephemeral()
    sensor = defs.resolve_sensor_def("shared_sensor")

    def tick(cursor: str | None):
        with dg.build_sensor_context(
            instance=instance, cursor=cursor, resources={"datafiles": defs.resources["datafiles"]}
        ) as context:
            result = sensor(context)
        return [request.tags[OBJECT_TAG] for request in result.run_requests or []], result.cursor

    requested, cursor = tick(None)
    assert requested == [f"gs://{bucket}/shared/incoming/readings.csv"]
    assert defs.resolve_job_def("refresh").execute_in_process(instance=instance).success
    assert client.bucket(bucket).get_blob("shared/summary/=/summary.csv") is not None
    requested, cursor = tick(cursor)
    assert requested == [], "the sensor requested its own job for the object that job just stored"
    _upload(tmp_path, f"gs://{bucket}/shared/incoming/more.csv", "t,v\n3,4\n")
    requested, cursor = tick(cursor)
    assert requested == [f"gs://{bucket}/shared/incoming/more.csv"]


# --- resource keys ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("component", "text"),
    [
        (DatafileResourceComponent, "resource_key: gcs"),
        (DatafileIOManagerComponent, "bucket: b-b\ngcs_resource_key: io_manager"),
        (DatafileIOManagerComponent, "bucket: b-b\nresource_key: store\ngcs_resource_key: store"),
    ],
)
def test_a_resource_bound_under_the_key_it_takes_its_gcs_client_from_is_rejected_at_load(component, text):
    """The resource would need itself: loading and `dg check defs` passed, and every run failed with Dagster's
    'Resource key "gcs" transitively depends on itself', which says nothing of the attributes to change."""
    message = _error(component, text)
    assert "resource_key" in message and "gcs_resource_key" in message, message


@pytest.mark.parametrize(
    ("component", "text"),
    [
        (DatafileResourceComponent, "resource_key: 'my files'"),
        (DatafileIOManagerComponent, "bucket: b-b\nresource_key: ''"),
        (RetagComponent, "job_name: j\nprefix: gs://b-b/\nadd_labels: [x]\nresource_key: files-2"),
        (RetentionComponent, "bucket: b-b\nresource_key: 2files"),
        (ExternalDatafilesComponent, "resource_key: 'a.b'"),
    ],
)
def test_a_resource_key_dagster_cannot_bind_is_rejected_at_load_naming_the_attribute(component, text):
    """Dagster takes only Python identifiers as resource keys, and said so only when a run started (a CheckError)."""
    message = _error(component, text)
    assert "resource_key" in message and "identifier" in message, message


# --- prefixes that are not folders ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("component", "text"),
    [
        (RetagComponent, "job_name: j\nprefix: gs://b-b/raw\nadd_labels: [x]"),
        (ExternalDatafilesComponent, "sensor: {name: s, prefix: 'gs://b-b/in', job_name: j, assets: [x]}"),
    ],
)
def test_a_prefix_that_is_not_a_folder_is_rejected_naming_the_folder_to_write(component, text):
    """GCS prefixes are plain string prefixes: `gs://b-b/raw` also selects `gs://b-b/raw_archive/...` and
    `gs://b-b/rawdata.csv`, so a forgotten '/' re-tagged (or started runs for) objects in sibling folders."""
    message = _error(component, text)
    assert "prefix" in message and "end it with '/'" in message, message


def test_a_prefix_without_its_slash_would_select_a_sibling_folder(bucket: str, tmp_path: Path):
    """What the rule above prevents, shown with the Python job (which keeps plain prefixes): the sibling is patched."""
    from octue_dagster.dagster.retag_job import build_retag_job

    _upload(tmp_path, f"gs://{bucket}/raw/a.csv", "a")
    _upload(tmp_path, f"gs://{bucket}/raw_archive/b.csv", "b")
    job = build_retag_job("j", f"gs://{bucket}/raw", add_labels=["x"])
    defs = dg.Definitions.merge(
        component_defs(component=_load(DatafileResourceComponent, "{}")), dg.Definitions(jobs=[job])
    )
    assert defs.resolve_job_def("j").execute_in_process().success
    assert set(Datafile(f"gs://{bucket}/raw_archive/b.csv").labels) == {"x"}
    loaded = _load(RetagComponent, f"job_name: j\nprefix: gs://{bucket}/raw/\nadd_labels: [x]")
    assert loaded.prefix == f"gs://{bucket}/raw/"
    assert _load(RetagComponent, f"job_name: j\nprefix: gs://{bucket}\nadd_labels: [x]").prefix == f"gs://{bucket}"


# --- copies of the I/O manager's objects ------------------------------------------------------------------------------


def test_a_copy_made_beside_a_stored_object_is_neither_replaced_nor_removed(bucket: str, client, tmp_path: Path):
    """GCS copies keep custom metadata, ownership mark included: Octue's SDK (`Datafile.upload` to a new cloud path),
    `gcloud storage cp` and the console all copy server side. A user's backup made beside an asset's object
    (`readings-backup.csv` in `readings/=/`) carried the mark, so the next materialization removed it as an old
    object of the asset, and retention counted it as an unreferenced asset object: data we did not write, deleted."""
    content = {"text": "t,v\n1,2\n"}

    @dg.asset
    def readings() -> Datafile:
        path = tmp_path / "out" / "readings.csv"
        path.parent.mkdir(exist_ok=True)
        path.write_text(content["text"])
        return Datafile(path)

    defs = dg.Definitions.merge(
        component_defs(component=_load(DatafileIOManagerComponent, f"bucket: {bucket}")),
        dg.Definitions(assets=[readings]),
    )
    instance = dg.DagsterInstance.ephemeral()
    job = defs.resolve_implicit_global_asset_job_def()
    assert job.execute_in_process(instance=instance).success
    gcs_bucket = client.bucket(bucket)
    original = gcs_bucket.blob("dagster/readings/=/readings.csv")
    gcs_bucket.copy_blob(original, gcs_bucket, "dagster/readings/=/readings-backup.csv")  # as Octue's SDK copies
    backup = gcs_bucket.get_blob("dagster/readings/=/readings-backup.csv")
    assert backup.metadata == gcs_bucket.get_blob("dagster/readings/=/readings.csv").metadata  # the mark came along

    content["text"] = "t,v\n1,3\n"
    assert job.execute_in_process(instance=instance).success
    assert gcs_bucket.get_blob("dagster/readings/=/readings-backup.csv") is not None, "the backup was removed"
    assert gcs_bucket.get_blob("dagster/readings/=/readings.csv").download_as_text() == "t,v\n1,3\n"

    counts = RetentionPass(Store(client), instance, bucket=bucket, prefix="dagster", older_than=datetime.timedelta(0))
    assert counts.run(dry_run=False) == {"scanned": 2, "foreign": 1, "kept": 1}
    assert gcs_bucket.get_blob("dagster/readings/=/readings-backup.csv") is not None


def test_a_sensor_interval_the_ui_cannot_show_is_rejected_naming_the_attribute():
    """Dagster's GraphQL API serves a sensor's interval as a 32-bit Int: a larger one loaded, and then every UI query
    listing the sensor failed ('Int cannot represent non 32-bit signed integer value')."""
    from graphql import GraphQLInt

    with pytest.raises(Exception, match="32-bit"):
        GraphQLInt.serialize(2**31)
    message = _error(
        ExternalDatafilesComponent,
        "sensor: {name: s, prefix: 'gs://b-b/in/', job_name: j, assets: [x], minimum_interval_seconds: 2147483648}",
    )
    assert "minimum_interval_seconds" in message and "2147483647" in message, message


@pytest.mark.parametrize("glob", ["raw/*.csv", "**/*.csv", ""])
def test_a_name_glob_that_can_never_match_a_file_name_is_rejected(glob):
    """`name_glob` matches the file name (the part after the last '/'): a pattern with a '/' or an empty one matched
    nothing, and the job reported success with 0 matched, every night."""
    message = _error(RetagComponent, f"job_name: j\nprefix: gs://b-b/\nadd_labels: [x]\nname_glob: '{glob}'")
    assert "name_glob" in message and "file name" in message, message
    with pytest.raises(InvalidInputError, match="name_glob"):
        RetagSpec(add_labels=["x"], name_glob=glob)


def test_the_sensor_does_not_request_its_job_again_for_a_dataset_that_job_stored(bucket: str, tmp_path: Path):
    """As above for a Dataset asset: its files carry no per-object mark (the dataset's `.octue` object records them),
    so the mark alone did not stop the loop."""
    _upload(tmp_path, f"gs://{bucket}/shared/incoming/readings.csv", "t,v\n1,2\n")
    external = _load(
        ExternalDatafilesComponent,
        f"""
        sensor:
          name: shared_sensor
          prefix: gs://{bucket}/shared/
          job_name: refresh
          assets: [by_turbine]
        """,
    )

    @dg.asset
    def by_turbine() -> Dataset:
        folder = tmp_path / "dataset"
        folder.mkdir(exist_ok=True)
        for turbine in ("t1", "t2"):
            (folder / f"{turbine}.csv").write_text(f"{turbine},{len(list(folder.iterdir()))}\n")
        return Dataset(folder, name="by-turbine")

    defs = dg.Definitions.merge(
        component_defs(component=_load(DatafileIOManagerComponent, f"bucket: {bucket}\nprefix: shared")),
        component_defs(component=_load(DatafileResourceComponent, "{}")),
        component_defs(component=external),
        dg.Definitions(assets=[by_turbine]),
    )
    instance = dg.DagsterInstance.ephemeral()
    sensor = defs.resolve_sensor_def("shared_sensor")

    def tick(cursor: str | None):
        with dg.build_sensor_context(
            instance=instance, cursor=cursor, resources={"datafiles": defs.resources["datafiles"]}
        ) as context:
            result = sensor(context)
        return [request.tags[OBJECT_TAG] for request in result.run_requests or []], result.cursor

    requested, cursor = tick(None)
    assert requested == [f"gs://{bucket}/shared/incoming/readings.csv"]
    assert defs.resolve_job_def("refresh").execute_in_process(instance=instance).success
    requested, cursor = tick(cursor)
    assert requested == [], "the sensor requested its own job for the dataset that job just stored"


@pytest.mark.parametrize(
    ("key", "uri", "root"),
    [
        (["by_turbine"], "gs://b-b/shared/by_turbine/=", "gs://b-b/shared/by_turbine/"),
        (["by_turbine"], "gs://b-b/shared/by_turbine/partition=2024-01-01/", "gs://b-b/shared/by_turbine/"),
        (["raw", "readings"], "gs://b-b/d/raw/readings/date=1/site=n/readings.csv", "gs://b-b/d/raw/readings/"),
        (["a/b"], "gs://b-b/d/a%2Fb/=/b.csv", "gs://b-b/d/a%2Fb/"),
        (["summary"], "gs://b-b/shared/summary.csv", None),  # not an I/O manager address: never a whole folder
        (["summary"], "gs://b-b/other/=/summary.csv", None),  # another asset's folder
        (["summary"], "bigquery://table", None),
    ],
)
def test_the_folder_ignored_for_an_asset_is_only_ever_its_own_address_folder(key, uri, root):
    from octue_dagster.dagster.observation import asset_root

    assert asset_root(dg.AssetKey(key), uri) == root


# --- external files declared twice ------------------------------------------------------------------------------------


def test_two_external_files_under_one_asset_key_are_rejected_naming_the_key():
    """Dagster accepts two observable source assets with one key (`Definitions.validate_loadable` passes) and keeps one,
    so a copy-pasted entry silently stopped watching one of the two files."""
    from octue_dagster.dagster.observation import gcs_observable_source_asset

    merged = dg.Definitions.merge(
        component_defs(component=_load(DatafileResourceComponent, "{}")),
        dg.Definitions(
            assets=[
                gcs_observable_source_asset("site", "gs://b-b/x.json", gcs_resource_key="datafiles"),
                gcs_observable_source_asset("site", "gs://b-b/y.json", gcs_resource_key="datafiles"),
            ]
        ),
    )
    dg.Definitions.validate_loadable(merged)  # what `dg check defs` relies on: no complaint
    message = _error(
        ExternalDatafilesComponent,
        "assets: [{key: site, path: 'gs://b-b/x.json'}, {key: site, path: 'gs://b-b/y.json'}]",
    )
    assert "'site'" in message and "more than once" in message, message
