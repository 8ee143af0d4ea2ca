"""The README's `defs.yaml` examples load as written: every document resolves to its component, and together (with
the asset the sensor's job names) they make definitions Dagster accepts."""

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

    defs = dg.Definitions.merge(*built, dg.Definitions(assets=[turbine_summary]))
    dg.Definitions.validate_loadable(defs)
    assert {job.name for job in defs.jobs} == {"mark_checked", "storage_retention", "refresh_from_external_files"}
    assert {schedule.name for schedule in defs.schedules} == {"mark_checked_schedule", "storage_retention_schedule"}
    assert defs.resources["io_manager"].bucket == "my-bucket"
