"""Every storage operation through every HTTP status GCS can answer, and through garbled and empty answers.

Each case arms one fault in `faultproxy.FaultProxy` on the operation's main request, runs the `Store` operation, and
checks the outcome: a success leaves exactly the new state (a write whose answer was garbled is recognised as the
writer's own), and a failure is one of the library's errors (never google-api-core's, requests' or json's), of the
class that says what happened, with a message naming the object. Transient statuses (408, 429, 5xx) are retried;
the same statuses without end raise `StorageUnavailableError` once the retry deadline has passed.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
from collections.abc import Callable
from typing import Any

import pytest

from octue_dagster.core.metadata import values as md
from octue_dagster.core.storage import store as storage
from octue_dagster.core.storage import writes
from octue_dagster.core.storage.gcs_path import GCSPath
from octue_dagster.core.storage.store import Store, StoreSettings
from octue_dagster.exceptions import (
    ChecksumMismatchError,
    CloudObjectNotFoundError,
    ConflictError,
    MissingCredentialsError,
    OctueDagsterError,
    StoragePermissionError,
    StorageRequestError,
    StorageUnavailableError,
)
from octue_dagster.testing.emulator import EMULATOR_VARIABLE

from faultproxy import Fault, FaultProxy
from reliability_summary import save_summary

SMALL = b"small content " * 100
#: Over the (test-lowered) multipart limit: sent as a resumable upload in two 256 KiB chunks.
LARGE = bytes(range(256)) * 1200
METADATA = md.to_cloud_metadata("a1b2c3d4-0000-4000-8000-000000000001", None, {"matrix"}, {"case": 1})
TRANSIENT = (408, 429, 500, 502, 503, 504)
STATUSES = (400, 401, 403, 404, 408, 409, 412, 429, 500, 502, 503, 504)
#: What each non-transient status must become (404 on a metadata read means "no such object": `None`, no error).
EXPECTED_ERROR = {
    400: StorageRequestError,
    401: MissingCredentialsError,
    403: StoragePermissionError,
    404: CloudObjectNotFoundError,
    409: ConflictError,
    412: ConflictError,
}

#: Quick retries, but timeouts and a deadline long enough that a loaded machine never turns a fault into a timeout
#: (and the timeout's retry into a success) or runs out of time: these faults are answers, not stalls. Faults without
#: end use `ENDLESS_SETTINGS`, to reach the deadline quickly.
SETTINGS = StoreSettings(retry_deadline_seconds=15, initial_retry_delay_seconds=0.02, maximum_retry_delay_seconds=0.2,
                         connect_timeout_seconds=5, read_timeout_seconds=10)
ENDLESS_SETTINGS = dataclasses.replace(SETTINGS, retry_deadline_seconds=2)

_summary: dict[str, Any] = {"cases": 0, "outcomes": {}}


@pytest.fixture(scope="module", autouse=True)
def write_summary():
    yield
    save_summary("status_matrix", _summary)


@dataclasses.dataclass
class World:
    store: Store  # through the proxy
    direct: Store  # straight to the emulator, to check the state
    bucket: str
    folder: Any

    def path(self, name: str) -> GCSPath:
        return GCSPath(self.bucket, name)

    def put(self, name: str, content: bytes = SMALL) -> storage.ObjectInfo:
        blob = self.direct.client.bucket(self.bucket).blob(name)
        blob.metadata = METADATA
        blob.upload_from_string(content)
        return self.direct.require_object(self.path(name))

    def local(self, content: bytes) -> str:
        path = self.folder / "upload.bin"
        path.write_bytes(content)
        return str(path)


@dataclasses.dataclass(frozen=True)
class Operation:
    name: str
    method: str
    path: str
    #: Matching requests to let through before the fault (the resumable upload's first chunk).
    skip: int
    run: Callable[[World], Any]
    #: Checks the state after a success (the operation's result is passed in).
    check: Callable[[World, Any], None]


def _get(world: World) -> Any:
    world.put("source")
    return world.store.get_object(world.path("source"))


def _check_get(world: World, result: Any) -> None:
    assert result is None or result.custom_metadata == METADATA


def _list(world: World) -> Any:
    world.put("folder/a")
    world.put("folder/b")
    return [info.path.name for info in world.store.list_objects(world.path("folder/"))]


def _check_list(world: World, result: Any) -> None:
    assert result == ["folder/a", "folder/b"]


def _upload(content: bytes) -> Callable[[World], Any]:
    def run(world: World) -> Any:
        local = world.local(content)
        return world.store.upload_file(local, world.path("uploaded"), crc32c=md.crc32c_base64(content),
                                       custom_metadata=METADATA, if_generation_match=0)

    return run


def _check_upload(content: bytes) -> Callable[[World, Any], None]:
    def check(world: World, result: Any) -> None:
        stored = world.direct.require_object(world.path("uploaded"))
        assert result.generation == stored.generation and stored.crc32c == md.crc32c_base64(content)
        assert dict(stored.custom_metadata) == METADATA

    return check


def _download(world: World) -> Any:
    info = world.put("source")
    buffer = io.BytesIO()
    world.store.download_file(info, buffer)
    return buffer.getvalue()


def _check_download(world: World, result: Any) -> None:
    assert result == SMALL


def _patch(world: World) -> Any:
    world.put("source")
    return world.store.patch_metadata(world.path("source"), lambda info: {**info.custom_metadata, "octue__tags": '{"case": 2}'})


def _check_patch(world: World, result: Any) -> None:
    stored = world.direct.require_object(world.path("source"))
    assert stored.custom_metadata["octue__tags"] == '{"case": 2}' and result.metageneration == stored.metageneration


def _copy(world: World) -> Any:
    info = world.put("source")
    return world.store.copy_object(info, world.path("copy"), custom_metadata=METADATA, if_generation_match=0)


def _check_copy(world: World, result: Any) -> None:
    stored = world.direct.require_object(world.path("copy"))
    assert stored.crc32c == md.crc32c_base64(SMALL) and result.generation == stored.generation


def _delete(world: World) -> Any:
    info = world.put("source")
    return world.store.delete_object(world.path("source"), if_generation_match=info.generation)


def _check_delete(world: World, result: Any) -> None:
    assert world.direct.get_object(world.path("source")) is None


OPERATIONS = [
    Operation("get", "GET", r"/o/source\?", 0, _get, _check_get),
    Operation("list", "GET", r"/o\?", 0, _list, _check_list),
    Operation("upload-small", "POST", r"/upload/.*multipart", 0, _upload(SMALL), _check_upload(SMALL)),
    # The fault hits the last request of the upload: the one that commits the object and answers with its metadata.
    Operation("upload-resumable", "PUT", r"upload_id=", 1, _upload(LARGE), _check_upload(LARGE)),
    Operation("download", "GET", r"alt=media", 0, _download, _check_download),
    Operation("patch", "PATCH", r"/o/source", 0, _patch, _check_patch),
    Operation("copy", "POST", r"rewriteTo", 0, _copy, _check_copy),
    Operation("delete", "DELETE", r"/o/source", 0, _delete, _check_delete),
]
FAULTS: dict[str, Callable[[Operation], Fault]] = {
    **{f"{status}": (lambda status: lambda op: Fault("status", op.method, op.path, status=status, skip=op.skip))(status)
       for status in STATUSES},
    **{f"{status}-always": (lambda status: lambda op: Fault("status", op.method, op.path, status=status, times=10_000,
                                                            skip=op.skip))(status) for status in (429, 503)},
    "garbled": lambda op: Fault("garble", op.method, op.path, body=b'{"kind": "storage#obj', skip=op.skip),
    "empty": lambda op: Fault("garble", op.method, op.path, body=b"", skip=op.skip),
}


@pytest.fixture
def world(proxy: FaultProxy, emulator, client, bucket, tmp_path, monkeypatch) -> World:
    proxy.clear()
    monkeypatch.setenv(EMULATOR_VARIABLE, proxy.url)
    through_proxy = storage.make_client()
    monkeypatch.setenv(EMULATOR_VARIABLE, emulator.url)
    monkeypatch.setattr(writes, "MULTIPART_LIMIT_BYTES", 64 * 1024)
    monkeypatch.setattr("google.cloud.storage.blob._MAX_MULTIPART_SIZE", 64 * 1024)
    monkeypatch.setattr(writes, "UPLOAD_CHUNK_BYTES", 256 * 1024)
    return World(Store(through_proxy, settings=SETTINGS), Store(client), bucket, tmp_path)


#: What a credential looks like in text, whatever redacts it: an upload session, a signature, a token, a header.
CREDENTIAL_MARKS = re.compile(
    r"(?i)(upload_id=(?!\[REDACTED\])|X-Goog-Signature=(?!\[REDACTED\])|access_token=(?!\[REDACTED\])"
    r"|Bearer (?!\[REDACTED\]))"
)


def _secrets_seen(proxy: FaultProxy) -> set[str]:
    """The upload session ids the proxy saw in this case's requests (the very values that must not be shown)."""
    return {match for exchange in proxy.exchanges for match in re.findall(r"upload_id=([\w\-]+)", exchange.target)}


