"""`StoreSettings`: how a `Store` waits and retries, as data (the retry rules themselves are the client's).

Example::

    store = Store(settings=StoreSettings(retry_deadline_seconds=60, concurrency=32))
"""

from __future__ import annotations

import dataclasses
import os

from google.api_core.retry import Retry
from google.cloud.storage.retry import DEFAULT_RETRY

from octue_dagster.core.storage.runner import DEFAULT_CONCURRENCY, validate_concurrency
from octue_dagster.exceptions import InvalidInputError

#: The environment variable that sets the default retry deadline (seconds) of every `Store`.
RETRY_DEADLINE_VARIABLE = "OCTUE_DAGSTER_RETRY_DEADLINE_SECONDS"
DEFAULT_RETRY_DEADLINE_SECONDS = 30.0


@dataclasses.dataclass(frozen=True)
class StoreSettings:
    """How a `Store` waits and retries, as data: one value to configure, compare and pass between processes.

    Retries follow google-cloud-storage's own rules (which failures are transient); these numbers say how long.
    """

    #: How long one operation keeps retrying transient failures (and an unreachable endpoint) before it raises
    #: `StorageUnavailableError`; the default is 30 s, or `$OCTUE_DAGSTER_RETRY_DEADLINE_SECONDS`. An attempt under
    #: way when the deadline passes still finishes, so the worst case is this plus one connect timeout.
    retry_deadline_seconds: float = dataclasses.field(default_factory=lambda: _deadline_from_environment())
    #: The first pause between retries; each later pause doubles, up to `maximum_retry_delay_seconds`.
    initial_retry_delay_seconds: float = 1.0
    maximum_retry_delay_seconds: float = 60.0
    #: How long to wait for a connection, and then for each answer.
    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 60.0
    #: Objects per list request (GCS allows up to 1000): each page is one request carrying every object's metadata.
    list_page_size: int = 1000
    #: Requests in flight at once for many-object work (re-tagging, bulk deletes): GCS answers in 20-40 ms, so
    #: overlapping requests is what makes thousands of objects fast. 1 runs one request at a time.
    concurrency: int = DEFAULT_CONCURRENCY

    def __post_init__(self) -> None:
        validate_concurrency(self.concurrency)

    #: The project billed for requests to requester-pays buckets (`None`: the bucket's owner pays).
    user_project: str | None = None

    @property
    def retry(self) -> Retry:
        """The client's default retry rules with these pauses and deadline."""
        return DEFAULT_RETRY.with_delay(
            initial=self.initial_retry_delay_seconds, maximum=self.maximum_retry_delay_seconds, multiplier=2.0
        ).with_timeout(self.retry_deadline_seconds)

    @property
    def timeout(self) -> tuple[float, float]:
        """(connect, read) seconds, as `requests` takes them."""
        return (self.connect_timeout_seconds, self.read_timeout_seconds)


def _deadline_from_environment() -> float:
    text = os.environ.get(RETRY_DEADLINE_VARIABLE)
    if not text:
        return DEFAULT_RETRY_DEADLINE_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise InvalidInputError(
            f"{RETRY_DEADLINE_VARIABLE}={text!r} is not a retry deadline: give a positive number of seconds, such as 30."
        )
    return value


__all__ = ["DEFAULT_RETRY_DEADLINE_SECONDS", "RETRY_DEADLINE_VARIABLE", "StoreSettings"]
