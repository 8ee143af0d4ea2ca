"""Datasets behind signed URLs, as Octue's SDK makes and reads them.

Octue's `Dataset.generate_signed_url()` writes a JSON object under the dataset's folder
(`<folder>/.signed_metadata_files/<name>`) holding the dataset's serialisation with each file given as a signed URL,
and returns a signed URL to that object. `Dataset(path=<that URL>)` reads the object and makes a read-only dataset
of it: its id, name, labels and tags, and one Datafile per file URL. Octue services pass such URLs in manifests
(`Manifest.use_signed_urls_for_datasets()`), so a service with no credentials for the bucket can read the data.

A signed URL carries a credential (its signature), so it never appears in a log line or an error message here:
`redacted` (shared with `UrlDatafile`) keeps the part before the query.
"""

from __future__ import annotations

import concurrent.futures
import logging
import urllib.parse
from typing import Any

import requests

from octue_dagster.core.datafile.datafile import Datafile
from octue_dagster.core.datafile.url_datafile import is_url, redacted
from octue_dagster.core.metadata import values as md
from octue_dagster.core.storage.store import Store
from octue_dagster.core.dataset.dataset_files import SIGNED_METADATA_DIRECTORY
from octue_dagster.exceptions import InvalidMetadataError

logger = logging.getLogger(__name__)

#: Seconds to wait for the server to answer, and for each read of the answer.
TIMEOUT_SECONDS = 60
#: How many of a signed dataset's files are looked up (one HEAD request each) at once.
MAX_CONCURRENT_HEADS = 16
#: A signed dataset document is a small JSON object; anything bigger is not one.
MAX_DOCUMENT_BYTES = 64 * 1024 * 1024


def url_name(url: str) -> str:
    """The last part of a URL's path, without its query (what Octue's SDK calls a URL dataset's default name)."""
    return urllib.parse.unquote(urllib.parse.urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1])


def folder_of_signed_dataset(url: str) -> str:
    """The folder part of a signed dataset URL (the path before `.signed_metadata_files`), without the query."""
    return url.split("?", 1)[0].split(SIGNED_METADATA_DIRECTORY, 1)[0].rstrip("/")


def relative_path_in_signed_dataset(dataset_url: str, file_url: str) -> str | None:
    """Where a file (given by its signed URL) sits in the dataset whose signed URL is `dataset_url`, as Octue's SDK
    reckons it (both paths without their queries); `None` if the file is not under the dataset's folder."""
    folder = urllib.parse.urlsplit(folder_of_signed_dataset(dataset_url))
    file = urllib.parse.urlsplit(file_url.split("?", 1)[0])
    if (folder.scheme, folder.netloc) != (file.scheme, file.netloc) or not file.path.startswith(folder.path + "/"):
        return None
    return urllib.parse.unquote(file.path[len(folder.path) + 1 :])


def read_signed_dataset_document(url: str) -> dict[str, Any]:
    """The dataset document a signed URL points at, or `{}` if it cannot be fetched.

    As in Octue's SDK, an unreachable or unreadable URL is logged as an error (here without the signature) and the
    dataset proceeds without stored metadata (so with no files) rather than failing.
    """
    try:
        with requests.get(url, timeout=TIMEOUT_SECONDS, stream=True) as response:
            response.raise_for_status()
            body = response.raw.read(MAX_DOCUMENT_BYTES + 1, decode_content=True)
        if len(body) > MAX_DOCUMENT_BYTES:
            raise ValueError(f"the answer is larger than {MAX_DOCUMENT_BYTES} bytes")
        document = md.decode_json(body)
        if not isinstance(document, dict):
            raise ValueError("the answer is not a JSON object")
    except (requests.RequestException, ValueError) as error:
        if isinstance(error, requests.HTTPError) and error.response is not None:
            reason = f"HTTP {error.response.status_code}"
        else:
            # A request error's text may quote the URL with its query: only what comes before the query is kept.
            reason = f"{type(error).__name__}: {str(error).split('?', 1)[0]}"
        logger.error(
            "Couldn't access cloud dataset metadata for %r; proceeding without cloud metadata. (%s)",
            redacted(url),
            reason,
        )
        return {}
    return document


def read_signed_dataset(url: str, store: Store | None) -> tuple[dict[str, Any], list[Datafile]]:
    """The metadata (id, name, labels, tags) and the files of the dataset a signed URL points at.

    Each file is a read-only `Datafile` of its own signed URL, which costs one `HEAD` request (its Octue metadata,
    size and crc32c); they are made concurrently, at most `MAX_CONCURRENT_HEADS` at a time.
    """
    document = read_signed_dataset_document(url)
    metadata = {key: document[key] for key in ("id", "name", "labels", "tags") if key in document}
    paths = document.get("files", [])
    if not isinstance(paths, list) or not all(isinstance(path, str) and path for path in paths):
        raise InvalidMetadataError(
            f"The dataset metadata at {redacted(url)} is not a signed dataset: its 'files' entry is not a list of URLs."
        )
    if not paths:
        return metadata, []
    # Each file costs one small request, not a transfer: a plain pool of at most 16 threads, without the memory
    # budget and progress bar of the transfer runner.
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(len(paths), MAX_CONCURRENT_HEADS)) as pool:
        files = list(pool.map(lambda path: Datafile(path, store=store), paths))
    return metadata, files


__all__ = [
    "folder_of_signed_dataset",
    "is_url",
    "read_signed_dataset",
    "read_signed_dataset_document",
    "redacted",
    "relative_path_in_signed_dataset",
    "url_name",
]
