"""The assets, in Python: those of `example_project` (readings -> cleaned readings -> per-turbine files -> summary),
and the `settings` resource they read the bucket from. Storage, jobs, schedules and the sensor are in `defs.yaml`."""

import dagster as dg

from example_project import config
from example_project.assets import cleaned_readings, raw_readings, turbine_files, turbine_summary


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(
        assets=[raw_readings, cleaned_readings, turbine_files, turbine_summary],
        resources={"settings": config.PipelineSettings(bucket=config.bucket())},
    )
