"""The `defs.yaml` components, in process: what they build, how they reject bad attributes (naming the field), which
GCS client their resources use, and their jobs, sources and sensor run against the emulator.

The same components through the real `dg` CLI, in a project of their own, are in test_dg_project.py.
"""

from __future__ import annotations

import datetime
import textwrap
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster.components.testing.utils import component_defs
from dagster_gcp import GCSResource
from pydantic import ValidationError

import octue_dagster
from octue_dagster import (
    Datafile,
    DatafileIOManagerComponent,
    DatafileResource,
    DatafileResourceComponent,
    ExternalDatafilesComponent,
    RetagComponent,
    RetentionComponent,
)
from octue_dagster.dagster.components.gcs import BoundOrDefaultGCSResource
from octue_dagster.dagster.observation import OBJECT_TAG

COMPONENTS = [
    DatafileIOManagerComponent,
    DatafileResourceComponent,
    ExternalDatafilesComponent,
    RetagComponent,
    RetentionComponent,
]


def _load(component: type[dg.Component], text: str) -> dg.Component:
    return component.resolve_from_yaml(textwrap.dedent(text))


def _error(component: type[dg.Component], text: str) -> str:
    with pytest.raises(ValidationError) as caught:
        _load(component, text)
    return str(caught.value)


def _put(tmp_path: Path, uri: str, content: str, labels=()) -> Datafile:
    local = tmp_path / "uploads" / uri.rsplit("/", 1)[-1]
    local.parent.mkdir(exist_ok=True)
    local.write_text(content)
    datafile = Datafile(local, labels=set(labels), ignore_stored_metadata=True)
    datafile.upload(uri)
    return datafile


# --- types, registration and schemas ----------------------------------------------------------------------------------


def test_every_component_is_exported_as_its_yaml_type_name_and_documents_every_attribute():
    for component in COMPONENTS:
        assert getattr(octue_dagster, component.__name__) is component
        assert component.__name__ in dir(octue_dagster)  # what dg's registry lists
        schema = component.get_model_cls().model_json_schema()
        assert component.__doc__ and "defs.yaml" in component.__doc__
        undocumented = [name for name, field in schema["properties"].items() if not field.get("description")]
        for model_name, nested in schema.get("$defs", {}).items():  # nested attributes, such as `checks`
            properties = nested.get("properties", {})
            undocumented += [f"{model_name}.{name}" for name, spec in properties.items() if not spec.get("description")]
        assert not undocumented, f"{component.__name__}: {undocumented}"


def test_the_registry_module_lists_exactly_the_components():
    from dagster.components.core.package_entry import get_package_objects_in_module

    found = {name for name, _ in get_package_objects_in_module(octue_dagster)}
    assert found == {component.__name__ for component in COMPONENTS}


def test_a_scaffolded_defs_yaml_loads_once_its_placeholders_are_filled(tmp_path: Path):
    from dagster.components.scaffold.scaffold import ScaffoldRequest, get_scaffolder

    request = ScaffoldRequest(
        type_name="octue_dagster.RetagComponent",
        target_path=tmp_path,
        scaffold_format="yaml",
        project_root=None,
        params=get_scaffolder(RetagComponent).get_scaffold_params()(job_name="nightly", prefix="gs://my-bucket/raw/"),
    )
    get_scaffolder(RetagComponent).scaffold(request)
    document = yaml.safe_load((tmp_path / "defs.yaml").read_text())
    assert document["type"] == "octue_dagster.RetagComponent"
    assert document["attributes"]["job_name"] == "nightly"
    assert document["attributes"]["prefix"] == "gs://my-bucket/raw/"
    component = RetagComponent.resolve_from_yaml(yaml.safe_dump(document["attributes"]))
    assert component.spec.labels == frozenset({"raw"}) and component.spec.add_labels == frozenset({"reviewed"})


# --- bad attributes: a ValidationError naming the field and the rule --------------------------------------------------


