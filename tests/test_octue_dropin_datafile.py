"""Datafile as a drop-in for Octue's SDK (issue 14), proved side by side: one script, run once with Octue SDK 0.69.1's
`Datafile` (in its own venv) and once with ours, on the same emulator, must give the same results.

The script batches every behaviour (the context-manager form, metadata precedence, reading blocks, Octue's
`exists_*`, `local_path=` at construction, `metadata(...)`, `update_cloud_metadata` / `update_local_metadata`,
`upload(update_cloud_metadata=...)`, the `local_path` / `cloud_path` setters, `bucket_name` / `path_in_bucket`,
ordering, `repr`, `add_labels` / `add_tags`, errors, `serialise` / `deserialise`, and reading a signed URL) into one
subprocess per side, so the file runs in seconds. Each side writes to its own bucket and working folder; both read
one shared object and one signed URL. The only expected differences are listed in `DELIBERATE_DIFFERENCES` and
asserted as such.
"""

from __future__ import annotations

import datetime
import http.server
import json
import logging
import os
import pickle
import re
import subprocess
import sys
import textwrap
import threading
import types
import urllib.parse
import uuid
import warnings
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.oauth2 import service_account

from octue_dagster import Datafile
from octue_dagster.core.metadata.values import crc32c_base64
from octue_dagster.core.storage.store import Store
from octue_dagster.exceptions import (
    ChecksumMismatchError,
    CloudLocationNotSpecifiedError,
    InvalidInputError,
    OctueCompatibilityWarning,
    ReadOnlyDatafileError,
)
from test_octue_sdk_live import PRELUDE as OCTUE_PRELUDE
from test_octue_sdk_live import octue_python  # noqa: F401 - the fixture

REPOSITORY = Path(__file__).resolve().parent.parent
OURS_PRELUDE = "import json, os, sys\nfrom octue_dagster import Datafile\n"
FIXED_ID = "9f1c3b4e-5a6d-4e7f-8a9b-0c1d2e3f4a5b"

