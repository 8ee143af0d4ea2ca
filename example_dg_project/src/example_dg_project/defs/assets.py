"""The assets, in Python: those of `example_project` (readings -> cleaned readings -> per-turbine files -> summary),
Dagster's schema-change checks on the CSV ones, and the `settings` resource they read the bucket from. Storage, jobs,
schedules and the sensor are in `defs.yaml`."""

import dagster as dg

from example_project import config
from example_project.assets import (
    cleaned_readings,
    raw_readings,
    schema_change_checks,
    turbine_files,
    turbine_summary,
)


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(
        assets=[raw_readings, cleaned_readings, turbine_files, turbine_summary],
        asset_checks=schema_change_checks(),
        resources={"settings": config.PipelineSettings(bucket=config.bucket())},
    )
