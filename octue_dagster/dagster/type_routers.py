"""Type routing for the I/O manager: which values it stores and loads, and how, as an ordered list of routers.

Each router claims an annotation (and, for outputs of unannotated assets, a returned value) and stores or loads it
at a `Slot`: one output or input and the partition keys it covers. Wrapper routers (`Optional[...]`, a `dict` of
partitions) resolve an inner router for what they wrap; leaf routers (`Datafile`, and `Dataset` once it exists) do
the work through the `RouterHost` (the I/O manager's worker), which owns addresses, transfers and recording.

To teach the I/O manager a new type, write a `TypeRouter` subclass and put it in `TYPE_ROUTERS` (or pass
`routers=` to the worker) before the routers it should take precedence over. This is the pattern of dagster-polars'
type routers and Dagster's `UPathIOManager`, without pickling anything.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from dagster import DataVersion, InputContext, MetadataValue, OutputContext

from octue_dagster.core.storage.runner import run_concurrently
from octue_dagster.core.datafile.datafile import Datafile
from octue_dagster.core.dataset.dataset import Dataset
from octue_dagster.dagster.ui_metadata import dataset_data_version, dataset_metadata
from octue_dagster.exceptions import UnsupportedTypeError
from octue_dagster.core.storage.store import Store

#: Input metadata key: skip missing upstream partitions instead of failing (as with Dagster's UPathIOManager).
ALLOW_MISSING_PARTITIONS = "allow_missing_partitions"


@dataclasses.dataclass(frozen=True)
class Slot:
    """Where a value goes to or comes from: one output (or the upstream output of an input) and its partition keys.

    `partition_keys` is `(None,)` for an unpartitioned asset or a plain op output, else the partition keys of the
    step (several for a single-run backfill or an input that depends on several upstream partitions).
    """

    context: OutputContext | InputContext
    partition_keys: tuple[str | None, ...] = (None,)

    @property
    def partition_key(self) -> str | None:
        """The one partition key of a slot that covers exactly one (or `None` when unpartitioned)."""
        if len(self.partition_keys) != 1:
            raise ValueError(f"This slot covers {len(self.partition_keys)} partitions, not one.")
        return self.partition_keys[0]

    def each(self) -> list[Slot]:
        """One slot per partition key."""
        return [Slot(self.context, (key,)) for key in self.partition_keys]


@dataclasses.dataclass(frozen=True)
class StoredOutput:
    """What storing one partition's value produced: the metadata to record and the data version to set."""

    partition_key: str | None
    metadata: Mapping[str, MetadataValue]
    data_version: DataVersion | None = None


class RouterHost(Protocol):
    """What routers need from the I/O manager's worker (implemented by `AssetStorage`)."""

    store: Store

    def store_datafile(self, slot: Slot, datafile: Datafile) -> StoredOutput: ...

    def load_datafile(self, slot: Slot) -> Datafile: ...

    def describe(self, slot: Slot) -> str: ...

    def router_for(self, typing_type: Any, value: Any = ...) -> TypeRouter: ...


class TypeRouter(ABC):
    """How the I/O manager stores and loads one kind of annotated type.

    `match_type` says whether the router claims an annotation; `match_value` whether it claims a value returned by
    an asset whose output is unannotated (`Any`). `store` returns one `StoredOutput` per partition it stored.
    """

    def __init__(self, typing_type: Any, host: RouterHost) -> None:
        self.typing_type = typing_type
        self.host = host

    @classmethod
    @abstractmethod
    def match_type(cls, typing_type: Any) -> bool:
        """Whether this router handles values annotated with `typing_type`."""

    @classmethod
    def match_value(cls, value: Any) -> bool:
        """Whether this router handles `value` when the output has no useful annotation."""
        return False

    @abstractmethod
    def store(self, slot: Slot, value: Any) -> list[StoredOutput]:
        """Store `value` at `slot`."""

    @abstractmethod
    def load(self, slot: Slot) -> Any:
        """Load the value stored at `slot`; a missing value raises `FileNotFoundError`."""


def _union_arguments(typing_type: Any) -> tuple[Any, ...] | None:
    origin = typing.get_origin(typing_type)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(typing_type)
    return None


def is_unannotated(typing_type: Any) -> bool:
    """Whether an annotation says nothing about the value (`Any`, `object`, or none at all)."""
    return typing_type in (Any, object, None, inspect.Parameter.empty)