@pytest.mark.parametrize(
    ("component", "text", "field", "reason"),
    [
        (RetagComponent, "job_name: j\nprefix: s3://b-b/raw/\nadd_labels: [x]", "prefix", "must start with 'gs://'"),
        (RetagComponent, "job_name: j\nprefix: gs://B/raw/\nadd_labels: [x]", "prefix", "not a valid bucket name"),
        (RetagComponent, "job_name: j\nprefix: gs://b-b/\nadd_labels: [Checked]", "add_labels", "Invalid label"),
        (
            RetagComponent,
            "job_name: j\nprefix: gs://b-b/\nlabels: [raw_data]\nadd_labels: [x]",
            "labels",
            "Invalid label",
        ),
        (RetagComponent, "job_name: j\nprefix: gs://b-b/\nset_tags: {Bad: 1}", "set_tags", "Invalid tag name"),
        (
            RetagComponent,
            "job_name: j\nprefix: gs://b-b/\nadd_labels: [x]\ncron_schedule: '0 3 * *'",
            "cron_schedule",
            "not a cron string",
        ),
        (
            RetagComponent,
            "job_name: j\nprefix: gs://b-b/\nadd_labels: [x]\ncron_schedule: nightly",
            "cron_schedule",
            "not a cron string",
        ),
        (
            RetagComponent,
            "job_name: j\nprefix: gs://b-b/\nadd_labels: [x]\nexecution_timezone: Mars/Base",
            "execution_timezone",
            "not a time zone",
        ),
        (RetagComponent, "job_name: nightly job\nprefix: gs://b-b/\nadd_labels: [x]", "job_name", "pattern"),
        (RetagComponent, "job_name: j\nprefix: gs://b-b/raw/", "", "changes nothing"),
        (DatafileIOManagerComponent, "bucket: gs://my-bucket", "bucket", "not a valid bucket name"),
        (DatafileIOManagerComponent, "bucket: b-b\nprefix: ../up", "prefix", "'..' segment"),
        (DatafileIOManagerComponent, "bucket: b-b\nobject_names: uuid", "object_names", "'asset' or 'datafile'"),
        (DatafileIOManagerComponent, "bucket: b-b\nconcurrency: 0", "concurrency", "greater than or equal to 1"),
        (DatafileIOManagerComponent, "bucket: b-b\nchecks: {assets: ['a=b']}", "checks", "'='"),
        (DatafileIOManagerComponent, "bucket: b-b\nchecks: {assets: ['a//b']}", "checks", "is not an asset key"),
        (
            DatafileIOManagerComponent,
            "bucket: b-b\nchecks: {assets: [a], required_labels: [Raw]}",
            "required_labels",
            "Invalid label",
        ),
        (
            DatafileIOManagerComponent,
            "bucket: b-b\nchecks: {groups: [{assets: [a], required_tags: [Day]}]}",
            "required_tags",
            "Invalid tag name",
        ),
        (
            DatafileIOManagerComponent,
            "bucket: b-b\nchecks: {assets: [a], cron_schedule: nightly}",
            "cron_schedule",
            "not a cron string",
        ),
        (
            DatafileIOManagerComponent,
            "bucket: b-b\nchecks: {assets: [a], job_name: 'a b'}",
            "job_name",
            "not a job name",
        ),
        (
            DatafileIOManagerComponent,
            "bucket: b-b\nchecks: {assets: [a], concurrency: 0}",
            "concurrency",
            "greater than or equal to 1",
        ),
        (DatafileIOManagerComponent, "bucket: b-b\nchecks: {}", "checks", "no assets to check"),
        (
            DatafileIOManagerComponent,
            "bucket: b-b\nchecks: {assets: [a/b], groups: [{assets: [a/b]}]}",
            "checks",
            "'a/b' is listed twice",
        ),
        (DatafileResourceComponent, "retry_deadline_seconds: -5", "retry_deadline_seconds", "greater than 0"),
        (RetentionComponent, "bucket: b-b\nolder_than_days: -1", "older_than_days", "greater than or equal to 0"),
        (RetentionComponent, "bucket: b-b\ncron_schedule: '* * * * * *'", "cron_schedule", "not a cron string"),
        (ExternalDatafilesComponent, "assets: [{key: site, path: 'gs:/b-b/x'}]", "path", "gs://"),
        (ExternalDatafilesComponent, "assets: [{key: 'a=b', path: 'gs://b-b/x'}]", "key", "'='"),
        (
            ExternalDatafilesComponent,
            "sensor: {name: s, prefix: gs://b-b/in/, job_name: j, assets: [x], minimum_interval_seconds: 0}",
            "minimum_interval_seconds",
            "greater than or equal to 1",
        ),
    ],
)
def test_a_bad_attribute_is_rejected_naming_the_field(component, text, field, reason):
    message = _error(component, text)
    assert field in message, message
    assert reason in message, message