SCENARIO = textwrap.dedent(
    '''
    import datetime
    B, SHARED, URL = os.environ["BUCKET"], os.environ["SHARED"], os.environ["URL"]
    r = {}

    def attempt(action):
        try:
            return {"value": action()}
        except Exception as error:
            return {"builtins": sorted(c.__name__ for c in type(error).__mro__ if c.__module__ == "builtins")}

    # The context-manager form, local: metadata set in a writing block is saved.
    with Datafile("local.txt", mode="w") as (df, f):
        f.write("hello")
        df.labels = {"a", "b"}
    again = Datafile("local.txt")
    r["cm_local"] = [open("local.txt").read(), sorted(again.labels), again.id == df.id]

    # ... and metadata changed in a reading block is not saved.
    with Datafile("local.txt", mode="r") as (read, f):
        r["read_content"] = f.read()
        read.labels = {"changed"}
    r["read_not_saved"] = sorted(Datafile("local.txt").labels)

    # The context-manager form, cloud, for an object that does not exist yet.
    gs = f"gs://{B}/cm/file.txt"
    with Datafile(gs, mode="w") as (cloud, f):
        f.write("cloud")
        cloud.tags = {"k": 1}
    reread = Datafile(gs)
    with reread.open() as f:
        r["cm_cloud"] = [f.read(), dict(reread.tags), reread.id == cloud.id]

    # Precedence: stored metadata wins unless ignored; given metadata is used where nothing is stored.
    r["stored_wins"] = dict(Datafile(gs, tags={"new": "t"}).tags)
    r["ignore_stored"] = dict(Datafile(gs, tags={"new": "t"}, ignore_stored_metadata=True).tags)
    r["nothing_stored"] = dict(Datafile(f"gs://{B}/nothing-here.txt", tags={"new": "t"}).tags)

    # exists_locally / exists_in_cloud, as Octue defines them.
    fresh = Datafile(gs)
    # (Octue's SDK answers None rather than False for a local file's exists_in_cloud: compared as truth values.)
    r["exists"] = [Datafile("local.txt").exists_locally, bool(Datafile("local.txt").exists_in_cloud),
                   Datafile("not-written-yet.txt").exists_locally, fresh.exists_in_cloud, fresh.exists_locally]
    fresh.download()
    r["exists_after_download"] = fresh.exists_locally

    # A cloud datafile given local_path= holds the object's content there at once.
    with open("stale.txt", "w") as f:
        f.write("an older version")
    chosen = Datafile(gs, local_path="stale.txt")
    r["local_path_download"] = [open("stale.txt").read(), chosen.local_path == os.path.abspath("stale.txt")]

    # metadata(...)
    bare = reread.metadata(include_id=False, include_sdk_version=False, use_octue_namespace=False)
    r["metadata_keys"] = [sorted(reread.metadata()), sorted(bare)]
    values = reread.metadata(use_octue_namespace=False)
    r["metadata_values"] = [values["timestamp"], sorted(values["labels"]), dict(values["tags"]), values["sdk_version"]]

    # update_cloud_metadata / update_local_metadata, and upload(update_cloud_metadata=...)
    patch = Datafile(gs)
    patch.labels = {"updated"}
    patch.update_cloud_metadata()
    r["update_cloud"] = sorted(Datafile(gs).labels)
    local = Datafile("local.txt")
    local.tags = {"t": 2}
    local.update_local_metadata()
    r["update_local"] = dict(Datafile("local.txt").tags)
    unsent = Datafile(gs)
    unsent.labels = {"not-sent"}
    unsent.upload(update_cloud_metadata=False)
    r["upload_without_metadata"] = sorted(Datafile(gs).labels)
    unsent.upload()
    r["upload_with_metadata"] = sorted(Datafile(gs).labels)

    # The cloud_path and local_path setters.
    with open("to-upload.txt", "w") as f:
        f.write("set me")
    setter = Datafile("to-upload.txt")
    setter.cloud_path = f"gs://{B}/set/file.txt"
    with Datafile(f"gs://{B}/set/file.txt").open() as f:
        r["cloud_path_setter"] = [f.read(), setter.cloud_path == f"gs://{B}/set/file.txt"]
    moved = Datafile(gs)
    moved.local_path = "moved.txt"
    r["local_path_setter"] = [open("moved.txt").read(), moved.local_path == os.path.abspath("moved.txt")]
    r["local_path_to_existing_file"] = attempt(lambda: setattr(Datafile(gs), "local_path", "local.txt"))
    reset = attempt(lambda: setattr(Datafile("local.txt"), "local_path", None))
    r["reset_local_path_of_local_file"] = "builtins" in reset
    r["upload_without_location"] = "builtins" in attempt(lambda: Datafile("local.txt").upload())
    r["signed_url_of_local_file"] = "builtins" in attempt(lambda: Datafile("local.txt").generate_signed_url())

    # bucket_name / path_in_bucket, ordering, repr, add_labels / add_tags, builtin errors.
    r["bucket"] = [Datafile(gs).bucket_name == B, Datafile(gs).path_in_bucket,
                   Datafile("local.txt").bucket_name, Datafile("local.txt").path_in_bucket]
    r["ordering"] = [[d.name for d in sorted([Datafile("b.txt"), Datafile("a.txt")])],
                     Datafile("a.txt") < Datafile("b.txt"), Datafile("b.txt") > Datafile("a.txt")]
    r["ordering_with_a_string"] = attempt(lambda: Datafile("a.txt") < "b")
    # Ours is also a ValueError (InvalidInputError); what Octue code catches is the TypeError.
    r["string_timestamp"] = "TypeError" in attempt(lambda: Datafile("a.txt", timestamp="50"))["builtins"]
    r["repr"] = [repr(Datafile("dir/a.csv")), repr(Datafile(gs))]
    added = Datafile("new.txt")
    added.add_labels("x", "y")
    added.add_tags({"p": 1}, q=2)
    r["add"] = [sorted(added.labels), dict(added.tags)]

    # Serialisation: byte-equal for a local file, and a round trip both ways.
    with open("ser.txt", "w") as f:
        f.write("serialise me")
    ser = Datafile("ser.txt", id=os.environ["FIXED_ID"], labels={"z", "a"}, tags={"n": 1, "s": "x"},
                   timestamp=datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc))
    r["serialised_local"] = ser.serialise().replace(os.getcwd(), "<cwd>")
    r["serialised_raw"] = ser.serialise()
    back = Datafile.deserialise(ser.to_primitive())
    r["round_trip"] = [back.id == ser.id, back.name, sorted(back.labels), dict(back.tags),
                       back.timestamp == ser.timestamp, back.local_path == ser.local_path]
    r["round_trip_string"] = Datafile.deserialise(ser.serialise(), from_string=True).serialise() == ser.serialise()
    other = os.environ.get("OTHER_SERIALISED")
    if other:
        theirs = Datafile.deserialise(other, from_string=True)
        r["deserialised_other"] = [theirs.id, theirs.name, sorted(theirs.labels), dict(theirs.tags),
                                   theirs.timestamp.isoformat()]

    # One object both sides read: its serialised form (Octue's downloads it for `local_path`; ours does not).
    shared = Datafile(SHARED)
    primitive = json.loads(shared.serialise())
    primitive.pop("local_path"), primitive.pop("path")
    r["serialised_cloud"] = primitive
    r["shared"] = [shared.name, shared.extension, shared.size_bytes, shared.hash_value, shared.id,
                   sorted(shared.labels), dict(shared.tags), shared.timestamp.isoformat()]

    # A signed URL: content read, read-only.
    from_url = Datafile(path=URL)
    with from_url.open() as f:
        r["url_content"] = f.read()
    r["url"] = [from_url.name, from_url.cloud_path == URL, from_url.exists_in_cloud, from_url.hash_value,
                from_url.size_bytes]
    r["url_tags"] = dict(from_url.tags)
    r["url_serialised_keys"] = sorted(json.loads(from_url.serialise())["_cloud_metadata"])
    r["url_write"] = "builtins" in attempt(lambda: from_url.open("w").__enter__())
    from_url.download(local_path="url/nested/copy.txt")
    r["url_download"] = open("url/nested/copy.txt").read()
    print(json.dumps(r, default=str))
    '''
)