class DatafileRouter(TypeRouter):
    """One `Datafile` per partition: stored at the partition's address, loaded as a lazy cloud datafile."""

    @classmethod
    def match_type(cls, typing_type: Any) -> bool:
        return isinstance(typing_type, type) and issubclass(typing_type, Datafile)

    @classmethod
    def match_value(cls, value: Any) -> bool:
        return isinstance(value, Datafile)

    def store(self, slot: Slot, value: Any) -> list[StoredOutput]:
        if not isinstance(value, Datafile):
            raise UnsupportedTypeError(
                f"DatafileIOManager can only store a Datafile here, but {self.host.describe(slot)} returned a "
                f"{type(value).__module__}.{type(value).__qualname__}. Return a Datafile (e.g. from "
                f"DatafileResource.new), or give this asset another I/O manager."
            )
        return [self.host.store_datafile(slot, value)]

    def load(self, slot: Slot) -> Datafile:
        return self.host.load_datafile(slot)


class DatasetRouter(TypeRouter):
    """One `Dataset` per partition: stored as an Octue dataset folder at the partition's address (only changed files
    are uploaded), loaded as a lazy cloud dataset from one listing (see `dataset_storage`)."""

    @classmethod
    def match_type(cls, typing_type: Any) -> bool:
        return isinstance(typing_type, type) and issubclass(typing_type, Dataset)

    @classmethod
    def match_value(cls, value: Any) -> bool:
        return isinstance(value, Dataset)

    def store(self, slot: Slot, value: Any) -> list[StoredOutput]:
        if not isinstance(value, Dataset):
            raise UnsupportedTypeError(
                f"DatafileIOManager can only store a Dataset here, but {self.host.describe(slot)} returned a "
                f"{type(value).__module__}.{type(value).__qualname__}. Return a Dataset (e.g. Dataset(folder))."
            )
        from octue_dagster.dagster import dataset_storage

        # Profiled before storing: counting the CSV files' rows shares the read that hashes them for the upload.
        profile_catalog = getattr(self.host, "catalog_metadata", None)
        catalog_metadata = profile_catalog(slot, value) if profile_catalog is not None else {}
        stored = dataset_storage.store_dataset(self.host, slot, value)
        metadata = {**catalog_metadata, **dataset_metadata(stored)}
        return [StoredOutput(slot.partition_key, metadata, dataset_data_version(stored))]

    def load(self, slot: Slot) -> Dataset:
        from octue_dagster.dagster import dataset_storage

        return dataset_storage.load_dataset(self.host, slot)


class OptionalRouter(TypeRouter):
    """`Optional[X]`: `None` stores nothing, and a missing stored value loads as `None` (as UPathIOManager does)."""

    @classmethod
    def match_type(cls, typing_type: Any) -> bool:
        arguments = _union_arguments(typing_type)
        return arguments is not None and type(None) in arguments and len(arguments) == 2

    @property
    def inner_type(self) -> Any:
        return next(argument for argument in typing.get_args(self.typing_type) if argument is not type(None))

    def store(self, slot: Slot, value: Any) -> list[StoredOutput]:
        if value is None:
            slot.context.log.info(f"{self.host.describe(slot)} returned None: nothing is stored.")
            return []
        return self.host.router_for(self.inner_type, value).store(slot, value)

    def load(self, slot: Slot) -> Any:
        try:
            return self.host.router_for(self.inner_type).load(slot)
        except FileNotFoundError:
            return None


