"""Where the example pipeline keeps its files: one bucket (from `OCTUE_DAGSTER_BUCKET`) and fixed paths in it."""

import os

import dagster as dg

BUCKET_VARIABLE = "OCTUE_DAGSTER_BUCKET"
DEFAULT_BUCKET = "octue-dagster-demo"
#: The I/O manager stores every asset's datafiles under gs://{bucket}/{PREFIX}/{asset key}/{partition folder}/.
PREFIX = "dagster"
#: Files maintained outside the pipeline (by the site operator) live under gs://{bucket}/{EXTERNAL_FOLDER}/.
EXTERNAL_FOLDER = "external"
#: The nightly job that marks cleaned readings as quality-checked.
RETAG_JOB_NAME = "retag_reviewed_readings"
#: The nightly job that checks every stored object is still the one Dagster recorded (the assets' Checks tab).
CHECKS_JOB_NAME = "check_stored_objects"


def bucket() -> str:
    """The bucket the example uses: `OCTUE_DAGSTER_BUCKET`, else `octue-dagster-demo`."""
    return os.environ.get(BUCKET_VARIABLE) or DEFAULT_BUCKET


def external_prefix(bucket_name: str) -> str:
    """The folder of externally maintained files, which the pipeline watches but never writes."""
    return f"gs://{bucket_name}/{EXTERNAL_FOLDER}/"


def site_metadata_path(bucket_name: str) -> str:
    """The site operator's metadata file (turbine models, site name), observed as a source asset."""
    return f"{external_prefix(bucket_name)}site-metadata.json"


class PipelineSettings(dg.ConfigurableResource):
    """The bucket the pipeline runs against, for assets that read files by path rather than through inputs."""

    bucket: str

    @property
    def site_metadata_path(self) -> str:
        return site_metadata_path(self.bucket)