#: Where ours deliberately differs from Octue's SDK (README, "Coming from Octue's SDK"), keyed by result.
DELIBERATE_DIFFERENCES = {
    # fake-gcs-server sends `X-Goog-Meta-Octue__tags`; Octue's SDK looks for the lowercase prefix, so it finds no
    # metadata behind a signed URL here (on GCS it does). Ours reads header names case-insensitively.
    "url_tags",
    # The raw serialisations name each side's own working folder (compared with the folder replaced instead).
    "serialised_raw",
    # Each side deserialises the other's output: compared with each other below.
    "deserialised_other",
}


def _signing_credentials() -> service_account.Credentials:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return service_account.Credentials.from_service_account_info(
        {
            "type": "service_account",
            "project_id": "test-project",
            "private_key_id": "1",
            "private_key": pem.decode(),
            "client_email": "signer@test-project.iam.gserviceaccount.com",
            "token_uri": "https://oauth2.googleapis.com/token",
        }
    )


def _run(python: str, prelude: str, environment: dict[str, str], folder: Path) -> dict:
    folder.mkdir(parents=True)
    (folder / "tmp").mkdir()
    completed = subprocess.run(
        [python, "-c", prelude + SCENARIO],
        capture_output=True,
        text=True,
        env={**environment, "TMPDIR": str(folder / "tmp")},
        cwd=folder,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.fixture
def shared_objects(client, tmp_path):
    """A bucket both sides only read: one object with Octue metadata, and a signed URL of another."""
    store = Store(client)
    bucket = f"shared-{uuid.uuid4().hex[:8]}"
    store.ensure_bucket(bucket)
    source = tmp_path / "shared" / "readings.csv"
    source.parent.mkdir()
    source.write_text("a,b\n1,2\n")
    timestamp = datetime.datetime(2024, 5, 1, 12, tzinfo=datetime.timezone.utc)
    Datafile(source, labels={"raw", "wind"}, tags={"turbine": "T1", "height": 80.5}, timestamp=timestamp,
             store=store).upload(f"gs://{bucket}/farm/readings.csv")
    signed = tmp_path / "shared" / "file.txt"
    signed.write_text("I will be signed")
    uploaded = Datafile(signed, tags={"some": "metadata"}, store=store)
    uploaded.upload(f"gs://{bucket}/directory/file.txt")
    url = uploaded.generate_signed_url(credentials=_signing_credentials())
    return f"gs://{bucket}/farm/readings.csv", url


def test_datafile_behaves_as_octues_side_by_side(
    octue_python, emulator, client, tmp_path, shared_objects  # noqa: F811 - the imported fixture
):
    shared, url = shared_objects
    base = {
        **{key: value for key, value in os.environ.items() if not key.startswith("PYTHON")},
        "STORAGE_EMULATOR_HOST": emulator.url,
        "GOOGLE_CLOUD_PROJECT": "test",
        "SHARED": shared,
        "URL": url,
        "FIXED_ID": FIXED_ID,
    }
    buckets = {}
    for side in ("ours", "octue"):
        buckets[side] = f"{side}-{uuid.uuid4().hex[:8]}"
        Store(client).ensure_bucket(buckets[side])
    ours = _run(
        sys.executable,
        OURS_PRELUDE,
        {**base, "BUCKET": buckets["ours"], "PYTHONPATH": str(REPOSITORY),
         "OCTUE_DAGSTER_CACHE_DIR": str(tmp_path / "cache")},
        tmp_path / "ours",
    )
    octue = _run(
        str(octue_python),
        OCTUE_PRELUDE,
        {**base, "BUCKET": buckets["octue"], "OTHER_SERIALISED": ours["serialised_raw"]},
        tmp_path / "octue",
    )

    same = {key: value for key, value in ours.items() if key not in DELIBERATE_DIFFERENCES}
    assert same == {key: value for key, value in octue.items() if key not in DELIBERATE_DIFFERENCES}

    # The results are what Octue's tests say they should be (so equality is not two sides agreeing on nothing).
    assert ours["cm_local"] == ["hello", ["a", "b"], True] and ours["read_not_saved"] == ["a", "b"]
    assert ours["cm_cloud"] == ["cloud", {"k": 1}, True]
    assert (ours["stored_wins"], ours["ignore_stored"]) == ({"k": 1}, {"new": "t"})
    assert ours["nothing_stored"] == {"new": "t"}
    assert ours["exists"] == [True, False, True, True, False] and ours["exists_after_download"] is True
    assert ours["local_path_download"] == ["cloud", True]
    assert ours["metadata_keys"][0] == [f"octue__{key}" for key in ("id", "labels", "sdk_version", "tags", "timestamp")]
    assert ours["upload_without_metadata"] == ["updated"] and ours["upload_with_metadata"] == ["not-sent"]
    assert ours["local_path_to_existing_file"]["builtins"][-3] == "FileExistsError"
    assert "TypeError" in ours["ordering_with_a_string"]["builtins"] and ours["string_timestamp"] is True
    assert ours["repr"] == ["<Datafile('a.csv')>", "<Datafile('file.txt')>"]
    assert ours["serialised_cloud"]["_cloud_metadata"]["custom_metadata"]["tags"] == {"turbine": "T1", "height": 80.5}
    assert ours["url_content"] == "I will be signed" and ours["url_write"] is True

    # Each side reads the other's serialised datafile back.
    octue_serialised = json.loads(octue["serialised_raw"])
    expected = [FIXED_ID, "ser.txt", ["a", "z"], {"n": 1, "s": "x"}, "2024-01-02T03:04:05+00:00"]
    assert octue["deserialised_other"] == expected
    theirs = Datafile.deserialise(octue["serialised_raw"], from_string=True)
    assert (theirs.id, theirs.local_path) == (FIXED_ID, octue_serialised["local_path"])
    assert sorted(theirs.labels) == ["a", "z"]

    # The one difference here: ours reads a signed URL's metadata whatever the case of the header names.
    assert ours["url_tags"] == {"some": "metadata"} and octue["url_tags"] == {}


# --- what only ours does: each deliberate difference is visible ------------------------------------------------------


def test_readme_context_manager_example_runs(bucket, client):
    readme = (REPOSITORY / "README.md").read_text()
    block = next(code for code in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "as (datafile, f)" in code)
    exec(compile(block.replace("my-bucket", bucket), "README.md", "exec", dont_inherit=True), {"Datafile": Datafile})
    stored = Datafile(f"gs://{bucket}/readings.csv", storage_client=client)
    assert stored.labels == {"raw"}
    with stored.open() as file:
        assert file.read() == "time,speed\n"


def test_overridden_given_metadata_and_unsaved_reading_changes_warn(tmp_path):
    path = tmp_path / "kept.txt"
    with Datafile(path, mode="w", labels={"stored"}) as (datafile, file):
        file.write("x")
    with pytest.warns(OctueCompatibilityWarning, match="labels given .* were not used"):
        assert Datafile(path, labels={"given"}).labels == {"stored"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Datafile(path, labels={"stored"}).labels == {"stored"}  # the same as stored: nothing to say
        assert Datafile(path, labels={"given"}, ignore_stored_metadata=True).labels == {"given"}
    with pytest.raises(InvalidInputError, match="ids cannot be reassigned"):
        Datafile(path, id=str(uuid.uuid4()))
    with pytest.raises(InvalidInputError, match="differs from its file name"):
        Datafile(path, name="other.txt")


def test_update_metadata_false_keeps_the_stored_metadata_with_new_content(bucket, client):
    path = f"gs://{bucket}/kept.txt"
    with Datafile(path, mode="w", storage_client=client, labels={"first"}) as (datafile, file):
        file.write("v1")
    with Datafile(path, mode="w", update_metadata=False, storage_client=client) as (datafile, file):
        file.write("v2")
        datafile.labels = {"not-saved"}
    stored = Datafile(path, storage_client=client)
    assert stored.labels == {"first"}
    with stored.open() as file:
        assert file.read() == "v2"


def test_object_names_octue_would_read_differently_warn(bucket, tmp_path, client):
    (tmp_path / "x.txt").write_text("x")
    with pytest.warns(OctueCompatibilityWarning, match="Octue's SDK would read and write 'tmp/x.txt'"):
        Datafile(tmp_path / "x.txt", storage_client=client).upload(f"gs://{bucket}//tmp/x.txt")
    assert client.bucket(bucket).get_blob("/tmp/x.txt") is not None  # the name exactly as written
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Datafile(f"gs://{bucket}/tmp/x.txt", storage_client=client)


def test_errors_are_also_octues_classes_when_octue_is_imported(monkeypatch):
    """The mechanism behind `except octue.exceptions.X:` (the real SDK's classes are proved by Octue's own tests through
    compat/run_octue_tests.py); a module standing in for `octue.exceptions` here, as the SDK is not in this venv."""
    octue_exceptions = types.ModuleType("octue.exceptions")

    class CloudLocationNotSpecified(Exception):
        pass

    octue_exceptions.CloudLocationNotSpecified = CloudLocationNotSpecified
    with pytest.raises(CloudLocationNotSpecifiedError) as without:
        Datafile("local.txt").upload()
    assert not isinstance(without.value, CloudLocationNotSpecified)
    monkeypatch.setitem(sys.modules, "octue.exceptions", octue_exceptions)
    with pytest.raises(CloudLocationNotSpecified) as caught:
        Datafile("local.txt").upload()
    assert isinstance(caught.value, CloudLocationNotSpecifiedError) and isinstance(caught.value, ValueError)
    copy = pickle.loads(pickle.dumps(caught.value))  # pickled as our class (the combined one is made at run time)
    assert isinstance(copy, CloudLocationNotSpecifiedError) and copy.args == caught.value.args


def test_signed_url_datafile_is_read_only_and_keeps_its_signature_out_of_messages(bucket, client, tmp_path, caplog):
    (tmp_path / "a.txt").write_text("content")
    source = Datafile(tmp_path / "a.txt", storage_client=client, tags={"k": 1})
    source.upload(f"gs://{bucket}/a.txt")
    url = source.generate_signed_url(credentials=_signing_credentials())
    signature = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["X-Goog-Signature"][0]
    from_url = Datafile(url)
    assert (from_url.tags, from_url.id, from_url.hash_value) == ({"k": 1}, source.id, source.hash_value)
    with from_url.open() as file:
        assert file.read() == "content"
    again = Datafile.deserialise(from_url.serialise(), from_string=True)
    assert (again.cloud_path, again.id) == (url, source.id)
    writes = (lambda: from_url.open("a"), from_url.upload, from_url.update_metadata, from_url.update_cloud_metadata)
    for action in writes:
        with pytest.raises(ReadOnlyDatafileError, match="only grants reading") as refused:
            action()
        assert signature not in str(refused.value)
    client.bucket(bucket).blob("a.txt").delete()
    with caplog.at_level(logging.INFO):
        gone = Datafile(url)
    with pytest.raises(FileNotFoundError, match="couldn't be downloaded") as missing:
        gone.download(tmp_path / "copy.txt")
    assert signature not in str(missing.value) and signature not in caplog.text
    assert "Couldn't access cloud datafile metadata" in caplog.text and not (tmp_path / "copy.txt").exists()


class _CorruptingServer(http.server.BaseHTTPRequestHandler):
    """Serves `CONTENT`'s crc32c in `x-goog-hash` (as GCS does) and, on the first GET only, bytes with one flipped."""

    CONTENT = b"x" * 5000
    gets = 0

    def _head(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.CONTENT)))
        self.send_header("x-goog-hash", f"crc32c={crc32c_base64(self.CONTENT)}")
        self.send_header("X-Goog-Meta-Octue__tags", json.dumps({"served": True}))
        self.end_headers()

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's name
        self._head()

    def do_GET(self) -> None:  # noqa: N802
        type(self).gets += 1
        self._head()
        self.wfile.write(b"y" + self.CONTENT[1:] if self.gets == 1 else self.CONTENT)

    def log_message(self, *args: object) -> None:
        pass


def test_signed_url_content_is_checked_against_its_crc32c(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CorruptingServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/bucket/checked/a.bin?X-Goog-Signature=secret"
        datafile = Datafile(url)
        assert datafile.tags == {"served": True} and datafile.size_bytes == 5000
        with pytest.raises(ChecksumMismatchError, match="nothing was kept") as refused:
            datafile.download(tmp_path / "copy.bin")
        assert "secret" not in str(refused.value)
        assert os.listdir(tmp_path) == []  # neither the file nor a temporary one
        datafile.download(tmp_path / "copy.bin")  # the second answer is intact
        assert (tmp_path / "copy.bin").read_bytes() == _CorruptingServer.CONTENT
    finally:
        server.shutdown()
        server.server_close()
