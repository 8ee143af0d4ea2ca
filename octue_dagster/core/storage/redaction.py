"""Bearer credentials removed from error messages and log lines: upload session URIs, URL signatures and tokens.

Anyone holding a resumable upload's session URI (`...&upload_id=...`) can finish that upload, and anyone holding a
signed URL's `X-Goog-Signature` or an OAuth token can act with it until it expires. google-cloud-storage and
google-api-core name the request's URL in their errors, and Dagster stores an error's message (and those of its
chained causes) in the event log, where everyone who can see the run reads it. So every error the store raises goes
through `redacting_errors`, which rewrites the messages of the whole chain (`__cause__`, `__context__`) with
`redact`, and the library's loggers carry a `RedactingFilter`. The rest of a message (the object, the action, the
status) is kept, so that errors still say what happened.

Example::

    >>> redact("PUT https://storage.googleapis.com/upload/storage/v1/b/b/o?uploadType=resumable&upload_id=ADPy3x")
    'PUT https://storage.googleapis.com/upload/storage/v1/b/b/o?uploadType=resumable&upload_id=[REDACTED]'
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator

REDACTED = "[REDACTED]"

#: Names whose value is a credential wherever `name=value` appears: resumable upload sessions, V4 signed URLs (GCS's
#: and S3-style), OAuth tokens.
SECRET_PARAMETERS = (
    "upload_id",
    "X-Goog-Signature",
    "X-Amz-Signature",
    "X-Amz-Security-Token",
    "access_token",
    "id_token",
    "refresh_token",
    "client_secret",
)
#: Names too common in prose to redact anywhere, whose value is a credential as a URL's query parameter (V2 signed
#: URLs, API keys, generic tokens).
SECRET_QUERY_PARAMETERS = ("Signature", "sig", "token", "key")

#: A credential's characters in a URL or header: URL-safe base64, hex, percent-escapes.
_VALUE = r"[A-Za-z0-9\-._~+/%=]+"
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"(?i)((?<![\w-])(?:%s)=)%s" % ("|".join(map(re.escape, SECRET_PARAMETERS)), _VALUE)),
        rf"\1{REDACTED}",
    ),
    (
        re.compile(r"(?i)([?&](?:%s)=)%s" % ("|".join(map(re.escape, SECRET_QUERY_PARAMETERS)), _VALUE)),
        rf"\1{REDACTED}",
    ),
    # "access_token": "..." in a JSON body quoted by an error.
    (
        re.compile(
            r"(?i)([\"'](?:access_token|id_token|refresh_token|client_secret|private_key|upload_id)[\"']\s*:\s*[\"'])"
            r"[^\"']*"
        ),
        rf"\1{REDACTED}",
    ),
    # Authorization headers, however quoted: `Authorization: Bearer ya29...`, `'Authorization': 'Basic ...'`.
    (
        re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?(?:bearer|basic|token)\s+)[^\s\"',}]+"),
        rf"\1{REDACTED}",
    ),
    # A bearer token on its own (`Bearer <token>`) and Google OAuth access tokens anywhere (`ya29.`).
    (re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9\-._~+/]+=*"), rf"\1{REDACTED}"),
    (re.compile(r"\bya29\.[A-Za-z0-9\-._~+/]+"), REDACTED),
)


def redact(text: str) -> str:
    """`text` with every upload session id, URL signature, token and authorization header value replaced by
    `[REDACTED]`."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def contains_secret(text: str) -> bool:
    """Whether `redact` would change `text` (for checks and tests)."""
    return redact(text) != text


def _redacted(value: object) -> object:
    return redact(value) if isinstance(value, str) else value


def redact_exception(error: BaseException) -> BaseException:
    """Rewrite, in place, the messages of `error` and of every exception chained to it (`__cause__`, `__context__`):
    their `args` and the `message` attribute google-api-core's errors print. Returns `error`."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        with contextlib.suppress(AttributeError, TypeError):
            current.args = tuple(_redacted(argument) for argument in current.args)
        message = getattr(current, "message", None)
        if isinstance(message, str):
            with contextlib.suppress(AttributeError, TypeError):
                current.message = redact(message)  # type: ignore[attr-defined]
        if hasattr(current, "__notes__"):
            with contextlib.suppress(AttributeError, TypeError):
                current.__notes__ = [redact(note) for note in current.__notes__]
        pending += [current.__cause__, current.__context__]
    return error


@contextlib.contextmanager
def redacting_errors() -> Iterator[None]:
    """Re-raise any exception raised in the block with its messages (and its chain's) redacted."""
    try:
        yield
    except BaseException as error:
        redact_exception(error)
        raise


class RedactingFilter(logging.Filter):
    """A logging filter that redacts a record's message (its format and arguments) before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


__all__ = [
    "REDACTED",
    "RedactingFilter",
    "SECRET_PARAMETERS",
    "SECRET_QUERY_PARAMETERS",
    "contains_secret",
    "redact",
    "redact_exception",
    "redacting_errors",
]