def test_templates_are_checked_once_rendered(monkeypatch):
    monkeypatch.setenv("EXAMPLE_BUCKET", "my-bucket")
    loaded = _load(DatafileIOManagerComponent, "bucket: \"{{ env('EXAMPLE_BUCKET') }}\"")
    assert loaded.bucket == "my-bucket"
    monkeypatch.setenv("EXAMPLE_BUCKET", "Not A Bucket")
    message = _error(DatafileIOManagerComponent, "bucket: \"{{ env('EXAMPLE_BUCKET') }}\"")
    assert "bucket" in message and "'Not A Bucket' is not a valid bucket name" in message


# --- what they build --------------------------------------------------------------------------------------------------


def test_the_storage_components_bind_configured_resources_under_their_keys():
    io_manager = _load(
        DatafileIOManagerComponent,
        """
        bucket: my-bucket
        prefix: team/assets
        object_names: datafile
        concurrency: 4
        retry_deadline_seconds: 12
        """,
    )
    resource = _load(DatafileResourceComponent, "resource_key: files\nlist_page_size: 200\nkeep_working_files: true")
    defs = dg.Definitions.merge(component_defs(component=io_manager), component_defs(component=resource))
    manager = defs.resources["io_manager"]
    assert (manager.bucket, manager.prefix, manager.object_names) == ("my-bucket", "team/assets", "datafile")
    assert manager.store_settings.concurrency == 4 and manager.store_settings.retry_deadline_seconds == 12
    assert isinstance(manager.gcs, BoundOrDefaultGCSResource) and manager.gcs.resource_key == "gcs"
    files = defs.resources["files"]
    assert isinstance(files, DatafileResource)
    assert files.store_settings.list_page_size == 200 and files.keep_working_files


def test_the_retag_component_builds_the_job_and_schedule_of_the_python_api():
    component = _load(
        RetagComponent,
        """
        job_name: mark_checked
        prefix: gs://my-bucket/readings/
        labels: [cleaned]
        tags: {site: north}
        name_glob: "*.csv"
        add_labels: [quality-checked]
        remove_labels: [draft]
        set_tags: {qa: passed, score: 0.5}
        remove_tags: [todo]
        cron_schedule: "0 3 * * *"
        execution_timezone: Europe/London
        schedule_default_status: RUNNING
        """,
    )
    assert component.spec.describe() == {
        "add_labels": ["quality-checked"],
        "remove_labels": ["draft"],
        "set_tags": {"qa": "passed", "score": 0.5},
        "remove_tags": ["todo"],
        "labels": ["cleaned"],
        "tags": {"site": "north"},
        "name_glob": "*.csv",
    }
    defs = _yaml_defs("my-bucket", component_defs(component=component))
    job = defs.resolve_job_def("mark_checked")
    assert "datafiles" in job.required_resource_keys
    schedule = defs.resolve_schedule_def("mark_checked_schedule")
    assert schedule.cron_schedule == "0 3 * * *" and schedule.execution_timezone == "Europe/London"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    unscheduled = _load(RetagComponent, "job_name: j\nprefix: gs://b-b/\nadd_labels: [x]")
    without_schedule = component_defs(component=unscheduled)
    assert [job.name for job in without_schedule.jobs] == ["j"] and not list(without_schedule.schedules or [])


