"""Scaffolders: what `dg scaffold defs octue_dagster.<Component> <path>` writes, a `defs.yaml` with the attributes a
user has to fill in (given as options, or placeholders to edit), instead of an empty `attributes: {}`."""

from collections.abc import Mapping
from typing import Any, ClassVar

import dagster as dg
from pydantic import BaseModel, Field

from octue_dagster.dagster.components.fields import BucketName, DefinitionName, GcsPrefix


def _fill(template: Mapping[str, Any], params: BaseModel) -> dict[str, Any]:
    """The template's attributes with the values the user gave on the command line put in."""
    given = {name: value for name, value in params.model_dump().items() if value is not None}
    return {**template, **given}


class _TemplateScaffolder(dg.Scaffolder):
    """Writes `defs.yaml` from `template`, with the scaffold parameters given put in."""

    template: ClassVar[Mapping[str, Any]] = {}

    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        dg.scaffold_component(request, _fill(self.template, request.params))


class BucketParams(BaseModel):
    bucket: BucketName | None = Field(default=None, description="The GCS bucket (without gs://).")


class RetagParams(BaseModel):
    job_name: DefinitionName | None = Field(default=None, description="The re-tagging job's name.")
    prefix: GcsPrefix | None = Field(default=None, description="The gs:// prefix whose datafiles are re-tagged.")


class IOManagerScaffolder(_TemplateScaffolder):
    template = {"bucket": "{{ env('OCTUE_DAGSTER_BUCKET') }}", "prefix": "dagster"}

    @classmethod
    def get_scaffold_params(cls) -> type[BaseModel]:
        return BucketParams


class RetentionScaffolder(_TemplateScaffolder):
    template = {
        "job_name": "storage_retention",
        "bucket": "{{ env('OCTUE_DAGSTER_BUCKET') }}",
        "prefix": "dagster",
        "older_than_days": 30,
        "cron_schedule": "0 4 * * *",
        "dry_run": True,
    }

    @classmethod
    def get_scaffold_params(cls) -> type[BaseModel]:
        return BucketParams


class RetagScaffolder(_TemplateScaffolder):
    template = {
        "job_name": "retag",
        "prefix": "gs://my-bucket/folder/",
        "labels": ["raw"],
        "add_labels": ["reviewed"],
        "cron_schedule": "0 3 * * *",
    }

    @classmethod
    def get_scaffold_params(cls) -> type[BaseModel]:
        return RetagParams


class ExternalDatafilesScaffolder(_TemplateScaffolder):
    template = {
        "assets": [{"key": "external_file", "path": "gs://my-bucket/external/file.csv"}],
    }


__all__ = ["ExternalDatafilesScaffolder", "IOManagerScaffolder", "RetagScaffolder", "RetentionScaffolder"]
