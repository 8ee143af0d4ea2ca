"""The README's `defs.yaml` examples load as written: every document resolves to its component, and together (with
the assets the sensor's job and the checks name) they make definitions Dagster accepts."""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import yaml
from dagster.components.testing.utils import component_defs

import octue_dagster

README = Path(__file__).parent.parent / "README.md"


def _documents() -> list[dict]:
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), flags=re.S)
    return [document for block in blocks for document in yaml.safe_load_all(block) if document]


def test_readme_defs_yaml_examples_load():
    documents = _documents()
    types = [document["type"] for document in documents]
    assert types == [
        "octue_dagster.DatafileIOManagerComponent",
        "octue_dagster.DatafileResourceComponent",
        "octue_dagster.RetagComponent",
        "octue_dagster.RetentionComponent",
        "octue_dagster.ExternalDatafilesComponent",
    ]
    built = []
    for document in documents:
        component_type = getattr(octue_dagster, document["type"].split(".", 1)[1])
        component = component_type.resolve_from_yaml(yaml.safe_dump(document.get("attributes", {})))
        built.append(component_defs(component=component))

    @dg.asset
    def turbine_summary() -> None: ...

    @dg.asset
    def cleaned_readings() -> None: ...

    defs = dg.Definitions.merge(*built, dg.Definitions(assets=[turbine_summary, cleaned_readings]))
    dg.Definitions.validate_loadable(defs)
    assert {job.name for job in defs.jobs} == {
        "mark_checked", "storage_retention", "refresh_from_external_files", "check_stored_objects"
    }
    assert {schedule.name for schedule in defs.schedules} == {
        "mark_checked_schedule", "storage_retention_schedule", "check_stored_objects_schedule"
    }
    checked = {(key.asset_key.to_user_string(), key.name) for checks in defs.asset_checks for key in checks.check_keys}
    assert checked == {
        ("cleaned_readings", "stored_object_intact"),
        ("cleaned_readings", "required_labels_and_tags"),
        ("turbine_summary", "stored_object_intact"),
        ("turbine_summary", "required_labels_and_tags"),
    }
    assert defs.resources["io_manager"].bucket == "my-bucket"
