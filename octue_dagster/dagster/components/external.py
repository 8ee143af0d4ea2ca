"""`ExternalDatafilesComponent`: GCS files the pipeline reads but does not make, watched from `defs.yaml`."""

import dagster as dg
from pydantic import Field

from octue_dagster.dagster.components.fields import (
    Documented,
    AssetKeyString,
    DefaultStatus,
    DefinitionName,
    GcsObjectOrPrefix,
    GcsPrefix,
    default_sensor_status,
)
from octue_dagster.dagster.components.scaffolding import ExternalDatafilesScaffolder
from octue_dagster.dagster.observation import gcs_observable_source_asset, gcs_prefix_sensor


class ExternalDatafile(Documented, dg.Model):
    """One observable source asset: a GCS object, or every object under a prefix."""

    key: AssetKeyString = Field(description="The asset key, parts joined by '/', e.g. 'site_metadata'.")
    path: GcsObjectOrPrefix = Field(
        description="gs://bucket/object, or gs://bucket/folder/ (ending in '/') for every object under it."
    )
    description: str | None = Field(default=None, description="The asset's description in the UI.")
    group_name: str | None = Field(default=None, description="The asset group to show it in.")


class PrefixSensor(Documented, dg.Model):
    """A sensor that requests a run of `job_name` for each new or changed object under `prefix`."""

    name: DefinitionName = Field(description="The sensor's name.")
    prefix: GcsPrefix = Field(description="Watch objects under this prefix: gs://bucket/folder/.")
    job_name: DefinitionName = Field(description="The name of the asset job the sensor requests.")
    assets: list[AssetKeyString] = Field(
        min_length=1,
        description="The assets the job observes or materializes (asset keys), e.g. the source and what reads it.",
    )
    minimum_interval_seconds: int = Field(default=60, ge=1, description="Evaluate at most this often.")
    process_existing: bool = Field(
        default=True, description="Request runs for objects already there at the first evaluation (false: baseline)."
    )
    max_runs_per_tick: int | None = Field(default=None, ge=1, description="Request at most this many runs per tick.")
    default_status: DefaultStatus = Field(default="STOPPED", description="Whether the sensor runs once loaded.")


@dg.scaffold_with(ExternalDatafilesScaffolder)
class ExternalDatafilesComponent(dg.Component, Documented, dg.Model):
    """Observable source assets for GCS objects or prefixes the pipeline reads but does not make, and optionally a
    sensor that requests a job when a file under a prefix gets new content.

    Observing reads object metadata only: the data version is the object's crc32c (for a prefix, a hash of every
    object's name and crc32c), so downstream assets go stale exactly when content changes. It uses the DatafileResource
    bound under `resource_key` (declare a DatafileResourceComponent).

    Example ``defs.yaml``::

        type: octue_dagster.ExternalDatafilesComponent
        attributes:
          assets:
            - key: site_metadata
              path: gs://my-bucket/external/site-metadata.json
          sensor:
            name: external_files_sensor
            prefix: gs://my-bucket/external/
            job_name: refresh_from_external_files
            assets: [site_metadata, turbine_summary]
    """

    assets: list[ExternalDatafile] = Field(default_factory=list, description="The external files, one asset each.")
    sensor: PrefixSensor | None = Field(default=None, description="A sensor on a prefix and the job it requests.")
    resource_key: str = Field(default="datafiles", description="The key of the DatafileResource used to read GCS.")

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        assets = [
            gcs_observable_source_asset(
                dg.AssetKey.from_user_string(item.key),
                item.path,
                gcs_resource_key=self.resource_key,
                description=item.description,
                group_name=item.group_name,
            )
            for item in self.assets
        ]
        if self.sensor is None:
            return dg.Definitions(assets=assets)
        settings = self.sensor
        job = dg.define_asset_job(
            settings.job_name,
            selection=[dg.AssetKey.from_user_string(key) for key in settings.assets],
            description=f"Requested by {settings.name} when a file under {settings.prefix} gets new content.",
        )
        sensor = gcs_prefix_sensor(
            settings.name,
            settings.prefix,
            job=job,
            gcs_resource_key=self.resource_key,
            minimum_interval_seconds=settings.minimum_interval_seconds,
            process_existing=settings.process_existing,
            max_runs_per_tick=settings.max_runs_per_tick,
            default_status=default_sensor_status(settings.default_status),
        )
        return dg.Definitions(assets=assets, jobs=[job], sensors=[sensor])


__all__ = ["ExternalDatafile", "ExternalDatafilesComponent", "PrefixSensor"]
