"""Field types shared by the components: each validates with the library's own rules, so that `dg check defs` names
the attribute and says what is wrong with it (a bad `gs://` path, label, tag, bucket, folder or cron string).

The validators raise the library's errors (`InvalidCloudPathError`, `InvalidLabelError`, ...), which are `ValueError`s;
pydantic reports them under the field's name and the line of `defs.yaml` that set it.
"""

import zoneinfo
from collections.abc import Callable
from typing import Annotated, Any, Literal

import dagster as dg
from dagster._utils.schedules import is_valid_cron_string
from pydantic import AfterValidator, BaseModel, Field

from octue_dagster.core.metadata import values as md
from octue_dagster.core.storage.gcs_path import parse_gcs_path, validate_bucket_name
from octue_dagster.core.storage.store import StoreSettings
from octue_dagster.dagster import addresses
from octue_dagster.dagster.resources import StoreConfig
from octue_dagster.exceptions import InvalidInputError

_DEFAULTS = StoreSettings()


def checked(rule: Callable[[Any], Any]) -> AfterValidator:
    """A pydantic validator applying `rule`, except to `None` and to `{{ ... }}` templates.

    Dagster validates `defs.yaml` twice: as written (templates such as `{{ env('BUCKET') }}` not yet rendered), then
    the rendered values when it builds the component; a template is checked in the second pass.
    """

    def validate(value: Any) -> Any:
        if value is None or (isinstance(value, str) and "{{" in value):
            return value
        return rule(value)

    return AfterValidator(validate)


def _gcs_uri(value: str) -> str:
    parse_gcs_path(value, allow_empty_name=True)
    return value


def _cron(value: str) -> str:
    if not isinstance(value, str) or not is_valid_cron_string(value):
        raise InvalidInputError(
            f"{value!r} is not a cron string Dagster accepts: give five fields, minute hour day-of-month month "
            f"day-of-week, such as '0 3 * * *' (03:00 every day)."
        )
    return value


def _timezone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise InvalidInputError(
            f"{value!r} is not a time zone name: give an IANA name such as 'UTC' or 'Europe/London'."
        ) from None
    return value


def _tags(value: dict[str, Any]) -> dict[str, Any]:
    return dict(md.TagDict(value))


def _asset_key(value: str) -> str:
    if not isinstance(value, str) or not value.strip("/") or any(not part for part in value.split("/")):
        raise InvalidInputError(
            f"{value!r} is not an asset key: give its parts joined by '/', such as 'site_metadata' or 'external/site'."
        )
    if "=" in value:
        raise InvalidInputError(f"Asset key {value!r} contains '=', which Dagster does not allow in asset keys.")
    return value


#: A `gs://bucket` or `gs://bucket/folder/` URI (a prefix: every object under it).
GcsPrefix = Annotated[str, checked(_gcs_uri)]
#: A `gs://bucket/object` URI, or a prefix ending in '/'.
GcsObjectOrPrefix = Annotated[str, checked(_gcs_uri)]
#: A bucket name (no `gs://`).
BucketName = Annotated[str, checked(validate_bucket_name)]
#: A folder inside a bucket, such as `dagster` or `team/assets` ('' is the bucket root).
Folder = Annotated[str, checked(addresses.validate_prefix)]
#: An Octue label: lowercase letters, digits and '-'.
Label = Annotated[str, checked(md.validate_label)]
#: An Octue tag name: lowercase letters, digits and '_'.
TagName = Annotated[str, checked(md.validate_tag_name)]
#: Octue tags: tag names to JSON values.
Tags = Annotated[dict[str, Any], checked(_tags)]
#: A five-field cron string, validated as Dagster validates schedules; or none. (The rule sits on the whole optional
#: type: Dagster lets every attribute also be a plain string, for templates, which would otherwise accept any text.)
OptionalCronString = Annotated[str | None, checked(_cron)]
#: An IANA time zone name, such as 'UTC' or 'Europe/London'.
Timezone = Annotated[str, checked(_timezone)]
#: A Dagster definition name (jobs, schedules, sensors).
DefinitionName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_]+$")]
#: An asset key as a '/'-joined string.
AssetKeyString = Annotated[str, checked(_asset_key)]
#: Whether a schedule or sensor starts running when the definitions are loaded.
DefaultStatus = Literal["RUNNING", "STOPPED"]


