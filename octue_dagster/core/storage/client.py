"""Making and guarding the google-cloud-storage client a `Store` sends its requests through.

`make_client` turns missing credentials into advice; `guard_client` adds response hooks that make a cut-short or
unreadable answer a dropped connection (which the client retries) instead of a crash inside the client; and
`size_connection_pool` lets as many threads as the store's concurrency share the client's session.
"""

from __future__ import annotations

import os
from typing import Any

import google.auth.exceptions
import requests
import requests.adapters
from google.cloud import storage

from octue_dagster.exceptions import MissingCredentialsError


def size_connection_pool(client: storage.Client, size: int) -> storage.Client:
    """Let `size` requests share the client's session without waiting for or discarding connections.

    google-cloud-storage's client is safe to share between threads (its `requests` session draws connections from
    urllib3's thread-safe pools), but `requests` keeps at most 10 connections per host: more threads than that
    open and throw away a connection per request ("Connection pool is full"). Mounting adapters sized for the
    concurrency keeps every thread on a reused connection. Adapters made for other purposes (mutual TLS) are kept.
    """
    session = client._http
    for scheme in ("https://", "http://"):
        adapter = session.adapters.get(scheme)
        if type(adapter) is not requests.adapters.HTTPAdapter or adapter._pool_maxsize >= size:
            continue
        session.mount(
            scheme,
            requests.adapters.HTTPAdapter(pool_connections=10, pool_maxsize=size, max_retries=adapter.max_retries),
        )
    return client


def make_client(project: str | None = None) -> storage.Client:
    """Create a storage client, turning a missing-credentials failure into a message that says how to fix it."""
    try:
        return guard_client(storage.Client(project=project))
    except google.auth.exceptions.DefaultCredentialsError:
        raise MissingCredentialsError(
            "No Google Cloud credentials were found. Run `gcloud auth application-default login`, set "
            "GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, or set STORAGE_EMULATOR_HOST to use a GCS "
            "emulator."
        ) from None


def guard_client(client: storage.Client) -> storage.Client:
    """Give a client made elsewhere (e.g. by dagster-gcp's `GCSResource`) the check `make_client` adds: an answer
    cut inside its headers is retried as a dropped connection instead of crashing the client (idempotent)."""
    hooks = client._http.hooks["response"]
    for hook in (_reject_unframed_response, _reject_unreadable_answer):
        if hook not in hooks:
            hooks.append(hook)
    return client


def _reject_unframed_response(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    """Treat a success without Content-Length or chunked framing as a dropped connection, so that it is retried.

    GCS frames every answer; one without framing was cut inside its headers, and http.client would otherwise hand
    the client an empty 200, which google-cloud-storage fails on with an AttributeError or TypeError.
    """
    if response.status_code in (200, 201, 206) and response.request.method != "HEAD":
        framed = "Content-Length" in response.headers or "chunked" in response.headers.get("Transfer-Encoding", "")
        if not framed:
            raise requests.exceptions.ConnectionError(
                f"The answer to {response.request.method} {response.url} was cut short (no Content-Length).",
                response=response,
            )


def emulator_host() -> str | None:
    return os.environ.get("STORAGE_EMULATOR_HOST")


def _reject_unreadable_answer(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    """Treat a success whose JSON answer is empty or cut short as a dropped connection, so that it is retried.

    Without this, google-cloud-storage fails on such an answer with a JSONDecodeError, AttributeError or TypeError,
    after a write may already have been carried out. Retried, a read gets a readable answer, and a write (every write
    here carries a generation or metageneration precondition) finds its own write and is recognised by
    `Store._own_write`. Only JSON answers are checked (metadata, listings: never downloaded content), by their first
    and last bytes, without parsing them twice.
    """
    method, url = response.request.method, response.url or ""
    if response.status_code not in (200, 201) or method in ("HEAD", "DELETE") or "Location" in response.headers:
        return  # deletes and resumable-upload initiations answer without a body
    if "json" not in response.headers.get("Content-Type", "") or "alt=media" in url:
        return
    body = response.content.strip()
    if body[:1] not in (b"{", b"[") or body[-1:] not in (b"}", b"]"):
        raise requests.exceptions.ConnectionError(
            f"The answer to {response.request.method} {response.url} could not be read (empty or cut short: "
            f"{body[:60]!r}).",
            response=response,
        )



__all__ = ["emulator_host", "guard_client", "make_client", "size_connection_pool"]
