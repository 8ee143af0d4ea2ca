"""The example pipeline's assets: daily raw turbine readings -> cleaned readings -> a dataset of one CSV per turbine
per day -> an HDF5 per-turbine summary.

Each asset returns a `Datafile` (or, for `turbine_files`, a `Dataset`); the `DatafileIOManager` uploads it (content
and Octue metadata in one request per file) to its asset partition's own address, a datafile named after the asset
whatever the local file is called (`gs://{bucket}/{prefix}/raw_readings/partition=2024-03-01/raw_readings.csv`,
`gs://{bucket}/{prefix}/turbine_summary/=/turbine_summary.h5`), a dataset as an Octue dataset folder there
(`.../turbine_files/partition=2024-03-01/wt-01.csv`, ...). Downstream assets get read-only lazy cloud Datafiles and
Datasets that download only when a file is opened. Labels and tags set here end up on the GCS objects and in the
Dagster UI.
"""

import datetime
import json
from pathlib import Path

import dagster as dg

from example_project import readings
from example_project.config import PipelineSettings
from example_project.partitions import daily_partitions
from example_project.sources import SITE_METADATA_KEY
from octue_dagster import Datafile, DatafileResource, Dataset, datafile_output


@dg.asset(
    partitions_def=daily_partitions,
    group_name="turbines",
    kinds={"gcs", "csv"},
    description="A day of 10-minute readings from every turbine, as the SCADA system exports them (some bad).",
)
def raw_readings(context: dg.AssetExecutionContext, datafiles: DatafileResource) -> Datafile:
    day = datetime.date.fromisoformat(context.partition_key)
    rows = readings.generate_readings(day)
    datafile = datafiles.new(
        f"readings-{day.isoformat()}.csv",
        labels={"turbine-readings", "raw"},
        tags={"day": day.isoformat(), "turbines": len(readings.TURBINES), "rows": len(rows)},
        timestamp=datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.timezone.utc),
    )
    with datafile.open("w", newline="") as file:
        readings.write_csv(rows, file)
    return datafile


@dg.asset(
    partitions_def=daily_partitions,
    group_name="turbines",
    kinds={"gcs", "csv"},
    description="The day's readings without dropouts, impossible values and fault records.",
)
def cleaned_readings(
    context: dg.AssetExecutionContext, datafiles: DatafileResource, raw_readings: Datafile
) -> Datafile:
    # raw_readings is a lazy cloud Datafile: opening it downloads the content once, checked against its crc32c.
    with raw_readings.open() as file:
        rows = readings.read_csv(file)
    good = readings.clean(rows)
    context.log.info(f"Kept {len(good)} of {len(rows)} readings from {raw_readings.cloud_path}.")
    datafile = datafiles.new(
        f"cleaned-{context.partition_key}.csv",
        labels={"turbine-readings", "cleaned"},
        # Provenance in the tags: which raw file (by id and crc32c) these rows came from.
        tags={
            "day": context.partition_key,
            "rows": len(good),
            "dropped_rows": len(rows) - len(good),
            "source_id": raw_readings.id,
            "source_crc32c": raw_readings.hash_value,
        },
        timestamp=raw_readings.timestamp,
    )
    with datafile.open("w", newline="") as file:
        readings.write_csv(good, file)
    return datafile


@dg.asset(
    partitions_def=daily_partitions,
    group_name="turbines",
    kinds={"gcs", "csv"},
    description="The day's cleaned readings as an Octue dataset: one CSV per turbine, tagged with its turbine.",
)
def turbine_files(context: dg.AssetExecutionContext, datafiles: DatafileResource, cleaned_readings: Datafile) -> Dataset:
    dataset = datafiles.new_dataset(
        f"turbine-files-{context.partition_key}",
        labels={"turbine-readings", "per-turbine"},
        tags={"day": context.partition_key, "source_id": cleaned_readings.id},
    )
    with cleaned_readings.open() as file:  # the one download: each turbine's file is written from it
        rows = readings.read_csv(file)
    for turbine in readings.TURBINES:
        turbine_rows = [row for row in rows if row["turbine_id"] == turbine]
        datafile = Datafile(
            Path(dataset.path) / f"{turbine}.csv",
            labels={"turbine-readings", "cleaned"},
            tags={"day": context.partition_key, "turbine": turbine, "rows": len(turbine_rows)},
            timestamp=cleaned_readings.timestamp,
        )
        with datafile.open("w", newline="") as file:
            readings.write_csv(turbine_rows, file)
        dataset.add(datafile)
    # The I/O manager stores the folder as an Octue dataset (Octue's SDK reads it as one); on a re-run only files
    # whose crc32c changed are uploaded.
    return dataset


@dg.asset(
    group_name="turbines",
    kinds={"gcs", "hdf5"},
    deps=[SITE_METADATA_KEY],
    ins={"turbine_files": dg.AssetIn(partition_mapping=dg.AllPartitionMapping())},
    description="Per-turbine statistics over every day of per-turbine files: one HDF5 group per turbine.",
)
def turbine_summary(
    context: dg.AssetExecutionContext,
    datafiles: DatafileResource,
    settings: PipelineSettings,
    turbine_files: dict[str, Dataset],
) -> dg.Output[Datafile]:
    # Each day is a lazy cloud Dataset built from one listing; Octue's filter syntax picks files by their metadata,
    # and only the files opened are downloaded.
    rows: list[dict[str, str]] = []
    for day in sorted(turbine_files):
        for turbine_file in turbine_files[day].files.filter(labels__contains="cleaned").order_by("tags__turbine"):
            with turbine_file.open() as file:
                rows.extend(readings.read_csv(file))
    site = datafiles.get(settings.site_metadata_path)
    with site.open() as file:
        site_info = json.load(file)
    summary = readings.summarise(rows)
    context.log.info(f"Summarised {len(rows)} readings from {len(turbine_files)} days for {len(summary)} turbines.")
    datafile = datafiles.new(
        "turbine-summary.h5",
        labels={"turbine-summary", "statistics"},
        tags={
            "days": sorted(turbine_files),
            "turbines": len(summary),
            "site": site_info.get("site", "unknown"),
            "site_metadata_crc32c": site.hash_value,
        },
        # The summary covers data up to the end of the last day, so that is its timestamp (not the run time).
        timestamp=max(file.timestamp for day in turbine_files.values() for file in day) + datetime.timedelta(days=1),
    )
    with datafile.open("w") as h5:
        h5.attrs["site"] = site_info.get("site", "unknown")
        h5.attrs["rated_power_kw"] = readings.RATED_POWER_KW
        for turbine, stats in summary.items():
            group = h5.create_group(turbine)
            for name, value in stats.items():
                if hasattr(value, "shape"):
                    group.create_dataset(name, data=value, compression="gzip")
                else:
                    group.attrs[name] = value
    # The I/O manager records the file's crc32c as the data version anyway; `datafile_output` does it through
    # Dagster's public `Output(data_version=...)`, before the upload.
    return datafile_output(datafile)


def schema_change_checks() -> list[dg.AssetChecksDefinition]:
    """Dagster's own check on the CSV assets: the column schema the I/O manager records (from the header and the
    first rows) is the previous materialization's; an added, removed or retyped column fails it (a warning)."""
    return list(dg.build_column_schema_change_checks(assets=[raw_readings, cleaned_readings, turbine_files]))
