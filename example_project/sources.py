"""Files the pipeline depends on but does not produce, and how Dagster watches them.

The site operator maintains `gs://{bucket}/external/site-metadata.json`. It is an observable source asset: observing
it reads the object's metadata only (no download) and records its crc32c as the data version, so the summary built
from it shows as stale in the UI when the operator changes the file. A sensor on the `external/` folder requests the
observation and a rebuild of the summary whenever a file there gets new content.
"""

import dagster as dg

from example_project import config
from octue_dagster import gcs_observable_source_asset, gcs_prefix_sensor

SITE_METADATA_KEY = dg.AssetKey("site_metadata")
SUMMARY_KEY = dg.AssetKey("turbine_summary")


def build_site_metadata(bucket: str) -> dg.SourceAsset:
    """The observable source asset for the site-metadata file in `bucket`."""
    return gcs_observable_source_asset(
        SITE_METADATA_KEY,
        config.site_metadata_path(bucket),
        group_name="turbines",
        description="Turbine models and site details, maintained by the site operator (read-only for the pipeline).",
    )


def build_external_files_sensor(bucket: str) -> dg.SensorDefinition:
    """Observe the site metadata and rebuild the summary when a file under `external/` gets new content."""
    return gcs_prefix_sensor(
        "external_files_sensor",
        config.external_prefix(bucket),
        asset_selection=[SITE_METADATA_KEY, SUMMARY_KEY],
        minimum_interval_seconds=30,
        # The demo seeds the folder before Dagster starts; that first state is the baseline, not a change.
        process_existing=False,
    )
