"""Inputs are read-only: the datafile a step receives belongs to the upstream asset.

An asset that opened its input in mode "a" used to rewrite the upstream object behind Dagster's back (its data
version, URI and downstream staleness all stayed as recorded). `ReadOnlyDatafile` is what the I/O manager hands to
downstream steps: reading works exactly as for any cloud datafile (lazy, checksum-verified, cached), and anything
that would change the stored object (opening for writing, `update_metadata`, `upload` to its own path) raises
`ReadOnlyDatafileError` instead. Labels and tags can still be changed in memory, for example to derive a new
file's metadata from the input's.
"""

from __future__ import annotations

from typing import Any

from octue_dagster.core.datafile.datafile import Datafile
from octue_dagster.core.storage.gcs_path import parse_gcs_path
from octue_dagster.core.datafile.opener import DatafileOpener, parse_mode
from octue_dagster.exceptions import ReadOnlyDatafileError


class ReadOnlyDatafile(Datafile):
    """A cloud datafile that can be read but not changed: the input of a Dagster step."""

    def _refuse(self, action: str) -> ReadOnlyDatafileError:
        return ReadOnlyDatafileError(
            f"Cannot {action} {self}: it is an input of this step and belongs to the upstream asset, so it is "
            f"read-only (changing it would change that asset's data behind Dagster's back). Write a new file and "
            f"return it instead: `new = datafiles.new(\"result.csv\")` (DatafileResource) or "
            f"`Datafile(\"/some/local/path\")`, then `with new.open(\"w\") as file: ...`; to start from this "
            f"file's content, `shutil.copyfile(<input>.local_path, new.local_path)` first."
        )

    def open(self, mode: str = "r", **kwargs: Any) -> DatafileOpener:
        """Open for reading (like the builtin `open`); any writing mode raises `ReadOnlyDatafileError`."""
        base, _ = parse_mode(mode)
        if base != "r":
            raise self._refuse(f"open in mode {mode!r}")
        return super().open(mode, **kwargs)

    def update_metadata(self) -> None:
        """Refused: an input's stored metadata belongs to the upstream asset."""
        raise self._refuse("update the stored metadata of")

    def upload(self, cloud_path: str | None = None, update_metadata: bool = True) -> str:
        """Copy to another `gs://` path (allowed: the input stays as it is); uploading to its own path is refused."""
        if cloud_path is None or parse_gcs_path(cloud_path) == self.gcs_path:
            raise self._refuse("upload to the stored object of")
        return super().upload(cloud_path, update_metadata)

    # Octue's one-store forms are refused too.
    update_cloud_metadata = update_local_metadata = update_metadata


__all__ = ["ReadOnlyDatafile"]
