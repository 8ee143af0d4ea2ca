"""The example pipeline on real distributed executors, with a persistent Dagster instance: `dagster-dask` on a
`distributed.LocalCluster` of two worker processes, and Dagster's multiprocess executor.

Every step runs in another process than this one. Each dask worker gets its own temporary folder and download cache
(as separate machines or pods would), and both are emptied after every run, so the only way an output can reach
the next step is through GCS. The outputs are then checked as thoroughly as the in-process run's.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import dagster as dg
import pytest

from example_project import config, demo
from octue_dagster.core.cache.copies import CACHE_DIR_VARIABLE
from pipeline_checks import DAYS, by_path, check_day, check_pipeline_outputs

distributed = pytest.importorskip("distributed", reason="the dev extra installs dagster-dask and distributed")
pytest.importorskip("dagster_dask")

from example_project import distributed as distributed_jobs  # noqa: E402 - after the skips


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


def _run_pipeline(
    instance: dg.DagsterInstance, run_config: dict, runs: list[tuple[str, dict[str, str]]], after_run
) -> set[int]:
    """Run each (job, tags) of `runs` in turn; return the pids that ran steps."""
    pids: set[int] = set()
    for job, tags in runs:
        reconstructable = dg.reconstructable(getattr(distributed_jobs, job))
        with dg.execute_job(reconstructable, instance, run_config=run_config, tags=tags) as result:
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
        # Every partition, then the summary, each as its own run.
        runs = [("readings_on_dask", {"dagster/partition": day}) for day in DAYS] + [("summary_on_dask", {})]
        step_pids = _run_pipeline(persistent_instance, run_config, runs, lambda: client.run(forget_local_files))
    assert step_pids <= worker_pids, "a step ran outside the dask workers"
    check_pipeline_outputs(bucket, site_uri, persistent_instance)


def test_example_pipeline_on_the_multiprocess_executor_with_a_persistent_instance(
    bucket, monkeypatch, persistent_instance
):
    # One day (each step a fresh process costs seconds on a busy machine): its raw, cleaned and per-turbine files are
    # made in separate processes, so each step can only have read its input from GCS.
    monkeypatch.setenv(config.BUCKET_VARIABLE, bucket)
    day = DAYS[0]
    run_config = {"execution": {"config": {"max_concurrent": 2}}}
    runs = [("readings_on_processes", {"dagster/partition": day})]
    step_pids = _run_pipeline(persistent_instance, run_config, runs, lambda: None)
    (run_id,) = [record.dagster_run.run_id for record in persistent_instance.get_run_records()]
    steps = _step_pids(persistent_instance, run_id)
    # Every step (the assets', and the checks' that run with them) in a process of its own, none in this one.
    assert {key.to_user_string() for key in distributed_jobs.PARTITIONED} <= set(steps)
    assert step_pids == set(steps.values()) and len(step_pids) == len(steps) and os.getpid() not in step_pids
    check_day(by_path(bucket), bucket, day)
    record = persistent_instance.get_latest_materialization_event(dg.AssetKey("cleaned_readings"))
    assert record is not None and record.asset_materialization.partition == day
