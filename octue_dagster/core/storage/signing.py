"""V4 signed URLs for objects: time-limited links that let anyone holding them read one object, without credentials.

Signing is done by google-cloud-storage. With a service-account key (in the credentials given, the client's, or
`GOOGLE_APPLICATION_CREDENTIALS`) it needs no request at all; with credentials that hold no key (Compute Engine,
Cloud Run, impersonation) it signs through the IAM `signBlob` API as the service account, as Octue's SDK does.
"""

from __future__ import annotations

import datetime
import os

import google.auth
import google.auth.exceptions
from google.auth import credentials as auth_credentials
from google.auth.transport import requests as auth_requests
from google.cloud import storage

from octue_dagster.core.storage import redaction
from octue_dagster.core.storage.gcs_path import GCSPath
from octue_dagster.exceptions import InvalidInputError, MissingCredentialsError

#: GCS refuses V4 signed URLs that live longer than seven days.
MAX_EXPIRATION = datetime.timedelta(days=7)
EMULATOR_VARIABLE = "STORAGE_EMULATOR_HOST"


def expiration_seconds(expiration: datetime.timedelta | datetime.datetime) -> datetime.timedelta:
    """A validated lifetime: a timedelta, or an aware datetime in the future, no more than seven days away."""
    if isinstance(expiration, datetime.datetime):
        if expiration.tzinfo is None:
            raise InvalidInputError(f"The expiration {expiration!r} is naive: give a timezone-aware datetime.")
        expiration = expiration - datetime.datetime.now(datetime.timezone.utc)
    if not isinstance(expiration, datetime.timedelta):
        raise InvalidInputError(
            f"The expiration must be a datetime.timedelta or an aware datetime.datetime; got {expiration!r}."
        )
    if expiration <= datetime.timedelta(0) or expiration > MAX_EXPIRATION:
        raise InvalidInputError(
            f"A signed URL must expire after a positive time of at most 7 days (a GCS limit); got {expiration}."
        )
    return expiration


def _signing_arguments(
    client: storage.Client, credentials: auth_credentials.Credentials | None
) -> dict[str, object]:
    """How to sign: with a key held by the credentials, else through IAM as the credentials' service account."""
    candidates = [credentials] if credentials is not None else [getattr(client, "_credentials", None)]
    for candidate in candidates:
        if isinstance(candidate, auth_credentials.Signing):
            return {"credentials": candidate}
    if credentials is None:
        try:
            found, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
        except google.auth.exceptions.DefaultCredentialsError:
            found = None
        if isinstance(found, auth_credentials.Signing):
            return {"credentials": found}
        credentials = found
    email = getattr(credentials, "service_account_email", None)
    if credentials is not None and email:
        try:
            credentials.refresh(auth_requests.Request())
        except google.auth.exceptions.RefreshError as error:
            raise MissingCredentialsError(
                f"Could not refresh credentials to sign a URL: {redaction.redact(str(error))}"
            ) from None
        return {"service_account_email": email, "access_token": credentials.token}
    raise MissingCredentialsError(
        "Signing a URL needs a service account: set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, "
        "pass credentials=google.oauth2.service_account.Credentials..., or run as a service account (Compute "
        "Engine, Cloud Run) allowed to call iam.serviceAccounts.signBlob."
    )


def generate_signed_url(
    client: storage.Client,
    path: GCSPath,
    expiration: datetime.timedelta | datetime.datetime = MAX_EXPIRATION,
    *,
    credentials: auth_credentials.Credentials | None = None,
    generation: int | None = None,
) -> str:
    """A V4 signed URL that reads the object at `path` (at `generation`, if given) until it expires."""
    lifetime = expiration_seconds(expiration)
    endpoint = os.environ.get(EMULATOR_VARIABLE)
    blob = client.bucket(path.bucket).blob(path.name)
    options = {
        "expiration": lifetime,
        "version": "v4",
        "method": "GET",
        "generation": generation,
        "api_access_endpoint": endpoint or None,
        "scheme": "http" if endpoint and endpoint.startswith("http://") else "https",
    }
    try:
        signer = _signing_arguments(client, credentials)
    except MissingCredentialsError as missing:
        # As Octue's SDK does last: let google-cloud-storage sign with the client's own credentials (it can if they
        # hold a key it finds itself); when they cannot sign, our error says what to do.
        try:
            with redaction.redacting_errors():
                return blob.generate_signed_url(**options)  # type: ignore[arg-type]
        except (AttributeError, TypeError, google.auth.exceptions.GoogleAuthError):
            raise missing from None
    with redaction.redacting_errors():  # a failed IAM signBlob call names the request, with its access token
        return blob.generate_signed_url(**options, **signer)  # type: ignore[arg-type]
