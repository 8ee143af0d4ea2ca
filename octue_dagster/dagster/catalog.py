"""Catalog metadata for stored outputs: column schema, row count and a preview, from the local file the asset wrote.

When the I/O manager stores a `Datafile` (or a `Dataset`) whose content is on local disk, it profiles the file
(`octue_dagster.core.local.profiling`) and records, next to the datafile metadata:

- `dagster/column_schema`: the columns (a CSV's header with types inferred from its first rows; an HDF5 table's
  fields), which Dagster's `build_column_schema_change_checks` compares between materializations;
- `dagster/row_count` (and `dagster/partition_row_count` for a partition): rows after the header, or an HDF5 table's
  length. GraphQL's `Int` is 32-bit: above 2^31-1 the API's `intValue` is null and `intRepr` holds the exact count;
- `preview`: the first rows as a table; `hdf5_tree`: an HDF5 file's groups and datasets with shapes and dtypes;
- `catalog_notes`: why something is missing (a file over the size limit, not UTF-8, ragged rows, ...).

Nothing is downloaded for this: an output returned from GCS without a local copy gets no catalog metadata. A CSV's
rows are counted in the read that hashes it, which fills the hash cache the upload then uses; if the asset hashed the
file itself beforehand (`datafile_output`), that read happens once more, locally. The size
limit (`catalog_max_bytes`, default 256 MiB or `$OCTUE_DAGSTER_CATALOG_MAX_BYTES`) bounds the whole-file read that
counts rows; bigger files get columns and a preview from their first rows only.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from dagster import MetadataValue, TableColumn, TableRecord, TableSchema

from octue_dagster.core.local import profiling
from octue_dagster.core.datafile.datafile import Datafile
from octue_dagster.core.dataset.dataset import Dataset
from octue_dagster.exceptions import InvalidInputError

#: The environment variable giving the default `catalog_max_bytes`.
MAX_BYTES_VARIABLE = "OCTUE_DAGSTER_CATALOG_MAX_BYTES"
#: Asset definition metadata: the HDF5 dataset (path in the file) to describe as the asset's table.
HDF5_TABLE_KEY = "octue_dagster/hdf5_table"
#: A dataset's CSV files are profiled only up to this many (more gets no shared schema).
DATASET_MAX_FILES = 500

COLUMN_SCHEMA_KEY = "dagster/column_schema"
ROW_COUNT_KEY = "dagster/row_count"
PARTITION_ROW_COUNT_KEY = "dagster/partition_row_count"
PREVIEW_KEY = "preview"
TREE_KEY = "hdf5_tree"
NOTES_KEY = "catalog_notes"


@dataclasses.dataclass(frozen=True)
class CatalogSettings:
    """Whether and how far outputs are profiled for the catalog.

    Example: `CatalogSettings(max_bytes=64 * 1024**2)` counts rows of files up to 64 MiB.
    """

    enabled: bool = True
    max_bytes: int = profiling.DEFAULT_MAX_BYTES
    sample_rows: int = profiling.SAMPLE_ROWS
    #: Whether the first rows are copied into Dagster's event log as a preview (not for data that must not be there).
    preview: bool = True

    @classmethod
    def resolve(cls, enabled: bool = True, max_bytes: int | None = None, preview: bool = True) -> CatalogSettings:
        """Settings from the I/O manager's configuration: `max_bytes=None` takes `$OCTUE_DAGSTER_CATALOG_MAX_BYTES`,
        else the default."""
        if max_bytes is None:
            raw = os.environ.get(MAX_BYTES_VARIABLE, "").strip()
            if raw:
                try:
                    max_bytes = int(raw)
                except ValueError:
                    raise InvalidInputError(
                        f"${MAX_BYTES_VARIABLE} must be a whole number of bytes (e.g. 268435456), not {raw!r}."
                    ) from None
            else:
                max_bytes = profiling.DEFAULT_MAX_BYTES
        if max_bytes < 0:
            raise InvalidInputError(
                f"catalog_max_bytes must be 0 or more (0: never read a whole file for the row count); got {max_bytes}."
            )
        return cls(enabled=enabled, max_bytes=max_bytes, preview=preview)


def _local_path(datafile: Datafile) -> str | None:
    """The datafile's local file, if it has one, without downloading anything."""
    if datafile.cloud_path is None:
        return datafile.local_path if os.path.isfile(datafile.local_path) else None
    return datafile.local_path if datafile.exists_locally else None


def profile_datafile(
    datafile: Datafile, settings: CatalogSettings, hdf5_table: str | None = None
) -> profiling.Profile | None:
    """The profile of a datafile's local content, or `None` (no local copy, catalog off, or not a tabular format)."""
    if not settings.enabled:
        return None
    path = _local_path(datafile)
    if path is None:
        return None
    return profiling.profile_file(
        path, max_bytes=settings.max_bytes, sample_rows=settings.sample_rows, hdf5_table=hdf5_table
    )


def table_schema(columns: tuple[profiling.Column, ...] | list[profiling.Column]) -> TableSchema:
    """Dagster's `TableSchema` for profiled columns (what `build_column_schema_change_checks` compares)."""
    return TableSchema(columns=[TableColumn(column.name, column.type) for column in columns])


