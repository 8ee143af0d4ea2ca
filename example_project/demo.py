"""`make demo`: run the whole example pipeline through the Dagster command line and show what it stored in GCS.

Steps: create the bucket if it is missing, seed the externally maintained site-metadata file, materialize every
partition of every asset with `dagster asset materialize` (one run per day, then the summary), run the re-tagging
job and the asset checks job once with `dagster job execute`, list every stored datafile and dataset with its Octue
metadata, and print each asset check's result (what the assets' Checks tabs show). The listing and the checks read
metadata only (paged list requests, one metadata request per object); nothing is downloaded.

Runs against whatever `STORAGE_EMULATOR_HOST` points at (`make demo` starts fake-gcs-server for it), or real GCS
with default credentials when it is unset. `--seed-only` stops after seeding (used by `make dev`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from example_project import config
from example_project.partitions import daily_partitions
from octue_dagster import Datafile
from octue_dagster.core.storage.gcs_path import parse_gcs_path
from octue_dagster.core.dataset.dataset import list_datasets
from octue_dagster.core.listing.selection import list_datafiles
from octue_dagster.core.storage.store import Store

DEFINITIONS_MODULE = "example_project.definitions"

#: What the site operator keeps in the external file; the summary copies the site name from it.
SITE_METADATA = {
    "site": "Ardnamurchan North (made up)",
    "operator": "Example Renewables Ltd",
    "turbines": {"wt-01": "V90-2.0", "wt-02": "V90-2.0", "wt-03": "V90-2.0", "wt-04": "V90-2.0"},
    "rated_power_kw": 2000,
    "hub_height_m": 80,
}
#: When the operator last changed it (fixed, so re-seeding changes nothing).
SITE_METADATA_UPDATED = datetime.datetime(2024, 2, 15, 9, 30, tzinfo=datetime.timezone.utc)


def seed(bucket: str) -> str:
    """Create the bucket if needed and upload the site-metadata file; return its URI.

    Uploading identical content again is skipped (same crc32c), so re-running the demo does not make a new version.
    """
    Store.default().ensure_bucket(bucket)
    uri = config.site_metadata_path(bucket)
    with tempfile.TemporaryDirectory() as folder:
        local = Path(folder) / "site-metadata.json"
        local.write_text(json.dumps(SITE_METADATA, indent=2, sort_keys=True) + "\n")
        datafile = Datafile(
            local,
            cloud_path=uri,
            labels={"site-metadata", "external"},
            tags={"source": "operator"},
            timestamp=SITE_METADATA_UPDATED,
        )
        datafile.upload()
    return uri


def dagster(*arguments: str) -> None:
    """Run one `dagster` CLI command in this Python environment, stopping the demo if it fails."""
    command = [sys.executable, "-m", "dagster", *arguments]
    print(f"\n$ {shlex.join(['dagster', *arguments])}", flush=True)
    started = time.monotonic()
    # The CLI logs every event at DEBUG level; keep its output in a file and show it only if the run fails.
    with tempfile.TemporaryFile("w+") as log:
        result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, text=True)
        if result.returncode != 0:
            log.seek(0)
            print(log.read()[-6000:], file=sys.stderr)
            raise SystemExit(f"`{shlex.join(['dagster', *arguments])}` failed with exit code {result.returncode}.")
    print(f"  ok ({time.monotonic() - started:.1f} s)", flush=True)


def run_pipeline() -> None:
    """Materialize every asset and partition, then re-tag once, all through the Dagster CLI."""
    with tempfile.TemporaryDirectory() as folder:
        # The files are small, so each run executes its steps in one process: the default multiprocess executor
        # starts a Python process per step (importing Dagster and the definitions again), tripling the demo's time.
        run_config = Path(folder) / "in-process.yaml"
        run_config.write_text(json.dumps({"execution": {"config": {"in_process": {}}}}))  # JSON is valid YAML
        target = ["-m", DEFINITIONS_MODULE, "-c", str(run_config)]
        for day in daily_partitions.get_partition_keys():
            dagster(
                "asset", "materialize", *target, "--select", "raw_readings,cleaned_readings,turbine_files",
                "--partition", day,
            )
        # Observing the external file and building the summary in one run (the observation runs first: a dependency).
        dagster("asset", "materialize", *target, "--select", "site_metadata,turbine_summary")
        dagster("job", "execute", *target, "-j", config.RETAG_JOB_NAME)
        # The nightly asset checks, once: every stored object against its latest materialization (no download).
        dagster("job", "execute", *target, "-j", config.CHECKS_JOB_NAME)


def show_datafiles(bucket: str) -> int:
    """Print every datafile in the bucket with its Octue metadata, from listings only; return how many."""
    datafiles = list_datafiles(Store.default(), parse_gcs_path(f"gs://{bucket}/", allow_empty_name=True))
    print(f"\n{len(datafiles)} datafiles in gs://{bucket}/ (metadata from listings; nothing downloaded):")
    for datafile in datafiles:
        timestamp = datafile.timestamp.isoformat() if datafile.timestamp else "-"
        print(f"\n  {datafile.cloud_path}")
        print(f"    id:        {datafile.id}")
        print(f"    crc32c:    {datafile.hash_value}   ({datafile.size_bytes} bytes)")
        print(f"    timestamp: {timestamp}")
        print(f"    labels:    {', '.join(sorted(datafile.labels)) or '-'}")
        print(f"    tags:      {json.dumps(dict(datafile.tags), sort_keys=True, default=str)}")
    return len(datafiles)


def show_datasets(bucket: str) -> int:
    """Print every Octue dataset in the bucket (a folder with a dataset `.octue` object), its metadata and files."""
    datasets = list_datasets(Store.default(), parse_gcs_path(f"gs://{bucket}/", allow_empty_name=True))
    print(f"\n{len(datasets)} datasets in gs://{bucket}/ (one listing, plus each dataset's .octue object):")
    for dataset in datasets:
        print(f"\n  {dataset.path}/")
        print(f"    name:      {dataset.name}   id: {dataset.id}")
        print(f"    labels:    {', '.join(sorted(dataset.labels)) or '-'}")
        print(f"    tags:      {json.dumps(dict(dataset.tags), sort_keys=True, default=str)}")
        print(f"    files:     {', '.join(sorted(file.name for file in dataset.files))} ({dataset.size_bytes} bytes)")
    return len(datasets)


def show_checks() -> int:
    """Print the latest result of every asset check (what the UI's Checks tabs show); return how many failed."""
    import warnings

    import dagster as dg

    with warnings.catch_warnings():  # the example's observable source asset is a beta feature; the CLI said so
        warnings.simplefilter("ignore")
        from example_project.definitions import build_checks

    checks, _, _ = build_checks()
    failed = 0
    print("\nAsset checks (latest results, as the Checks tabs show them):")
    with dg.DagsterInstance.get() as instance:
        for key in sorted((key for check in checks for key in check.check_keys), key=str):
            record = instance.get_latest_asset_check_evaluation_record(key)
            evaluation = record.evaluation if record is not None else None
            status = "not run" if evaluation is None else "passed" if evaluation.passed else "FAILED"
            failed += status == "FAILED"
            print(f"  {key.asset_key.to_user_string()} {key.name}: {status}")
            if evaluation is not None and not evaluation.passed:
                print(f"    {evaluation.description}")
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed-only", action="store_true", help="only create the bucket and seed the external file")
    arguments = parser.parse_args(argv)

    bucket = config.bucket()
    target = os.environ.get("STORAGE_EMULATOR_HOST") or "real Google Cloud Storage"
    print(f"Bucket gs://{bucket} on {target}; DAGSTER_HOME={os.environ.get('DAGSTER_HOME', '(temporary)')}")
    print(f"Seeded {seed(bucket)}")
    if arguments.seed_only:
        return 0
    if not os.environ.get("DAGSTER_HOME"):
        # Without a DAGSTER_HOME each CLI run would use a throwaway instance; keep the runs where `make dev` looks.
        home = Path(".dagster_home").absolute()
        home.mkdir(exist_ok=True)
        os.environ["DAGSTER_HOME"] = str(home)
    run_pipeline()
    show_datafiles(bucket)
    show_datasets(bucket)
    show_checks()
    print(
        f"\nDagster recorded these runs in {os.environ['DAGSTER_HOME']}; `make dev` opens them in the UI. (The "
        f"emulator keeps objects in memory only, so `make dev` starts with a freshly seeded, empty bucket.)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
