"""Dagster components: the library's resources and jobs declared in a `dg` project's `defs.yaml`, with no Python.

Each component is a pydantic model over the library's own functions and classes (the I/O manager, the datafile
resource, the re-tagging and retention jobs, observable sources and the prefix sensor). `dg list components` finds them
through the `dagster_dg_cli.registry_modules` entry point (`octue_dagster`); in `defs.yaml` their types are
`octue_dagster.<ComponentName>`.
"""

from octue_dagster.dagster.components.external import ExternalDatafilesComponent
from octue_dagster.dagster.components.io_manager import DatafileIOManagerComponent
from octue_dagster.dagster.components.resource import DatafileResourceComponent
from octue_dagster.dagster.components.retag import RetagComponent
from octue_dagster.dagster.components.retention import RetentionComponent

__all__ = [
    "DatafileIOManagerComponent",
    "DatafileResourceComponent",
    "ExternalDatafilesComponent",
    "RetagComponent",
    "RetentionComponent",
]