def _error_texts(error: BaseException) -> list[str]:
    """Everything of `error` that reaches a user or Dagster's event log: str and repr of it and of every chained
    exception, and the text Dagster stores for a failed step (its serializable error info, causes and contexts)."""
    from dagster._utils.error import serializable_error_info_from_exc_info

    texts, seen, pending = [], set(), [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        texts += [str(current), repr(current), *map(str, getattr(current, "args", ()))]
        pending += [current.__cause__, current.__context__]
    texts.append(serializable_error_info_from_exc_info((type(error), error, error.__traceback__)).to_string())
    return texts


def assert_carries_no_credentials(error: BaseException, secrets: set[str] = frozenset()) -> None:
    for text in _error_texts(error):
        assert not CREDENTIAL_MARKS.search(text), f"a credential in an error: {text}"
        assert not any(secret in text for secret in secrets), f"an upload session id in an error: {text}"


@pytest.mark.parametrize("fault_name", list(FAULTS))
@pytest.mark.parametrize("operation", OPERATIONS, ids=[operation.name for operation in OPERATIONS])
def test_operation_under_status(operation: Operation, fault_name: str, world: World, proxy: FaultProxy):
    if fault_name.endswith("-always"):
        world.store = world.store.with_settings(ENDLESS_SETTINGS)
    fault = proxy.add(FAULTS[fault_name](operation))
    error: BaseException | None = None
    result = None
    try:
        result = operation.run(world)
    except Exception as raised:  # judged below, whatever it is
        error = raised
    _summary["cases"] += 1
    outcome = "succeeded" if error is None else type(error).__name__
    _summary["outcomes"].setdefault(operation.name, {})[fault_name] = outcome
    assert fault.fired >= 1, "the fault never fired: the case tested nothing"

    status = int(fault_name.split("-")[0]) if fault_name[0].isdigit() else None
    if error is not None:
        assert_carries_no_credentials(error, _secrets_seen(proxy))
        assert isinstance(error, OctueDagsterError), f"leaked {type(error).__module__}.{type(error).__name__}: {error}"
        assert world.bucket in str(error), f"the error does not name the object: {error}"
        assert type(error).__module__.startswith("octue_dagster")
    if fault_name.endswith("-always"):
        assert isinstance(error, StorageUnavailableError), outcome
        assert "after retries" in str(error) or "retry deadline" in str(error)
    elif status in TRANSIENT:
        assert error is None, f"a single {status} was not retried: {error}"
    elif status == 404 and operation.name == "get":
        assert error is None and result is None
    elif status in (409, 412) and operation.name == "patch":
        # A patch that lost a race (or was told so) re-reads the object and applies its change again.
        assert error is None, f"{status} was not re-applied: {error!r}"
    elif status == 404 and operation.name == "delete":
        # Deleting what is already gone succeeds: a delete retried after its answer was lost finds nothing.
        assert error is None
    elif status is not None:
        assert isinstance(error, EXPECTED_ERROR[status]), f"{status} became {outcome}: {error}"
        assert str(status) in str(error) or status in (404, 412), error
    elif operation.name == "download":
        # A garbled or empty 200 to a media download is content without a checksum header: the bytes, checked
        # against the object's crc32c as they are written, give it away.
        assert isinstance(error, ChecksumMismatchError), outcome
    elif operation.name in ("get", "list"):
        # A garbled or empty answer to a read: nothing changed; it is retried or reported as unreadable.
        assert error is None or isinstance(error, StorageUnavailableError), outcome
    else:
        # A garbled or empty answer to a write that GCS carried out: the writer recognises its own write.
        assert error is None, f"{operation.name}'s own committed write was not recognised: {error!r}"
    # (The proxy's invented 404 leaves the object in place; GCS answers a delete with 404 only when it is gone.)
    if error is None and (result is not None or operation.name == "delete" and status != 404):
        operation.check(world, result)


def test_unauthorized_with_an_emulator_does_not_claim_credentials_are_missing(world: World, proxy: FaultProxy):
    world.put("source")
    proxy.add(Fault("status", "GET", r"/o/source\?", status=401))
    with pytest.raises(MissingCredentialsError) as raised:
        world.store.get_object(world.path("source"))
    message = str(raised.value)
    assert "no Google Cloud credentials were found" not in message and "401" in message
    assert os.environ[EMULATOR_VARIABLE] in message or proxy.url in message  # names the endpoint that refused


def test_requester_pays_bad_request_says_how_to_fix_it(world: World, proxy: FaultProxy):
    world.put("source")
    # What GCS answers for a requester-pays bucket read without a billing project.
    fault = proxy.add(Fault("status", "GET", r"/o/source\?", status=400,
                            message="Bucket is a requester pays bucket but no user project provided."))
    with pytest.raises(StorageRequestError) as raised:
        world.store.get_object(world.path("source"))
    assert fault.fired == 1 and isinstance(raised.value, OctueDagsterError)
    assert "400" in str(raised.value) and "source" in str(raised.value) and "user_project" in str(raised.value)


@pytest.mark.parametrize("body", [b'{"kind": "storage#obj', b""], ids=["garbled", "empty"])
def test_a_datafile_recognises_its_own_resumable_write_whose_last_answer_was_garbled(world: World, proxy, body):
    from octue_dagster import Datafile

    fault = proxy.add(Fault("garble", "PUT", r"upload_id=", skip=1, body=body))  # the chunk that commits the object
    datafile = Datafile(f"gs://{world.bucket}/large.bin", store=world.store, labels={"first"})
    with datafile.open("wb") as file:
        file.write(LARGE)
    assert fault.fired == 1
    stored = world.direct.require_object(world.path("large.bin"))
    assert datafile.generation == stored.generation and stored.crc32c == md.crc32c_base64(LARGE)
    # The datafile knows the generation it wrote, so its next changes are not mistaken for another writer's.
    datafile.labels.add("second")
    datafile.update_metadata()
    with datafile.open("ab") as file:
        file.write(b"more")
    assert Datafile(f"gs://{world.bucket}/large.bin", store=world.direct).labels == {"first", "second"}
    assert world.direct.require_object(world.path("large.bin")).size == len(LARGE) + 4


@pytest.mark.parametrize("status", [400, 401, 403, 409, "always-503"])
def test_a_failed_resumable_upload_does_not_show_its_session_uri(world: World, proxy: FaultProxy, status):
    # The session URI's upload_id is all anyone needs to finish the upload with their own bytes.
    if status == "always-503":
        world.store = world.store.with_settings(ENDLESS_SETTINGS)
        proxy.add(Fault("status", "PUT", r"upload_id=", status=503, times=10_000, skip=1))
    else:
        proxy.add(Fault("status", "PUT", r"upload_id=", status=status, skip=1))
    with pytest.raises(OctueDagsterError) as raised:
        _upload(LARGE)(world)
    secrets = _secrets_seen(proxy)
    assert secrets, "no resumable session was opened: the case tested nothing"
    assert_carries_no_credentials(raised.value, secrets)
    if status in (400, 403, 409):  # GCS's answer quoted in the message names the request, its session redacted
        assert "upload_id=[REDACTED]" in "".join(_error_texts(raised.value)), "the message no longer names the request"


def test_redaction_removes_every_kind_of_bearer_credential():
    from octue_dagster.core.storage.redaction import redact, redact_exception

    signed = ("https://storage.googleapis.com/b/o?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential=sa%40p.iam"
              "&X-Goog-Date=20261207T000000Z&X-Goog-Expires=600&X-Goog-SignedHeaders=host&X-Goog-Signature=0a1b2c3d4e")
    texts = [
        "PUT https://storage.googleapis.com/upload/storage/v1/b/b/o?uploadType=resumable&upload_id=ADPycdu-x_1: bad",
        signed,
        "POST https://oauth2.googleapis.com/token: {\"access_token\": \"ya29.a0AfB_by\", \"expires_in\": 3599}",
        "GET https://example.com/o?access_token=ya29.a0AfB_by&alt=json",
        "{'Authorization': 'Bearer ya29.a0AfB_by', 'User-Agent': 'x'}",
        "Authorization: Bearer eyJhbGciOi.eyJzdWIi.c2lnbmF0dXJl",
    ]
    for text in texts:
        redacted = redact(text)
        assert "[REDACTED]" in redacted and not CREDENTIAL_MARKS.search(redacted), redacted
        assert "ya29" not in redacted and "0a1b2c3d4e" not in redacted and "ADPycdu" not in redacted, redacted
    # What is not a credential is kept, so that the message still says what happened.
    assert redact(signed).startswith("https://storage.googleapis.com/b/o?X-Goog-Algorithm=GOOG4-RSA-SHA256")
    for kept in ("error code=400, tag key=value, uploadType=resumable", "the caller lacks authorization: check IAM"):
        assert redact(kept) == kept
    # The whole chain of an exception, including google-api-core's `message`.
    try:
        try:
            raise ValueError(texts[0])
        except ValueError as inner:
            raise RuntimeError(f"wrapped: {texts[3]}") from inner
    except RuntimeError as outer:
        assert_carries_no_credentials(redact_exception(outer))
