"""`DatafileIOManagerComponent`: the `DatafileIOManager` declared in `defs.yaml`."""

from typing import Literal

import dagster as dg
from pydantic import Field, model_validator

from octue_dagster.dagster.components.checks import DatafileChecks
from octue_dagster.dagster.components.fields import BucketName, Documented, Folder, StoreSettingsFields
from octue_dagster.dagster.components.gcs import BoundOrDefaultGCSResource
from octue_dagster.dagster.components.scaffolding import IOManagerScaffolder
from octue_dagster.dagster.io_manager import DatafileIOManager


@dg.scaffold_with(IOManagerScaffolder)
class DatafileIOManagerComponent(dg.Component, Documented, StoreSettingsFields):
    """Stores the assets' Datafiles in `gs://{bucket}/{prefix}/...` with their Octue metadata (the DatafileIOManager).

    The GCS client is the `gcs` resource's when one is bound (dagster-gcp's GCSResourceComponent), otherwise default
    credentials, or the emulator named by STORAGE_EMULATOR_HOST.

    `checks` attaches asset checks to the assets it stores (`build_datafile_asset_checks`): is each stored object still
    the one Dagster recorded, with the labels and tags it must carry; optionally with a job and schedule running them.

    Example ``defs.yaml``::

        type: octue_dagster.DatafileIOManagerComponent
        attributes:
          bucket: my-bucket
          prefix: dagster
          checks:
            assets: [raw_readings, cleaned_readings]
            required_labels: [turbine-readings]
            cron_schedule: "30 4 * * *"
    """

    bucket: BucketName = Field(description="The GCS bucket to store asset files in (it must exist), without gs://.")
    prefix: Folder = Field(default="dagster", description="Folder inside the bucket, e.g. 'dagster' or 'team/assets'.")
    resource_key: str = Field(
        default="io_manager",
        description="The key to bind the I/O manager under ('io_manager' makes it every asset's default).",
    )
    object_names: Literal["asset", "datafile"] = Field(
        default="asset",
        description=(
            "How stored objects are named: 'asset' (after the asset key's last part, keeping the returned file's "
            "extension) or 'datafile' (the returned file's own name)."
        ),
    )
    gcs_resource_key: str = Field(
        default="gcs", description="Use the GCS resource bound under this key, when the definitions bind one."
    )
    checks: DatafileChecks | None = Field(
        default=None,
        description=(
            "Asset checks on the stored objects of these assets (still what Dagster recorded; required labels and "
            "tags), and optionally a job and cron schedule that run them; none: no checks."
        ),
    )

    @model_validator(mode="after")
    def _checks_name_assets(self) -> "DatafileIOManagerComponent":
        if self.checks is not None:
            self.checks.check_assets()
        return self

    @property
    def io_manager(self) -> DatafileIOManager:
        """The configured I/O manager."""
        return DatafileIOManager(
            bucket=self.bucket,
            prefix=self.prefix,
            object_names=self.object_names,
            gcs=BoundOrDefaultGCSResource(resource_key=self.gcs_resource_key),
            store_settings=self.store_config(),
        )

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        resources = dg.Definitions(resources={self.resource_key: self.io_manager})
        if self.checks is None:
            return resources
        return dg.Definitions.merge(resources, self.checks.build_defs(self.resource_key))


__all__ = ["DatafileIOManagerComponent"]