class Documented(dg.Resolvable):
    """`Resolvable`, keeping each field's description in the schema `dg` shows.

    Dagster 1.13 derives the YAML schema from the model and drops the description of every field that has a default
    (it merges in a `Field(default=..., description=None)`); this puts them back, once per class.
    """

    @classmethod
    def model(cls) -> type[BaseModel]:
        derived = super().model()
        own_fields = getattr(cls, "model_fields", {})
        restored = False
        for name, field in derived.model_fields.items():
            own = own_fields.get(name)
            if own is not None and own.description and not field.description:
                field.description = own.description
                restored = True
        if restored:
            derived.model_rebuild(force=True)
        return derived


class StoreSettingsFields(dg.Model):
    """How requests to GCS are retried and timed (`StoreConfig` of the Python API), as flat attributes."""

    retry_deadline_seconds: float = Field(
        default=_DEFAULTS.retry_deadline_seconds,
        gt=0,
        description="Retry transient GCS failures for this long before giving up with StorageUnavailableError.",
    )
    concurrency: int = Field(
        default=_DEFAULTS.concurrency,
        ge=1,
        description="Requests in flight at once for work on many objects (re-tagging, multi-partition inputs).",
    )
    initial_retry_delay_seconds: float = Field(
        default=_DEFAULTS.initial_retry_delay_seconds, gt=0, description="The first pause between retries (doubling)."
    )
    maximum_retry_delay_seconds: float = Field(
        default=_DEFAULTS.maximum_retry_delay_seconds, gt=0, description="The longest pause between retries."
    )
    connect_timeout_seconds: float = Field(
        default=_DEFAULTS.connect_timeout_seconds, gt=0, description="Timeout to connect, per attempt."
    )
    read_timeout_seconds: float = Field(
        default=_DEFAULTS.read_timeout_seconds, gt=0, description="Timeout to read an answer, per attempt."
    )
    list_page_size: int = Field(
        default=_DEFAULTS.list_page_size, ge=1, le=1000, description="Objects per list request (at most 1000)."
    )
    user_project: str | None = Field(default=None, description="The project billed for requester-pays buckets.")

    def store_config(self) -> StoreConfig:
        """The store settings as the resources' `StoreConfig`."""
        return StoreConfig(
            retry_deadline_seconds=self.retry_deadline_seconds,
            initial_retry_delay_seconds=self.initial_retry_delay_seconds,
            maximum_retry_delay_seconds=self.maximum_retry_delay_seconds,
            concurrency=self.concurrency,
            connect_timeout_seconds=self.connect_timeout_seconds,
            read_timeout_seconds=self.read_timeout_seconds,
            list_page_size=self.list_page_size,
            user_project=self.user_project,
        )


def default_status(status: DefaultStatus) -> Any:
    """Dagster's status enum for a schedule's `default_status` attribute."""
    return dg.DefaultScheduleStatus.RUNNING if status == "RUNNING" else dg.DefaultScheduleStatus.STOPPED


def default_sensor_status(status: DefaultStatus) -> Any:
    """Dagster's status enum for a sensor's `default_status` attribute."""
    return dg.DefaultSensorStatus.RUNNING if status == "RUNNING" else dg.DefaultSensorStatus.STOPPED


__all__ = [
    "AssetKeyString",
    "BucketName",
    "OptionalCronString",
    "checked",
    "DefaultStatus",
    "Documented",
    "Folder",
    "GcsObjectOrPrefix",
    "GcsPrefix",
    "Label",
    "StoreSettingsFields",
    "TagName",
    "Tags",
    "Timezone",
    "DefinitionName",
    "default_sensor_status",
    "default_status",
]
