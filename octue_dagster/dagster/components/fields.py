"""Field types shared by the components: each validates with the library's own rules, so that `dg check defs` names
the attribute and says what is wrong with it (a bad `gs://` path, label, tag, bucket, folder or cron string).

The validators raise the library's errors (`InvalidCloudPathError`, `InvalidLabelError`, ...), which are `ValueError`s;
pydantic reports them under the field's name and the line of `defs.yaml` that set it.
"""

import math
import re
import zoneinfo
from collections.abc import Callable
from typing import Annotated, Any, Literal

import dagster as dg
from dagster._utils.schedules import is_valid_cron_string
from pydantic import AfterValidator, BaseModel, Field

from octue_dagster.core.metadata import values as md
from octue_dagster.core.storage.runner import MAX_CONCURRENCY
from octue_dagster.core.storage.gcs_path import parse_gcs_path, validate_bucket_name
from octue_dagster.core.storage.store import StoreSettings
from octue_dagster.dagster import addresses
from octue_dagster.dagster.resources import StoreConfig
from octue_dagster.dagster.retag_job import build_retag_schedule
from octue_dagster.exceptions import InvalidCloudPathError, InvalidInputError

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


def bounded(minimum: float, *, exclusive: bool = False, maximum: float | None = None) -> AfterValidator:
    """A pydantic validator for a finite number from `minimum` (or above it, if `exclusive`) to `maximum`.

    Used instead of `Field(ge=..., gt=..., le=...)`: Dagster widens every attribute to `<type> | str` (so that a
    template can stand in for any value) and applies a field's bounds to the widened type, where a string (a template,
    or a quoted number) made pydantic raise a bare TypeError naming no attribute. A string is left to the second pass,
    which converts it to the attribute's type before this check runs.
    """

    def validate(value: Any) -> Any:
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidInputError(f"{value!r} is not a finite number: give a number such as {_plain(minimum + 1)}.")
        if value < minimum or (exclusive and value == minimum):
            relation = "greater than" if exclusive else "greater than or equal to"
            raise InvalidInputError(f"{value!r} is too small: give a number {relation} {_plain(minimum)}.")
        if maximum is not None and value > maximum:
            raise InvalidInputError(f"{value!r} is too large: give a number less than or equal to {_plain(maximum)}.")
        return value

    return AfterValidator(validate)


def _plain(number: float) -> str:
    """A bound as people write it: 1, 0.5, 2147483647 (not 2.14748e+09)."""
    return str(int(number)) if float(number).is_integer() else str(number)


_DEFINITION_NAME = re.compile(r"^[A-Za-z0-9_]+$")


def _definition_name(value: str) -> str:
    if not isinstance(value, str) or not _DEFINITION_NAME.match(value):
        raise InvalidInputError(
            f"{value!r} does not match the pattern {_DEFINITION_NAME.pattern} of Dagster names: use letters, digits "
            f"and '_', such as 'nightly_retag'."
        )
    return value


def _resource_key(value: str) -> str:
    if not isinstance(value, str) or not value.isidentifier():
        raise InvalidInputError(
            f"{value!r} is not a resource key Dagster can bind: give a Python identifier (letters, digits and '_', not "
            f"starting with a digit), such as 'datafiles'."
        )
    return value


def distinct_client_key(component: Any) -> Any:
    """`component` if its `resource_key` differs from its `gcs_resource_key`, else `InvalidInputError`: a resource
    bound under the key it takes its GCS client from would need itself (Dagster fails every run on the cycle)."""
    if component.resource_key == component.gcs_resource_key:
        raise InvalidInputError(
            f"{type(component).__name__} binds its resource under {component.resource_key!r} and takes its GCS client "
            f"from the resource under the same key: change resource_key, or set gcs_resource_key to the key of a "
            f"GCSResource (default 'gcs')."
        )
    return component


def _gcs_uri(value: str) -> str:
    parse_gcs_path(value, allow_empty_name=True)
    return value


def _gcs_folder(value: str) -> str:
    location = parse_gcs_path(value, allow_empty_name=True)
    if location.name and not location.name.endswith("/"):
        raise InvalidCloudPathError(
            f"{value!r} is not a folder: a prefix selects every object whose name starts with it, so it would also "
            f"select gs://{location.bucket}/{location.name}_old/... and gs://{location.bucket}/{location.name}.csv; "
            f"end it with '/' ({value}/), or give the bucket alone (gs://{location.bucket})."
        )
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


