"""Which failures of the client are which of this library's errors, in one place (as google-cloud-storage's
`retry.py` keeps which failures are retried).

`TRANSIENT_ERRORS` are the failures the client retries, so one that escapes its retries means "GCS is unavailable
now"; `GARBLED_ANSWERS` are answers that could not be read, which writes check against what the object now holds;
`translate_errors` re-raises everything else as the `OctueDagsterError` that says what happened and what to do.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import google.auth.exceptions
import requests
from google.api_core import exceptions as api_exceptions
from google.cloud.storage.exceptions import InvalidResponse

from octue_dagster.core.storage.client import emulator_host as _emulator
from octue_dagster.core.storage import redaction
from octue_dagster.core.storage.gcs_path import GCSPath
from octue_dagster.core.storage.settings import RETRY_DEADLINE_VARIABLE
from octue_dagster.exceptions import (
    ConflictError,
    CloudObjectNotFoundError,
    MissingCredentialsError,
    StoragePermissionError,
    StorageRequestError,
    StorageUnavailableError,
)

#: Failures the client retries; once they escape its retries they mean "GCS is unavailable now".
TRANSIENT_ERRORS = (
    api_exceptions.RetryError,
    api_exceptions.ServerError,
    api_exceptions.TooManyRequests,
    InvalidResponse,
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    ConnectionError,
)

#: An answer GCS sent but that could not be read (garbled or empty JSON). Reads report it as unavailability; writes
#: check whether their write was carried out (see `Store._own_write`).
GARBLED_ANSWERS = (json.JSONDecodeError,)
#: The old private names, kept for code written against them.
_TRANSIENT_ERRORS, _GARBLED_ANSWERS = TRANSIENT_ERRORS, GARBLED_ANSWERS


def _http_error(error: BaseException) -> BaseException:
    """google-resumable-media's `InvalidResponse` (uploads, downloads) as the api-core error of its HTTP status."""
    if isinstance(error, InvalidResponse) and getattr(error, "response", None) is not None:
        try:
            return api_exceptions.from_http_response(error.response)
        except Exception:  # an answer too broken to describe: keep the original
            return error
    return error


@contextlib.contextmanager
def translate_errors(
    path: GCSPath | str, action: str, *, endpoint: str | None = None, deadline: float | None = None
) -> Iterator[None]:
    """Re-raise the client's errors as this library's, naming the object, the action and (where it helps) the
    endpoint; every error that reaches users is an `OctueDagsterError` that says what happened, and neither it nor
    the errors chained to it carry a credential (upload session URIs, signatures, tokens: see `redaction`)."""
    with redaction.redacting_errors(), _translated_errors(path, action, endpoint=endpoint, deadline=deadline):
        yield


@contextlib.contextmanager
def _translated_errors(
    path: GCSPath | str, action: str, *, endpoint: str | None = None, deadline: float | None = None
) -> Iterator[None]:
    where = f" at {endpoint}" if endpoint else ""
    try:
        try:
            yield
        except InvalidResponse as error:
            raise _http_error(error) from error
    except api_exceptions.PreconditionFailed:
        raise ConflictError(
            f"Could not {action} {path}: another writer changed the object since it was read, so nothing was "
            f"overwritten. Re-read the datafile (instantiate it again) and repeat the change."
        ) from None
    except api_exceptions.NotFound as error:
        raise CloudObjectNotFoundError(f"Could not {action} {path}: it does not exist ({error.message}).") from None
    except api_exceptions.Forbidden as error:
        raise StoragePermissionError(
            f"Permission denied to {action} {path}: Google Cloud Storage{where} answered 403 Forbidden, so the "
            f"credentials in use lack the needed IAM permission ({error.message})."
        ) from None
    except api_exceptions.Unauthorized as error:
        if _emulator():
            advice = f"the storage emulator set by STORAGE_EMULATOR_HOST={_emulator()} refused the request"
        else:
            advice = "check the Google Cloud credentials in use (`gcloud auth application-default login`)"
        raise MissingCredentialsError(
            f"Could not {action} {path}: Google Cloud Storage{where} answered 401 Unauthorized ({error.message}); "
            f"{advice}."
        ) from None
    except api_exceptions.Conflict as error:
        raise ConflictError(
            f"Could not {action} {path}: Google Cloud Storage{where} answered 409 Conflict ({error.message}): another "
            f"request is changing the same object or bucket. Nothing was changed; try again."
        ) from None
    except google.auth.exceptions.RefreshError as error:
        raise MissingCredentialsError(
            f"Could not {action} {path}: the Google Cloud credentials could not be refreshed ({error}). Run "
            f"`gcloud auth application-default login` again."
        ) from None
    except google.auth.exceptions.DefaultCredentialsError as error:
        if _emulator():
            # Anonymous credentials (used with an emulator) cannot be refreshed, which is how google-auth meets a 401.
            raise MissingCredentialsError(
                f"Could not {action} {path}: the storage emulator set by STORAGE_EMULATOR_HOST={_emulator()} answered "
                f"401 Unauthorized, and the anonymous credentials used with an emulator cannot be refreshed ({error})."
            ) from None
        raise MissingCredentialsError(
            f"Could not {action} {path}: no Google Cloud credentials were found. Run `gcloud auth "
            f"application-default login` or set STORAGE_EMULATOR_HOST."
        ) from None
    except _TRANSIENT_ERRORS as error:
        # Raised once the client's retries are used up: say so, rather than leak the transport's own exception.
        within = f" within the {deadline:g} s retry deadline" if deadline is not None else ""
        raise StorageUnavailableError(
            f"Could not {action} {path}: Google Cloud Storage{where} did not answer successfully{within}, even after "
            f"retries ({type(error).__name__}: {str(error)[:300]}). Each object is as it was or fully changed, never "
            f"half changed; try again later, or allow longer with StoreSettings(retry_deadline_seconds=...) or "
            f"{RETRY_DEADLINE_VARIABLE}."
        ) from error
    except api_exceptions.ClientError as error:
        hint = ""
        if "requester pays" in str(error.message).lower() or "user project" in str(error.message).lower():
            hint = (
                " The bucket is requester-pays: give the project to bill with Store(user_project=...) (or "
                "StoreSettings(user_project=...))."
            )
        raise StorageRequestError(
            f"Could not {action} {path}: Google Cloud Storage{where} refused the request with {error.code} "
            f"{getattr(error, 'reason', None) or type(error).__name__} ({error.message}).{hint}"
        ) from None
    except _GARBLED_ANSWERS as error:
        raise StorageUnavailableError(
            f"Could not {action} {path}: the answer from Google Cloud Storage{where} could not be read (garbled or "
            f"empty: {error}). Nothing is known to have changed; try again."
        ) from None


__all__ = ["GARBLED_ANSWERS", "TRANSIENT_ERRORS", "translate_errors"]
