"""The example pipeline as two jobs (daily readings, then the summary) on other executors: Dask and Dagster's
multiprocess executor. Every worker or step process imports this module to rebuild its job (`dg.reconstructable`).

Each job function reads the bucket from `OCTUE_DAGSTER_BUCKET`, as the workers do. Inputs and outputs travel through
GCS alone, so the workers need no shared disk (see the README's "Running on Dask or Kubernetes").

    dg.execute_job(dg.reconstructable(readings_on_dask), instance, tags={"dagster/partition": "2024-03-01"},
                   run_config={"execution": {"config": {"cluster": {"existing": {"address": "tcp://..."}}}}})
"""

from __future__ import annotations

import copy

import dagster as dg

from example_project import config
from example_project.definitions import build_definitions

PARTITIONED = [dg.AssetKey("raw_readings"), dg.AssetKey("cleaned_readings"), dg.AssetKey("turbine_files")]
SUMMARY = [dg.AssetKey("site_metadata"), dg.AssetKey("turbine_summary")]


def dask_executor() -> dg.ExecutorDefinition:
    """dagster-dask's `dask_executor` (needs the `dagster-dask` package), handing the workers each run without its
    `partitions_subset`.

    Known upstream incompatibility (dagster-dask 0.29 with dagster 1.13 and any recent `distributed`): the executor
    passes the `DagsterRun` to `Client.submit`, `distributed` walks named tuples in task arguments looking for
    futures, and a time-window-partitioned run's `partitions_subset` holds a Dagster `@record` that forbids
    iteration, so every partitioned run fails before its first step. The workers need only the run's partition tag,
    which stays.
    """
    import dagster_dask

    class PartitionedRunsDaskExecutor(dagster_dask.executor.DaskExecutor):
        def execute(self, plan_context, execution_plan):
            context = copy.copy(plan_context)
            run = plan_context.dagster_run._replace(partitions_subset=None)
            context._plan_data = plan_context.plan_data._replace(dagster_run=run)
            return super().execute(context, execution_plan)

    @dg.executor(
        name="dask",
        config_schema=dagster_dask.dask_executor.config_schema,
        requirements=dg.multiple_process_executor_requirements(),
    )
    def dask(init_context) -> PartitionedRunsDaskExecutor:
        ((cluster_type, cluster_configuration),) = init_context.executor_config["cluster"].items()
        return PartitionedRunsDaskExecutor(cluster_type, cluster_configuration)

    return dask


def _job(name: str, executor: dg.ExecutorDefinition) -> dg.JobDefinition:
    """One of the example's asset jobs for the bucket in the environment, on `executor`."""
    # The asset steps only: the stored-object checks run in the nightly checks job (each step here is a process).
    jobs = [
        dg.define_asset_job("readings", selection=dg.AssetSelection.assets(*PARTITIONED).without_checks()),
        dg.define_asset_job("summary", selection=dg.AssetSelection.assets(*SUMMARY).without_checks()),
    ]
    definitions = dg.Definitions.merge(build_definitions(config.bucket(), executor=executor), dg.Definitions(jobs=jobs))
    return definitions.resolve_job_def(name)


# Module-level functions, so that each worker process can rebuild the job from this module (`dg.reconstructable`).
def readings_on_dask() -> dg.JobDefinition:
    return _job("readings", dask_executor())


def summary_on_dask() -> dg.JobDefinition:
    return _job("summary", dask_executor())


def readings_on_processes() -> dg.JobDefinition:
    return _job("readings", dg.multiprocess_executor)


def summary_on_processes() -> dg.JobDefinition:
    return _job("summary", dg.multiprocess_executor)