def test_scheduled_retention_runs_follow_dry_run():
    component = _load(
        RetentionComponent,
        "bucket: my-bucket\nprefix: dagster\nolder_than_days: 7\ncron_schedule: '0 4 * * *'\ndry_run: false",
    )
    defs = _yaml_defs("my-bucket", component_defs(component=component))
    schedule = defs.resolve_schedule_def("storage_retention_schedule")
    tick = dg.build_schedule_context(scheduled_execution_time=datetime.datetime(2024, 5, 1, 4))
    request = schedule.evaluate_tick(tick)
    assert request.run_requests[0].run_config["ops"] == {"storage_retention_op": {"config": {"dry_run": False}}}
    dry_component = _load(RetentionComponent, "bucket: b-b\ncron_schedule: '0 4 * * *'")
    dry = _yaml_defs("my-bucket", component_defs(component=dry_component))
    request = dry.resolve_schedule_def("storage_retention_schedule").evaluate_tick(tick)
    assert request.run_requests[0].run_config["ops"]["storage_retention_op"]["config"]["dry_run"] is True


def test_the_io_manager_checks_attribute_builds_the_checks_job_and_schedule_of_the_python_api():
    component = _load(
        DatafileIOManagerComponent,
        """
        bucket: my-bucket
        resource_key: files_io
        checks:
          assets: [raw_readings, turbines/summary]
          required_labels: [turbine-readings]
          required_tags: [day]
          groups:
            - assets: [farm]
          blocking: true
          concurrency: 3
          cron_schedule: "30 4 * * *"
          execution_timezone: Europe/London
        """,
    )
    defs = component_defs(component=component)
    checks = {key: check for check in defs.asset_checks for key in check.check_keys}
    intact, labelled = "stored_object_intact", "required_labels_and_tags"
    assert {(key.asset_key.to_user_string(), key.name) for key in checks} == {
        ("raw_readings", intact),
        ("raw_readings", labelled),
        ("turbines/summary", intact),
        ("turbines/summary", labelled),
        ("farm", intact),  # its group requires no labels or tags
    }
    for key, check in checks.items():
        assert check.get_spec_for_check_key(key).blocking
        assert "files_io" in check.required_resource_keys  # read through this I/O manager
    labelled_spec = checks[dg.AssetCheckKey(dg.AssetKey("raw_readings"), labelled)].get_spec_for_check_key(
        dg.AssetCheckKey(dg.AssetKey("raw_readings"), labelled)
    )
    assert "label 'turbine-readings'" in labelled_spec.description and "tag 'day'" in labelled_spec.description

    @dg.asset(key=["turbines", "summary"])
    def summary() -> None: ...

    @dg.asset
    def raw_readings() -> None: ...

    @dg.asset
    def farm() -> None: ...

    full = dg.Definitions.merge(defs, dg.Definitions(assets=[summary, raw_readings, farm]))
    job = full.resolve_job_def("check_stored_objects")
    assert job.asset_layer.asset_graph.asset_check_keys == set(checks)
    schedule = full.resolve_schedule_def("check_stored_objects_schedule")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("30 4 * * *", "Europe/London")
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED

    unscheduled = component_defs(component=_load(DatafileIOManagerComponent, "bucket: b-b\nchecks: {assets: [a]}"))
    assert len(list(unscheduled.asset_checks)) == 1 and not list(unscheduled.jobs or [])
    named = _load(DatafileIOManagerComponent, "bucket: b-b\nchecks: {assets: [a], job_name: check_a}")
    assert [job.name for job in component_defs(component=named).jobs] == ["check_a"]
    assert not list(component_defs(component=_load(DatafileIOManagerComponent, "bucket: b-b")).asset_checks or [])


# --- against the emulator ---------------------------------------------------------------------------------------------


def _yaml_defs(bucket: str, *extra: dg.Definitions, gcs: GCSResource | None = None) -> dg.Definitions:
    storage = [
        component_defs(component=_load(DatafileIOManagerComponent, f"bucket: {bucket}")),
        component_defs(component=_load(DatafileResourceComponent, "{}")),
    ]
    resources = dg.Definitions(resources={"gcs": gcs}) if gcs is not None else dg.Definitions()
    return dg.Definitions.merge(*storage, *extra, resources)