class PartitionsRouter(TypeRouter):
    """A `dict` of partition key to value: several partitions in one run (a single-run backfill, or an input that
    depends on several upstream partitions). Each value goes through the router of the dict's value type."""

    @classmethod
    def match_type(cls, typing_type: Any) -> bool:
        origin = typing.get_origin(typing_type) or typing_type
        return isinstance(origin, type) and issubclass(origin, Mapping)

    @classmethod
    def match_value(cls, value: Any) -> bool:
        return isinstance(value, Mapping)

    @property
    def value_type(self) -> Any:
        arguments = typing.get_args(self.typing_type)
        return arguments[1] if len(arguments) == 2 else Any

    def store(self, slot: Slot, value: Any) -> list[StoredOutput]:
        if slot.partition_keys == (None,):
            raise UnsupportedTypeError(
                f"DatafileIOManager stores a dict only as partition key -> value for a partitioned asset, but "
                f"{self.host.describe(slot)} is not partitioned and returned {_describe_value(value)}. Return a "
                f"Datafile (e.g. from DatafileResource.new), or give this asset another I/O manager."
            )
        expected = sorted(str(key) for key in slot.partition_keys)
        if not isinstance(value, Mapping) or sorted(map(str, value)) != expected:
            raise UnsupportedTypeError(
                f"{self.host.describe(slot)} materializes {len(expected)} partition(s) in one run, so it must return "
                f"a dict of partition key to value for exactly those partitions ({', '.join(expected[:5])}"
                f"{', ...' if len(expected) > 5 else ''}); got {_describe_value(value)}."
            )
        by_key = {str(key): item for key, item in value.items()}
        stored: list[StoredOutput] = []
        for single in slot.each():
            item = by_key[str(single.partition_key)]
            stored += self.host.router_for(self.value_type, item).store(single, item)
        return stored

    def load(self, slot: Slot) -> dict[str, Any]:
        if slot.partition_keys == (None,):
            raise UnsupportedTypeError(
                f"An input loaded from {self.host.describe(slot)} is annotated as a dict of partitions, but that "
                f"output is not partitioned. Annotate the input with the type of one value instead."
            )
        metadata = slot.context.definition_metadata if isinstance(slot.context, InputContext) else None
        allow_missing = bool((metadata or {}).get(ALLOW_MISSING_PARTITIONS, False))
        router = self.host.router_for(self.value_type)
        singles = list(slot.each())
        # At least one listing request per partition: run `concurrency` at a time (a fan-in over 1000 daily
        # partitions is 1000 requests, 25 s one after another at 25 ms each), and keep the partitions' order.
        concurrency = self.host.store.settings.concurrency
        outcomes = {
            str(outcome.item.partition_key): outcome
            for outcome in run_concurrently(router.load, singles, concurrency=concurrency)
        }
        loaded: dict[str, Any] = {}
        for single in singles:
            outcome = outcomes[str(single.partition_key)]
            if outcome.ok:
                loaded[str(single.partition_key)] = outcome.result
            elif allow_missing and isinstance(outcome.error, FileNotFoundError):
                slot.context.log.warning(
                    f"Skipping a missing partition ({ALLOW_MISSING_PARTITIONS}=True): {outcome.error}"
                )
            else:
                raise outcome.error
        return loaded


def _describe_value(value: Any) -> str:
    described = f"a {type(value).__module__}.{type(value).__qualname__}"
    if isinstance(value, Mapping):
        described += f" with keys {sorted(map(str, value))[:5]}"
    return described


#: The routers the I/O manager tries, in order. Wrappers come first so that `Optional[Datafile]` is not taken for a
#: `Datafile`; a `Dataset` router goes beside `DatafileRouter`.
TYPE_ROUTERS: list[type[TypeRouter]] = [OptionalRouter, PartitionsRouter, DatafileRouter, DatasetRouter]

#: The router for inputs whose annotation says nothing (`Any`): their upstream output is taken to be a Datafile.
DEFAULT_ROUTER: type[TypeRouter] = DatafileRouter

_NO_VALUE: Any = ...


def resolve_router(
    typing_type: Any, host: RouterHost, routers: Sequence[type[TypeRouter]], value: Any = _NO_VALUE
) -> TypeRouter:
    """The first router that claims `typing_type`; for an unannotated output, the first that claims `value`.

    An unannotated input gets `DEFAULT_ROUTER`. A value no router claims falls to the router of its annotation (or
    to `DEFAULT_ROUTER`), whose `store` then raises an error naming the asset and the type it received.
    """
    if not is_unannotated(typing_type):
        for router in routers:
            if router.match_type(typing_type):
                return router(typing_type, host)
        raise UnsupportedTypeError(
            f"DatafileIOManager cannot handle values annotated as {typing_type!r}: it handles "
            f"{', '.join(router.__name__.removesuffix('Router') for router in routers)}. Annotate the asset with one "
            f"of those, or give it another I/O manager."
        )
    if value is not _NO_VALUE:
        for router in routers:
            if router.match_value(value):
                return router(Any, host)
    return DEFAULT_ROUTER(Any, host)


__all__ = [
    "ALLOW_MISSING_PARTITIONS",
    "DEFAULT_ROUTER",
    "TYPE_ROUTERS",
    "DatafileRouter",
    "DatasetRouter",
    "OptionalRouter",
    "PartitionsRouter",
    "RouterHost",
    "Slot",
    "StoredOutput",
    "TypeRouter",
    "resolve_router",
]
