"""The storage client of the resources the components declare: the `gcs` resource when the definitions bind one
(dagster-gcp's `GCSResourceComponent`, or a `GCSResource` in Python), otherwise default credentials, or the emulator
named by `STORAGE_EMULATOR_HOST`.

A component cannot see what other components bind, and Dagster has no optional resource dependency, so the choice is
made when the resource starts: Dagster hands every resource the definitions of all resources bound beside it.
"""

import contextlib
from typing import Any

from dagster import InitResourceContext, build_resources
from dagster_gcp import GCSResource
from google.cloud import storage
from pydantic import Field, PrivateAttr

from octue_dagster.core.store import make_client
from octue_dagster.dagster.resources import client_from
from octue_dagster.exceptions import InvalidInputError


class BoundOrDefaultGCSResource(GCSResource):
    """A `GCSResource` that stands for the one bound under `resource_key`, if any, else makes a default client.

    Example (what the components build)::

        DatafileIOManager(bucket="my-bucket", gcs=BoundOrDefaultGCSResource())
    """

    resource_key: str = Field(
        default="gcs", description="Use the GCS resource bound under this key when the definitions bind one."
    )

    _client: storage.Client | None = PrivateAttr(default=None)
    _stack: contextlib.ExitStack | None = PrivateAttr(default=None)
    _source: str = PrivateAttr(default="default credentials")

    def setup_for_execution(self, context: InitResourceContext) -> None:
        definition = (context.all_resource_defs or {}).get(self.resource_key)
        if definition is None:
            return
        # Start the bound resource as Dagster would (it may be configured, or a function-style resource).
        stack = contextlib.ExitStack()
        try:
            bound = getattr(
                stack.enter_context(build_resources({self.resource_key: definition}, instance=context.instance)),
                self.resource_key,
            )
            if not isinstance(bound, storage.Client) and not callable(getattr(bound, "get_client", None)):
                raise InvalidInputError(
                    f"The resource bound under {self.resource_key!r} is a {type(bound).__name__}, not a GCS resource "
                    f"(dagster-gcp's GCSResource or a google.cloud.storage.Client); bind a GCSResource there, or "
                    f"another key in gcs_resource_key."
                )
            self._client = client_from(bound)
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        self._source = f"the {self.resource_key!r} resource"

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack = None

    @property
    def source(self) -> str:
        """Where the client comes from: the bound resource's key, or default credentials."""
        return self._source

    def get_client(self) -> storage.Client:
        """The bound resource's client, else a client from default credentials (or the emulator)."""
        if self._client is None:
            self._client = make_client(self.project)
        return self._client

    def get_object_to_set_on_execution_context(self) -> Any:
        return self.get_client()


__all__ = ["BoundOrDefaultGCSResource"]
