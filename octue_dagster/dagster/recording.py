"""Recording what the I/O manager stored in Dagster's event log: output metadata and data versions.

Dagster 1.13 has no public way for an I/O manager to set a data version (`Output(data_version=...)` and
`MaterializeResult(data_version=...)` are public, but only the asset's own code can return them). The worker sets
it through the step's data-version cache, the mechanism behind `OpExecutionContext.set_data_version`, which Dagster
reads when it records the materialization after `handle_output` returns. tests/test_io_manager.py pins this.
"""

from __future__ import annotations

from dagster import AssetKey, DataVersion, OutputContext

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


def record_outputs(context: OutputContext, stored: list[StoredOutput], partition_count: int) -> None:
    """Record what was stored for one output: its metadata and data version (for a single partition or asset)."""
    if partition_count > 1:
        # Per-partition data versions cannot be set from here; each partition's file is recorded by its path.
        context.add_output_metadata({"partitions_stored": len(stored)})
        return
    if not stored:
        return
    (single,) = stored
    context.add_output_metadata(dict(single.metadata))
    if context.has_asset_key and single.data_version is not None:
        set_step_data_version(context, context.asset_key, single.data_version)


__all__ = ["record_outputs", "set_step_data_version"]