def profile_metadata(
    profile: profiling.Profile | None, *, partitioned: bool = False, preview: bool = True
) -> dict[str, MetadataValue]:
    """Dagster metadata for a profile (empty for `None`); `preview=False` leaves out the first rows."""
    if profile is None:
        return {}
    metadata: dict[str, MetadataValue] = {}
    if profile.columns is not None:
        metadata[COLUMN_SCHEMA_KEY] = MetadataValue.table_schema(table_schema(profile.columns))
    if profile.row_count is not None:
        metadata[ROW_COUNT_KEY] = MetadataValue.int(profile.row_count)
        if partitioned:
            metadata[PARTITION_ROW_COUNT_KEY] = MetadataValue.int(profile.row_count)
    if profile.columns is not None and preview:
        shown = [column for column in profile.columns[: profiling.PREVIEW_COLUMNS]]
        metadata[PREVIEW_KEY] = MetadataValue.table(
            [TableRecord(row) for row in profile.preview], schema=table_schema(shown)
        )
    if profile.tree:
        metadata[TREE_KEY] = MetadataValue.md(tree_markdown(profile))
    if profile.notes:
        metadata[NOTES_KEY] = MetadataValue.text("; ".join(profile.notes))
    return metadata


def tree_markdown(profile: profiling.Profile) -> str:
    """An HDF5 file's tree as a nested Markdown list: groups, then datasets with their shape and dtype."""
    lines = []
    for node in profile.tree:
        depth = 0 if node.path == "/" else node.path.count("/")
        name = "/" if node.path == "/" else node.path.rsplit("/", 1)[1]
        if node.kind == "group":
            text = _code(name if name == "/" else name + "/")
        else:
            shape = "×".join(map(str, node.shape)) if node.shape else "scalar"
            text = f"{_code(name)} {shape} {_code(node.dtype or '')}"
            if node.path == profile.table:
                text += f" (the table: {profile.row_count} rows)"
        if node.attributes:
            text += " · attributes: " + ", ".join(_code(attribute) for attribute in node.attributes)
        lines.append("  " * depth + "- " + text)
    if profile.tree_truncated:
        lines.append(f"- … more (only the first {profiling.MAX_TREE_NODES} groups and datasets are listed)")
    return "\n".join(lines)


def _code(text: str) -> str:
    """`text` as a Markdown code span: names come from the file, so none of their characters may act as Markdown
    (backticks and line ends, which would end the span or the list item, become plain quotes and spaces)."""
    return "`" + text.replace("`", "'").replace("\r", " ").replace("\n", " ") + "`"


def hdf5_table_of(definition_metadata: Mapping[str, Any] | None) -> str | None:
    """The HDF5 table chosen in an asset's definition metadata (`octue_dagster/hdf5_table`), if any."""
    chosen = (definition_metadata or {}).get(HDF5_TABLE_KEY)
    return None if chosen is None else str(getattr(chosen, "value", chosen))


# --- datasets ---------------------------------------------------------------------------------------------------------


def _merged_type(types: set[str]) -> str:
    if len(types) == 1:
        return next(iter(types))
    return "float" if types == {"int", "float"} else "string"


def dataset_profile(dataset: Dataset, settings: CatalogSettings) -> profiling.Profile | None:
    """One profile for a dataset's CSV files when they share one header: that header's columns (a column's type is
    the same in every file, or `float` for ints and floats, else `string`), the rows of all of them, and a preview of
    the first rows in path order (other files, such as a README, are left out, with a note). `None` for a dataset
    without CSV files; a profile with only notes when the files cannot share one schema (different headers, over
    `DATASET_MAX_FILES` files, or files without a local copy)."""
    if not settings.enabled:
        return None
    every_file = sorted(dataset.files, key=lambda file: str(dataset.relative_path(file)))
    files = [file for file in every_file if os.path.splitext(file.name)[1].lower() in profiling.CSV_DELIMITERS]
    if not files:
        return None
    if len(files) > DATASET_MAX_FILES:
        return profiling.Profile("csv", notes=(f"no column schema: over {DATASET_MAX_FILES} CSV files",))
    found = [profile_datafile(file, settings) for file in files]
    profiles = [profile for profile in found if profile is not None]
    if len(profiles) != len(found):
        return profiling.Profile("csv", notes=("no column schema: some files have no local copy to read",))
    headers = {tuple(column.name for column in profile.columns or ()) for profile in profiles}
    if len(headers) != 1:
        return profiling.Profile("csv", notes=(f"no column schema: the files have {len(headers)} different headers",))
    (names,) = headers
    columns = tuple(
        profiling.Column(name, _merged_type({profile.columns[index].type for profile in profiles if profile.columns}))
        for index, name in enumerate(names)
    )
    counts = [profile.row_count for profile in profiles]
    preview: list[dict[str, profiling.Cell]] = []
    for profile in profiles:
        preview += list(profile.preview[: profiling.PREVIEW_ROWS - len(preview)])
    notes = sorted({note for profile in profiles for note in profile.notes})
    if len(files) != len(every_file):
        left_out = len(every_file) - len(files)
        notes.insert(0, f"columns and rows of the {len(files)} CSV files; {left_out} other file(s) left out")
    return profiling.Profile(
        "csv",
        columns=columns if names else None,
        row_count=sum(count for count in counts if count is not None) if None not in counts else None,
        preview=tuple(preview),
        notes=tuple(notes),
    )


__all__ = [
    "HDF5_TABLE_KEY",
    "MAX_BYTES_VARIABLE",
    "CatalogSettings",
    "dataset_profile",
    "hdf5_table_of",
    "profile_datafile",
    "profile_metadata",
    "tree_markdown",
]
