"""An example Dagster project using octue_dagster: wind-turbine readings stored in GCS as Datafiles.

`example_project.definitions` holds the Dagster definitions (loaded by `workspace.yaml`); `example_project.demo`
is what `make demo` runs.
"""
