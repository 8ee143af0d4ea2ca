"""Where the example pipeline keeps its files: one bucket (from `OCTUE_DAGSTER_BUCKET`) and fixed paths in it."""

from __future__ import annotations

import os

BUCKET_VARIABLE = "OCTUE_DAGSTER_BUCKET"
DEFAULT_BUCKET = "octue-dagster-demo"
#: The I/O manager stores every asset's datafiles under gs://{bucket}/{PREFIX}/{asset key}/.
PREFIX = "dagster"


def bucket() -> str:
    """The bucket the example uses: `OCTUE_DAGSTER_BUCKET`, else `octue-dagster-demo`."""
    return os.environ.get(BUCKET_VARIABLE) or DEFAULT_BUCKET


def site_metadata_path() -> str:
    """The externally maintained site-metadata file, which the pipeline observes but does not write."""
    return f"gs://{bucket()}/external/site-metadata.json"


def incoming_prefix() -> str:
    """Where field engineers drop extra files; a sensor watches it."""
    return f"gs://{bucket()}/incoming/"