def test_the_yaml_retag_job_patches_the_selected_objects(bucket: str, tmp_path: Path):
    _put(tmp_path, f"gs://{bucket}/raw/a.csv", "a", labels=["raw"])
    _put(tmp_path, f"gs://{bucket}/raw/b.txt", "b", labels=["raw"])
    _put(tmp_path, f"gs://{bucket}/raw/c.csv", "c", labels=["other"])
    retag = _load(
        RetagComponent,
        f"""
        job_name: mark_checked
        prefix: gs://{bucket}/raw/
        labels: [raw]
        name_glob: "*.csv"
        add_labels: [checked]
        set_tags: {{qa: passed}}
        """,
    )
    defs = _yaml_defs(bucket, component_defs(component=retag))
    result = defs.resolve_job_def("mark_checked").execute_in_process(instance=dg.DagsterInstance.ephemeral())
    assert result.success
    a, b, c = (Datafile(f"gs://{bucket}/raw/{name}") for name in ("a.csv", "b.txt", "c.csv"))
    assert set(a.labels) == {"raw", "checked"} and a.tags == {"qa": "passed"}
    assert set(b.labels) == {"raw"} and set(c.labels) == {"other"}
    (output,) = [event for event in result.all_node_events if event.is_successful_output]
    counts = {key: value.value for key, value in output.step_output_data.metadata.items()}
    assert (counts["scanned"], counts["matched"], counts["changed"], counts["dry_run"]) == (3, 1, 1, False)


@dg.op(required_resource_keys={"datafiles", "files_io"})
def _client_project(context) -> str:
    """The project of the clients the resource and the I/O manager use (the same, or the test fails)."""
    resources = context.resources
    projects = {str(resources.datafiles.store.client.project), str(resources.files_io.store.client.project)}
    assert len(projects) == 1, projects
    return projects.pop()


def _probe_defs(bucket: str, *extra: dg.Definitions) -> dg.Definitions:
    probe = dg.Definitions(jobs=[dg.JobDefinition(graph_def=dg.GraphDefinition("probe", node_defs=[_client_project]))])
    io_manager = _load(DatafileIOManagerComponent, f"bucket: {bucket}\nresource_key: files_io")
    resource = _load(DatafileResourceComponent, "{}")
    return dg.Definitions.merge(probe, component_defs(component=resource), component_defs(component=io_manager), *extra)


def test_resources_use_the_bound_gcs_resource_and_otherwise_default_credentials(bucket: str):
    bound = _probe_defs(bucket, dg.Definitions(resources={"gcs": GCSResource(project="bound-project")}))
    result = bound.resolve_job_def("probe").execute_in_process()
    assert result.output_for_node("_client_project") == "bound-project"
    unbound = _probe_defs(bucket)
    result = unbound.resolve_job_def("probe").execute_in_process()
    assert result.output_for_node("_client_project") not in {"bound-project"}
    assert "gcs" not in unbound.resolve_job_def("probe").resource_defs


class NotGCS(dg.ConfigurableResource):
    name: str = "x"


def test_a_non_gcs_resource_under_the_gcs_key_is_refused_naming_the_key(bucket: str):
    defs = _probe_defs(bucket, dg.Definitions(resources={"gcs": NotGCS()}))
    with pytest.raises(dg.DagsterResourceFunctionError) as caught:
        defs.resolve_job_def("probe").execute_in_process()
    assert isinstance(caught.value.__cause__, octue_dagster.InvalidInputError)
    assert "bound under 'gcs' is a NotGCS" in str(caught.value.__cause__)


