"""`DatafileResourceComponent`: the `DatafileResource` declared in `defs.yaml`."""

import dagster as dg
from pydantic import Field

from octue_dagster.dagster.components.fields import Documented, StoreSettingsFields
from octue_dagster.dagster.components.gcs import BoundOrDefaultGCSResource
from octue_dagster.dagster.resources import DatafileResource


class DatafileResourceComponent(dg.Component, Documented, StoreSettingsFields):
    """Binds a DatafileResource: assets get, create, list and re-tag datafiles with it; the jobs of RetagComponent,
    RetentionComponent and ExternalDatafilesComponent use it.

    The GCS client is the `gcs` resource's when one is bound (dagster-gcp's GCSResourceComponent), otherwise default
    credentials, or the emulator named by STORAGE_EMULATOR_HOST.

    Example ``defs.yaml``::

        type: octue_dagster.DatafileResourceComponent
        attributes:
          resource_key: datafiles
          retry_deadline_seconds: 60
    """

    resource_key: str = Field(default="datafiles", description="The key to bind the resource under.")
    working_dir: str | None = Field(
        default=None,
        description="Folder for new local datafiles (a sub-folder per step attempt); default: a temporary folder.",
    )
    keep_working_files: bool = Field(
        default=False, description="Keep each step's working folder after the step instead of removing it."
    )
    gcs_resource_key: str = Field(
        default="gcs", description="Use the GCS resource bound under this key, when the definitions bind one."
    )

    @property
    def resource(self) -> DatafileResource:
        """The configured resource."""
        return DatafileResource(
            gcs=BoundOrDefaultGCSResource(resource_key=self.gcs_resource_key),
            store_settings=self.store_config(),
            working_dir=self.working_dir,
            keep_working_files=self.keep_working_files,
        )

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        return dg.Definitions(resources={self.resource_key: self.resource})


__all__ = ["DatafileResourceComponent"]
