"""The storage client of the resources the components declare: the `gcs` resource when the definitions bind one
(dagster-gcp's `GCSResourceComponent`, or a `GCSResource` in Python), otherwise default credentials, or the emulator
named by `STORAGE_EMULATOR_HOST`.

A component cannot see what other components bind, and Dagster has no optional resource dependency. But Dagster asks
every resource definition which keys it needs *given all the resources bound* (`get_required_resource_keys`), when it
binds resources to jobs and sensors and orders their start-up; answering "the `gcs` key, if it is bound" makes
Dagster start the bound resource first and hand it over, and makes it no requirement when nothing is bound.
"""

from collections.abc import Mapping
from typing import AbstractSet, Any

from dagster import InitResourceContext, ResourceDefinition
from dagster._config.pythonic_config.resource import ConfigurableResourceFactoryResourceDefinition
from dagster_gcp import GCSResource
from google.cloud import storage
from pydantic import Field, PrivateAttr

from octue_dagster.core.storage.store import make_client
from octue_dagster.dagster.resources import client_from
from octue_dagster.exceptions import InvalidInputError


class _OptionalDependencyDefinition(ConfigurableResourceFactoryResourceDefinition):
    """A resource definition that needs the resource under `optional_key` when, and only when, one is bound."""

    def __init__(self, optional_key: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._optional_key = optional_key

    def get_required_resource_keys(self, resource_defs: Mapping[str, ResourceDefinition]) -> AbstractSet[str]:
        keys = set(super().get_required_resource_keys(resource_defs))
        if self._optional_key in resource_defs:
            keys.add(self._optional_key)
        return keys


class BoundOrDefaultGCSResource(GCSResource):
    """A `GCSResource` that uses the resource bound under `resource_key` when the definitions bind one, and otherwise
    makes a client from default credentials (or for the emulator named by `STORAGE_EMULATOR_HOST`).

    Example (what the components build)::

        DatafileIOManager(bucket="my-bucket", gcs=BoundOrDefaultGCSResource(resource_key="gcs"))
    """

    resource_key: str = Field(
        default="gcs", description="Use the GCS resource bound under this key when the definitions bind one."
    )

    _client: storage.Client | None = PrivateAttr(default=None)

    def get_resource_definition(self) -> ConfigurableResourceFactoryResourceDefinition:
        return _OptionalDependencyDefinition(
            self.resource_key,
            self.__class__,
            resource_fn=self._get_initialize_and_run_fn(),
            config_schema=self._config_schema,
            description=self.__doc__,
            nested_resources=self.nested_resources,
            nested_partial_resources=self._nested_partial_resources,
        )

    def setup_for_execution(self, context: InitResourceContext) -> None:
        bound = getattr(context.resources, self.resource_key, None) if context.resources is not None else None
        if bound is None:
            return
        if not isinstance(bound, storage.Client) and not callable(getattr(bound, "get_client", None)):
            raise InvalidInputError(
                f"The resource bound under {self.resource_key!r} is a {type(bound).__name__}, not a GCS resource "
                f"(dagster-gcp's GCSResource, or a google.cloud.storage.Client): bind a GCSResource there, or set "
                f"gcs_resource_key to the key of one."
            )
        self._client = client_from(bound)

    def get_client(self) -> storage.Client:
        """The bound resource's client, else a client from default credentials (or the emulator)."""
        if self._client is None:
            self._client = make_client(self.project)
        return self._client

    def get_object_to_set_on_execution_context(self) -> Any:
        return self.get_client()


__all__ = ["BoundOrDefaultGCSResource"]
