"""The I/O manager's type routing: which router claims which annotation or value, and Optional and dict-of-partition
outputs and inputs in real Dagster runs against the emulator."""

from typing import Any, Optional

import pytest
from dagster import (
    AllPartitionMapping,
    AssetExecutionContext,
    AssetIn,
    BackfillPolicy,
    DagsterInstance,
    StaticPartitionsDefinition,
    asset,
    materialize,
)
from dagster_gcp import GCSResource

from octue_dagster import Datafile
from octue_dagster.dagster.io_manager import DatafileIOManager
from octue_dagster.dagster.resources import DatafileResource
from octue_dagster.dagster.type_routers import (
    TYPE_ROUTERS,
    DatafileRouter,
    OptionalRouter,
    PartitionsRouter,
    resolve_router,
)


class _Host:
    """Enough of a router host for resolving routers (no storage)."""

    def router_for(self, typing_type, value=...):
        return resolve_router(typing_type, self, TYPE_ROUTERS, value)


@pytest.mark.parametrize(
    ("typing_type", "value", "expected"),
    [
        (Datafile, ..., DatafileRouter),
        (Optional[Datafile], ..., OptionalRouter),
        (Datafile | None, ..., OptionalRouter),
        (dict[str, Datafile], ..., PartitionsRouter),
        (dict, ..., PartitionsRouter),
        (Any, ..., DatafileRouter),
        (Any, {"a": 1}, PartitionsRouter),
        (Any, "text", DatafileRouter),
    ],
)
def test_routers_are_chosen_by_annotation_then_by_value(typing_type, value, expected):
    assert type(_Host().router_for(typing_type, value)) is expected


def test_optional_wraps_the_router_of_its_argument_and_dicts_their_value_type():
    host = _Host()
    assert host.router_for(Optional[Datafile]).inner_type is Datafile
    assert host.router_for(dict[str, Datafile]).value_type is Datafile
    assert host.router_for(dict).value_type is Any


def test_an_annotation_no_router_handles_is_named_in_the_error():
    with pytest.raises(TypeError, match="annotated as <class 'int'>.*Optional, Partitions, Datafile"):
        _Host().router_for(int)


def _resources(bucket: str) -> dict:
    gcs = GCSResource()
    return {"io_manager": DatafileIOManager(bucket=bucket, gcs=gcs), "datafiles": DatafileResource(gcs=gcs)}


SEEN: dict[str, Any] = {}


@asset
def maybe(context: AssetExecutionContext, datafiles: DatafileResource) -> Optional[Datafile]:
    if not SEEN.get("write_maybe"):
        return None
    datafile = datafiles.new("maybe.txt")
    with datafile.open("w") as file:
        file.write("present")
    return datafile


@asset
def reads_maybe(maybe: Optional[Datafile]) -> None:
    SEEN["reads_maybe"] = None if maybe is None else maybe.cloud_path


def test_optional_none_stores_nothing_and_loads_as_none(bucket, client):
    instance = DagsterInstance.ephemeral()
    SEEN["write_maybe"] = False
    assert materialize([maybe, reads_maybe], resources=_resources(bucket), instance=instance).success
    assert SEEN["reads_maybe"] is None
    assert list(client.list_blobs(bucket)) == []

    SEEN["write_maybe"] = True
    assert materialize([maybe, reads_maybe], resources=_resources(bucket), instance=instance).success
    assert SEEN["reads_maybe"] is not None and SEEN["reads_maybe"].endswith("/maybe.txt")


def _range(first: str, last: str) -> dict[str, str]:
    """Run tags for one run over a range of partitions (what a single-run backfill launches)."""
    return {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}


DAYS = StaticPartitionsDefinition(["d1", "d2", "d3"])


@asset(partitions_def=DAYS, backfill_policy=BackfillPolicy.single_run())
def days(context: AssetExecutionContext, datafiles: DatafileResource) -> dict[str, Datafile]:
    result = {}
    for key in context.partition_keys:
        datafile = datafiles.new(f"{key}.txt")
        with datafile.open("w") as file:
            file.write(f"day {key}")
        result[key] = datafile
    return result


@asset(ins={"days": AssetIn(partition_mapping=AllPartitionMapping())})
def all_days(days: dict[str, Datafile]) -> None:
    SEEN["all_days"] = {}
    for key, datafile in days.items():
        with datafile.open() as file:
            SEEN["all_days"][key] = file.read()


def test_a_run_over_several_partitions_stores_a_dict_and_loads_one_back(bucket):
    instance = DagsterInstance.ephemeral()
    result = materialize(
        [days],
        tags=_range("d1", "d3"),
        resources=_resources(bucket),
        instance=instance,
    )
    assert result.success
    assert materialize([days.to_source_asset(), all_days], resources=_resources(bucket), instance=instance).success
    assert SEEN["all_days"] == {"d1": "day d1", "d2": "day d2", "d3": "day d3"}


@asset(partitions_def=DAYS, backfill_policy=BackfillPolicy.single_run())
def wrong_keys(context: AssetExecutionContext, datafiles: DatafileResource) -> dict[str, Datafile]:
    datafile = datafiles.new("only.txt")
    with datafile.open("w") as file:
        file.write("one")
    return {"d1": datafile}


def test_a_dict_missing_partitions_of_the_run_is_rejected_naming_them(bucket):
    result = materialize(
        [wrong_keys],
        tags=_range("d1", "d2"),
        resources=_resources(bucket),
        raise_on_error=False,
    )
    assert not result.success
    text = result.get_step_failure_events()[0].event_specific_data.error.to_string()
    assert "2 partition(s)" in text and "d1, d2" in text and "['d1']" in text, text