#: A `gs://bucket` or `gs://bucket/folder/` URI (a prefix: every object under it); a folder must end in '/'.
GcsPrefix = Annotated[str, checked(_gcs_folder)]
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
DefinitionName = Annotated[str, checked(_definition_name)]
#: A resource key: a Python identifier, as Dagster requires.
ResourceKey = Annotated[str, checked(_resource_key)]
#: A length of time in seconds, more than 0.
Seconds = Annotated[float, bounded(0, exclusive=True)]
#: A count of 1 or more.
Count = Annotated[int, bounded(1)]
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

    retry_deadline_seconds: Seconds = Field(
        default=_DEFAULTS.retry_deadline_seconds,
        description="Retry transient GCS failures for this long before giving up with StorageUnavailableError.",
    )
    concurrency: Annotated[int, bounded(1, maximum=MAX_CONCURRENCY)] = Field(
        default=_DEFAULTS.concurrency,
        description=f"Requests in flight at once for work on many objects (re-tagging, multi-partition inputs), at "
        f"most {MAX_CONCURRENCY}.",
    )
    initial_retry_delay_seconds: Seconds = Field(
        default=_DEFAULTS.initial_retry_delay_seconds, description="The first pause between retries (doubling)."
    )
    maximum_retry_delay_seconds: Seconds = Field(
        default=_DEFAULTS.maximum_retry_delay_seconds, description="The longest pause between retries."
    )
    connect_timeout_seconds: Seconds = Field(
        default=_DEFAULTS.connect_timeout_seconds, description="Timeout to connect, per attempt."
    )
    read_timeout_seconds: Seconds = Field(
        default=_DEFAULTS.read_timeout_seconds, description="Timeout to read an answer, per attempt."
    )
    list_page_size: Annotated[int, bounded(1, maximum=1000)] = Field(
        default=_DEFAULTS.list_page_size, description="Objects per list request (at most 1000)."
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


class ScheduleFields(dg.Model):
    """A cron schedule for the job a component builds, as flat attributes (no `cron_schedule`: no schedule)."""

    cron_schedule: OptionalCronString = Field(
        default=None, description="Run the job on this cron schedule, e.g. '0 3 * * *' (03:00 daily); none: no schedule."
    )
    execution_timezone: Timezone = Field(default="UTC", description="The time zone of the cron schedule.")
    schedule_default_status: DefaultStatus = Field(
        default="STOPPED",
        description="Whether the schedule runs as soon as it is loaded (RUNNING) or waits to be turned on (STOPPED).",
    )

    def schedules_for(self, job: Any, run_config: Any = None) -> list[dg.ScheduleDefinition]:
        """The schedule of `job` (with `run_config`, if given) when a `cron_schedule` is set, else none."""
        if self.cron_schedule is None:
            return []
        return [
            build_retag_schedule(
                job,
                self.cron_schedule,
                run_config=run_config,
                execution_timezone=self.execution_timezone,
                default_status=default_status(self.schedule_default_status),
            )
        ]


def default_status(status: DefaultStatus) -> Any:
    """Dagster's status enum for a schedule's `default_status` attribute."""
    return dg.DefaultScheduleStatus.RUNNING if status == "RUNNING" else dg.DefaultScheduleStatus.STOPPED


def default_sensor_status(status: DefaultStatus) -> Any:
    """Dagster's status enum for a sensor's `default_status` attribute."""
    return dg.DefaultSensorStatus.RUNNING if status == "RUNNING" else dg.DefaultSensorStatus.STOPPED


__all__ = [
    "AssetKeyString",
    "BucketName",
    "Count",
    "ResourceKey",
    "Seconds",
    "bounded",
    "distinct_client_key",
    "OptionalCronString",
    "checked",
    "DefaultStatus",
    "Documented",
    "Folder",
    "GcsObjectOrPrefix",
    "GcsPrefix",
    "Label",
    "ScheduleFields",
    "StoreSettingsFields",
    "TagName",
    "Tags",
    "Timezone",
    "DefinitionName",
    "default_sensor_status",
    "default_status",
]
