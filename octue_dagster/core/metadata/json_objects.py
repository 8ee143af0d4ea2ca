"""Small JSON documents stored as GCS objects (a dataset's `.octue` object, a manifest), in Octue's JSON dialect."""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Mapping
from typing import Any

from octue_dagster.core.local import hashing

from octue_dagster.core.metadata import values as md
from octue_dagster.core.storage.store import ObjectInfo, Store
from octue_dagster.core.storage.gcs_path import GCSPath
from octue_dagster.exceptions import CorruptMetadataFileError


def parse_document(content: bytes, where: str) -> dict[str, Any]:
    """Decode a JSON object written by this library or Octue's SDK; anything else raises naming `where`."""
    try:
        document = md.decode_json(content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise CorruptMetadataFileError(where, f"not JSON: {error}") from None
    if not isinstance(document, dict):
        raise CorruptMetadataFileError(where, "its top level is not a JSON object")
    return document


def read_document(store: Store, info: ObjectInfo) -> dict[str, Any]:
    """Download and decode the JSON object described by `info` (exactly that generation: one request)."""
    buffer = io.BytesIO()
    store.download_file(info, buffer)
    return parse_document(buffer.getvalue(), str(info.path))


def write_document(
    store: Store,
    path: GCSPath,
    document: Mapping[str, Any],
    *,
    if_generation_match: int,
    indent: int | None = None,
    sort_keys: bool = False,
) -> ObjectInfo:
    """Store `document` as JSON at `path`, only over the given generation (0: only if there is no object yet)."""
    content = md.encode_json(document, indent=indent, sort_keys=sort_keys).encode("utf-8")
    with tempfile.TemporaryDirectory(prefix="octue-dagster-json-") as folder:
        local = os.path.join(folder, "document.json")
        with open(local, "wb") as file:
            file.write(content)
        return store.upload_file(
            local,
            path,
            crc32c=hashing.crc32c_base64(content),
            custom_metadata={},
            if_generation_match=if_generation_match,
            content_type="text/plain",
        )