def test_external_files_are_observed_and_the_sensor_requests_its_job(bucket: str, tmp_path: Path):
    _put(tmp_path, f"gs://{bucket}/external/site.json", "{}")
    external = _load(
        ExternalDatafilesComponent,
        f"""
        assets:
          - key: site_metadata
            path: gs://{bucket}/external/site.json
            group_name: turbines
          - key: external/all
            path: gs://{bucket}/external/
        sensor:
          name: external_files_sensor
          prefix: gs://{bucket}/external/
          job_name: refresh_external
          assets: [site_metadata, external/all]
          minimum_interval_seconds: 30
        """,
    )
    defs = _yaml_defs(bucket, component_defs(component=external))
    instance = dg.DagsterInstance.ephemeral()
    job = defs.resolve_job_def("refresh_external")
    assert job.execute_in_process(instance=instance).success
    record = instance.get_latest_data_version_record(dg.AssetKey("site_metadata"))
    assert record is not None
    observed = record.asset_observation
    assert observed.tags["dagster/data_version"] == Datafile(f"gs://{bucket}/external/site.json").hash_value
    assert defs.resolve_assets_def("site_metadata").group_names_by_key[dg.AssetKey("site_metadata")] == "turbines"

    sensor = defs.resolve_sensor_def("external_files_sensor")
    assert sensor.minimum_interval_seconds == 30
    with dg.build_sensor_context(instance=instance, resources={"datafiles": defs.resources["datafiles"]}) as context:
        result = sensor(context)
    assert [request.tags[OBJECT_TAG] for request in result.run_requests] == [f"gs://{bucket}/external/site.json"]
    assert sensor.job_name == "refresh_external"


def test_sensors_and_observations_get_the_bound_gcs_resource_too():
    """The sensor daemon builds only the resources a sensor needs, transitively (as computed here): a bound `gcs`
    resource is among them for a component's DatafileResource, and nothing extra is needed when none is bound."""
    from dagster._core.execution.resources_init import get_transitive_required_resource_keys

    datafiles = component_defs(component=_load(DatafileResourceComponent, "{}")).resources
    with_gcs = {**datafiles, "gcs": GCSResource(project="p")}
    from dagster._core.execution.build_resources import wrap_resources_for_execution

    assert get_transitive_required_resource_keys({"datafiles"}, wrap_resources_for_execution(with_gcs)) == {
        "datafiles",
        "gcs",
    }
    assert get_transitive_required_resource_keys({"datafiles"}, wrap_resources_for_execution(datafiles)) == {
        "datafiles"
    }


@dg.asset
def checked_readings() -> Datafile:
    path = LOCAL_FILES["folder"] / "checked_readings.csv"
    path.write_text("t,v\n0,1\n")
    return Datafile(path, labels={"raw"}, tags={"site": "north"}, ignore_stored_metadata=True)


#: Where `checked_readings` writes its local file: the running test's tmp_path.
LOCAL_FILES: dict = {}


def test_the_yaml_declared_checks_pass_then_name_an_object_overwritten_behind_dagsters_back(
    bucket: str, client, tmp_path: Path
):
    LOCAL_FILES["folder"] = tmp_path
    storage = _load(
        DatafileIOManagerComponent,
        f"""
        bucket: {bucket}
        prefix: yaml-checks
        checks:
          assets: [checked_readings]
          required_labels: [raw]
          required_tags: [site]
          job_name: check_stored_objects
        """,
    )
    defs = dg.Definitions.merge(component_defs(component=storage), dg.Definitions(assets=[checked_readings]))
    instance = dg.DagsterInstance.ephemeral()
    materialized = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, asset_selection=[dg.AssetKey("checked_readings")]
    )
    assert materialized.success
    uri = f"gs://{bucket}/yaml-checks/checked_readings/=/checked_readings.csv"
    checks_job = defs.resolve_job_def("check_stored_objects")

    def evaluations() -> dict[str, dg.AssetCheckEvaluation]:
        result = checks_job.execute_in_process(instance=instance, raise_on_error=False)
        return {evaluation.check_name: evaluation for evaluation in result.get_asset_check_evaluations()}

    passing = evaluations()
    assert set(passing) == {"stored_object_intact", "required_labels_and_tags"}
    assert all(evaluation.passed for evaluation in passing.values()), passing
    assert passing["stored_object_intact"].metadata["uri"].value == uri

    client.bucket(bucket).blob("yaml-checks/checked_readings/=/checked_readings.csv").upload_from_string(b"not ours")
    failing = evaluations()
    assert not failing["stored_object_intact"].passed
    assert f"{uri} was overwritten outside Dagster" in failing["stored_object_intact"].description
    assert not failing["required_labels_and_tags"].passed  # the overwrite dropped the Octue labels and tags
