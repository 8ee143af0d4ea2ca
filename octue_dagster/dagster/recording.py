"""Recording what the I/O manager stored in Dagster's event log: output metadata and data versions.

Dagster 1.13 has no public way for an I/O manager to set a data version (`Output(data_version=...)` and
`MaterializeResult(data_version=...)` are public, but only the asset's own code can return them). The worker sets
it through the step's data-version cache, the mechanism behind `OpExecutionContext.set_data_version`, which Dagster
reads when it records the materialization after `handle_output` returns. tests/test_io_manager.py pins this.

A run over several partitions (a single-run backfill) records one materialization per partition. Each gets its own
metadata (URI, crc32c, size, labels, tags, id, generation) through the step's partition-scoped asset metadata, the
mechanism behind the public `context.add_asset_metadata(..., partition_key=...)`. Their data version cannot differ:
Dagster 1.13 computes the `dagster/data_version` tag once per asset key and step (`_get_output_asset_events` in
`dagster/_core/execution/plan/execute_step.py`) and copies it onto every partition's event; partition-scoped
metadata cannot set tags, and for materializable assets only materializations carry data versions. So the shared
data version is a digest of the partitions' crc32cs (`batch_data_version`): re-materializing identical content gives
every partition the same data version again (downstream assets stay fresh), and any changed partition changes it
for all partitions of that run. tests/test_backfills.py pins this.
"""

from __future__ import annotations

from dagster import AssetKey, DataVersion, OutputContext

from octue_dagster.core.local.hashing import crc32c_base64
from octue_dagster.dagster.type_routers import StoredOutput


def set_step_data_version(context: OutputContext, asset_key: AssetKey, version: DataVersion) -> None:
    """Make `version` the data version Dagster records for this materialization.

    A data version given explicitly with `Output`/`MaterializeResult` still takes precedence. Outside a real run
    (e.g. `build_output_context`) there is no step and nothing to do.
    """
    try:
        step_context = context.step_context
    except Exception:
        return
    setter = getattr(step_context, "set_data_version", None)
    if setter is not None:
        setter(asset_key, version)


def batch_data_version(stored: list[StoredOutput]) -> DataVersion:
    """One data version for several partitions stored by one step: a digest of each partition's key and data version,
    so it is the same exactly when every partition's content is the same."""
    lines = sorted(
        f"{output.partition_key}\x00{output.data_version.value}" for output in stored if output.data_version is not None
    )
    return DataVersion(crc32c_base64("\n".join(lines).encode("utf-8")))


def record_outputs(context: OutputContext, stored: list[StoredOutput], partition_count: int) -> None:
    """Record what was stored for one output: its metadata and data version, per partition when there are several."""
    if not stored:
        return
    if partition_count == 1:
        (single,) = stored
        context.add_output_metadata(dict(single.metadata))
        if context.has_asset_key and single.data_version is not None:
            set_step_data_version(context, context.asset_key, single.data_version)
        return
    context.add_output_metadata({"partitions_stored": len(stored)})
    if not context.has_asset_key:
        return
    step_context = context.step_context
    for output in stored:
        step_context.add_asset_metadata(
            dict(output.metadata), asset_key=context.asset_key, partition_key=output.partition_key
        )
    set_step_data_version(context, context.asset_key, batch_data_version(stored))


__all__ = ["batch_data_version", "record_outputs", "set_step_data_version"]
