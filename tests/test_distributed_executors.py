"""The example pipeline on real distributed executors, with a persistent Dagster instance: `dagster-dask` on a
`distributed.LocalCluster` of two worker processes, and Dagster's multiprocess executor.

Every step runs in another process than this one. Each dask worker gets its own temporary folder and download cache
(as separate machines or pods would), and both are emptied after every run, so the only way an output can reach
the next step is through GCS. The outputs are then checked as thoroughly as the in-process run's.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from pathlib import Path

import dagster as dg
import pytest

from example_project import config, demo
from example_project.definitions import build_definitions
from octue_dagster.core.cache import CACHE_DIR_VARIABLE
from pipeline_checks import DAYS, check_pipeline_outputs

distributed = pytest.importorskip("distributed", reason="the dev extra installs dagster-dask and distributed")
dagster_dask = pytest.importorskip("dagster_dask")

PARTITIONED = [dg.AssetKey("raw_readings"), dg.AssetKey("cleaned_readings")]
SUMMARY = [dg.AssetKey("site_metadata"), dg.AssetKey("turbine_summary")]


class _PartitionedRunsDaskExecutor(dagster_dask.executor.DaskExecutor):
    """dagster-dask's executor, handing the workers the run without its `partitions_subset`.

    Known upstream incompatibility (dagster-dask 0.29 with dagster 1.13 and any recent `distributed`): the executor
    passes the `DagsterRun` to `Client.submit`, `distributed` walks named tuples in task arguments looking for
    futures, and a time-window-partitioned run's `partitions_subset` holds a Dagster `@record` that forbids
    iteration, so every partitioned run fails before its first step. The workers need only the run's partition tag,
    which stays.
    """

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
def dask_executor(init_context) -> _PartitionedRunsDaskExecutor:
    """dagster-dask's `dask_executor`, but for the workaround above."""
    ((cluster_type, cluster_configuration),) = init_context.executor_config["cluster"].items()
    return _PartitionedRunsDaskExecutor(cluster_type, cluster_configuration)


def _job(name: str, executor: dg.ExecutorDefinition) -> dg.JobDefinition:
    """One of the example's asset jobs for the bucket in the environment, on `executor`."""
    jobs = [dg.define_asset_job("readings", selection=PARTITIONED), dg.define_asset_job("summary", selection=SUMMARY)]
    definitions = dg.Definitions.merge(build_definitions(config.bucket(), executor=executor), dg.Definitions(jobs=jobs))
    return definitions.resolve_job_def(name)


# Module-level functions, so that each worker process can rebuild the job from this module (`dg.reconstructable`).
def readings_on_dask() -> dg.JobDefinition:
    return _job("readings", dask_executor)


def summary_on_dask() -> dg.JobDefinition:
    return _job("summary", dask_executor)


def readings_on_processes() -> dg.JobDefinition:
    return _job("readings", dg.multiprocess_executor)


def summary_on_processes() -> dg.JobDefinition:
    return _job("summary", dg.multiprocess_executor)


class PrivateDirectories(distributed.WorkerPlugin):
    """Give each worker process its own temporary folder and download cache, as if it ran on its own machine."""

    def __init__(self, root: str) -> None:
        self.root = root

    def setup(self, worker) -> None:
        home = Path(self.root) / f"worker-{os.getpid()}"
        for folder in ("tmp", "cache"):
            (home / folder).mkdir(parents=True, exist_ok=True)
        os.environ["TMPDIR"] = str(home / "tmp")
        os.environ[CACHE_DIR_VARIABLE] = str(home / "cache")
        tempfile.tempdir = None  # recompute from TMPDIR


def forget_local_files() -> int:
    """Empty this worker's temporary folder and cache (run on every worker between runs); return its pid."""
    for variable in ("TMPDIR", CACHE_DIR_VARIABLE):
        folder = Path(os.environ[variable])
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    return os.getpid()


def _step_pids(instance: dg.DagsterInstance, run_id: str) -> dict[str, int]:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_SUCCESS).records
    return {record.event_log_entry.step_key: record.event_log_entry.dagster_event.pid for record in records}


def _run_pipeline(readings, summary, instance: dg.DagsterInstance, run_config: dict, after_run) -> set[int]:
    """Materialize every partition, then the summary, each as its own run; return the pids that ran steps."""
    pids: set[int] = set()
    runs = [(readings, {"dagster/partition": day}) for day in DAYS] + [(summary, {})]
    for job, tags in runs:
        with dg.execute_job(dg.reconstructable(job), instance, run_config=run_config, tags=tags) as result:
            assert result.success, [event.message for event in result.all_events if event.is_failure]
            step_pids = _step_pids(instance, result.run_id)
        assert step_pids, "no step succeeded"
        pids |= set(step_pids.values())
        after_run()
    return pids


@pytest.fixture
def persistent_instance(tmp_path, monkeypatch):
    """A persistent Dagster instance (SQLite in a temporary DAGSTER_HOME) that other processes can open."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        assert not instance.is_ephemeral
        yield instance


def test_example_pipeline_on_a_dask_cluster_of_two_worker_processes(bucket, monkeypatch, persistent_instance, tmp_path):
    monkeypatch.setenv(config.BUCKET_VARIABLE, bucket)  # the workers inherit it, and build the job for this bucket
    site_uri = demo.seed(bucket)
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40
    ) as cluster, distributed.Client(cluster) as client:
        client.register_plugin(PrivateDirectories(str(tmp_path / "workers")))
        worker_pids = set(client.run(forget_local_files).values())
        assert len(worker_pids) == 2 and os.getpid() not in worker_pids
        run_config = {"execution": {"config": {"cluster": {"existing": {"address": cluster.scheduler_address}}}}}
        step_pids = _run_pipeline(
            readings_on_dask, summary_on_dask, persistent_instance, run_config, lambda: client.run(forget_local_files)
        )
    assert step_pids <= worker_pids, "a step ran outside the dask workers"
    check_pipeline_outputs(bucket, site_uri, persistent_instance)


def test_example_pipeline_on_the_multiprocess_executor_with_a_persistent_instance(
    bucket, monkeypatch, persistent_instance
):
    monkeypatch.setenv(config.BUCKET_VARIABLE, bucket)
    site_uri = demo.seed(bucket)
    run_config = {"execution": {"config": {"max_concurrent": 2}}}
    step_pids = _run_pipeline(readings_on_processes, summary_on_processes, persistent_instance, run_config, lambda: None)
    # One fresh process per step: raw and cleaned readings of a day never shared a process or its memory.
    assert os.getpid() not in step_pids and len(step_pids) == 2 * len(DAYS) + 1
    check_pipeline_outputs(bucket, site_uri, persistent_instance)
