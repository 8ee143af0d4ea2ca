"""What a complete run of the example pipeline must have stored in GCS and recorded in Dagster, whichever executor ran
it (in-process, multiprocess, dask): shared by the example-project and distributed-executor tests."""

from __future__ import annotations

import dagster as dg
import pytest

from example_project import demo, readings
from example_project.partitions import daily_partitions
from octue_dagster import Datafile
from octue_dagster.core.storage.gcs_path import parse_gcs_path
from octue_dagster.core.listing.selection import list_datafiles
from octue_dagster.core.storage.store import Store

DAYS = daily_partitions.get_partition_keys()


def rows(datafile: Datafile) -> list[dict[str, str]]:
    with datafile.open() as file:
        return readings.read_csv(file)


def by_path(bucket: str) -> dict[str, Datafile]:
    listed = list_datafiles(Store.default(), parse_gcs_path(f"gs://{bucket}/", allow_empty_name=True))
    return {datafile.cloud_path: datafile for datafile in listed}


def check_day(stored: dict[str, Datafile], bucket: str, day: str) -> int:
    """Assert one day's raw and cleaned readings (content, metadata, provenance); return the cleaned row count."""
    raw = stored[f"gs://{bucket}/dagster/raw_readings/partition={day}/raw_readings.csv"]
    cleaned = stored[f"gs://{bucket}/dagster/cleaned_readings/partition={day}/cleaned_readings.csv"]
    raw_rows, cleaned_rows = rows(raw), rows(cleaned)
    # Every turbine reports every 10 minutes; cleaning drops the bad rows and only those.
    assert len(raw_rows) == len(readings.TURBINES) * 144
    assert 0 < len(cleaned_rows) < len(raw_rows)
    assert all(readings.is_good(row) for row in cleaned_rows)
    assert len(cleaned_rows) == sum(readings.is_good(row) for row in raw_rows)
    assert raw.labels == {"turbine-readings", "raw"} and cleaned.labels == {"turbine-readings", "cleaned"}
    assert cleaned.tags["rows"] == len(cleaned_rows)
    assert cleaned.tags["dropped_rows"] == len(raw_rows) - len(cleaned_rows)
    # Provenance: the cleaned file names the raw file it came from by id and crc32c.
    assert cleaned.tags["source_id"] == raw.id and cleaned.tags["source_crc32c"] == raw.hash_value
    assert raw.timestamp.date().isoformat() == day
    return len(cleaned_rows)


def check_summary(
    stored: dict[str, Datafile], bucket: str, site_uri: str, total_cleaned: int, instance: dg.DagsterInstance
) -> None:
    """The summary holds every turbine's cleaned readings, and Dagster recorded its URI, crc32c and data version."""
    summary = stored[f"gs://{bucket}/dagster/turbine_summary/=/turbine_summary.h5"]
    assert summary.tags["days"] == DAYS
    assert summary.tags["site_metadata_crc32c"] == stored[site_uri].hash_value
    with summary.open() as h5:
        assert sorted(h5.keys()) == sorted(readings.TURBINES)
        assert h5.attrs["site"] == demo.SITE_METADATA["site"]
        assert sum(int(h5[turbine].attrs["readings"]) for turbine in h5) == total_cleaned
        for turbine in h5:
            power = h5[turbine]["power_kw"][()]
            assert len(power) == h5[turbine].attrs["readings"]
            assert h5[turbine].attrs["max_power_kw"] == pytest.approx(power.max())
            assert 0 < h5[turbine].attrs["capacity_factor"] < 1

    # What Dagster recorded: the URI and crc32c of each stored file, and the crc32c as the data version.
    record = instance.get_latest_materialization_event(dg.AssetKey("turbine_summary"))
    metadata = record.asset_materialization.metadata
    assert metadata["dagster/uri"].value == summary.cloud_path
    assert metadata["crc32c"].value == summary.hash_value
    assert metadata["labels"].value == ["statistics", "turbine-summary"]
    assert metadata["timestamp"].value == summary.posix_timestamp
    assert record.asset_materialization.tags["dagster/data_version"] == summary.hash_value
    observation = instance.fetch_observations(dg.AssetKey("site_metadata"), limit=1).records[0]
    assert observation.asset_observation.data_version == stored[site_uri].hash_value


def check_pipeline_outputs(bucket: str, site_uri: str, instance: dg.DagsterInstance) -> dict[str, Datafile]:
    """Assert every stored file's content, metadata and provenance, and what Dagster recorded; return the files."""
    stored = by_path(bucket)
    expected = {site_uri, f"gs://{bucket}/dagster/turbine_summary/=/turbine_summary.h5"}
    expected |= {f"gs://{bucket}/dagster/raw_readings/partition={day}/raw_readings.csv" for day in DAYS}
    expected |= {f"gs://{bucket}/dagster/cleaned_readings/partition={day}/cleaned_readings.csv" for day in DAYS}
    expected |= {
        f"gs://{bucket}/dagster/turbine_files/partition={day}/{turbine}.csv" for day in DAYS for turbine in readings.TURBINES
    }
    assert set(stored) == expected

    total_cleaned = sum(check_day(stored, bucket, day) for day in DAYS)

    check_summary(stored, bucket, site_uri, total_cleaned, instance)
    return stored
