"""Dataset and Manifest as drop-ins for Octue SDK 0.69.1's: the same calls made through the real SDK (in its own venv,
see test_octue_sdk_live.py) and through ours, on the same emulator and the same objects, give the same results.

The SDK runs twice in all: once on a bucket this module fills (every call below, in one script), and once to read
what ours wrote (a signed URL, a manifest with signed URLs). Each test then makes the same calls through ours and
compares. Signed URLs are signed with a throwaway service-account key in both processes (the emulator does not check
signatures; Octue's own tests stub signing out instead).
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth.credentials import Signing
from google.cloud.storage.blob import Blob
from google.oauth2 import service_account

from octue_dagster import Datafile, Dataset, Manifest
from octue_dagster.core.storage.store import Store, make_client
from octue_dagster.exceptions import (
    InvalidFilterError,
    InvalidMetadataError,
    OctueCompatibilityWarning,
    InvalidSerialisationError,
    OctueDagsterError,
    ReadOnlyDatasetError,
)
from test_octue_sdk_live import octue_python, run_sdk  # noqa: F401 - the SDK venv fixture

PICKED_ID = "0b9a3c1e-0000-4000-8000-00000000000a"
MANIFEST_ID = "7e0025cd-bd68-4de6-b48d-2643ebd5effd"
FILES = {"t1.csv": "t,v\n0,1\n", "t2.csv": "t,v\n0,2\n", "deep/t3.csv": "t,v\n0,3\n"}

# Signing in both processes: the throwaway key signs whenever the caller's credentials cannot (google.auth.default
# gives credentials whose refresh fails, so Octue's SDK signs with the client's credentials, as it does off Cloud).
SIGNING_SETUP = """
from unittest import mock
from google.auth.credentials import AnonymousCredentials, Signing
from google.auth.exceptions import RefreshError
from google.cloud.storage.blob import Blob
from google.oauth2 import service_account
KEY = service_account.Credentials.from_service_account_file({key!r})
class _NoRefresh(AnonymousCredentials):
    def refresh(self, request):
        raise RefreshError("no token in tests")
mock.patch("google.auth.default", lambda *a, **k: (_NoRefresh(), "test")).start()
_sign = Blob.generate_signed_url
def _sign_with_key(self, *args, **kwargs):
    if not isinstance(kwargs.get("credentials"), Signing):
        kwargs["credentials"] = KEY
    return _sign(self, *args, **kwargs)
Blob.generate_signed_url = _sign_with_key
"""

# The calls, written once: `exec`uted by the SDK (with its classes) and by ours (with ours), each filling `out`.
CALLS = """
def meta(d, with_id=True):
    found = {"name": d.name, "labels": sorted(map(str, d.labels)), "tags": dict(d.tags)}
    if with_id:
        found["id"] = d.id
    return found

def error_kind(call):
    try:
        call()
    except Exception as error:
        return {"ValueError": isinstance(error, ValueError), "TypeError": isinstance(error, TypeError),
                "LookupError": isinstance(error, LookupError)}
    return None

def content(datafile):
    with datafile.open() as file:
        return file.read()

def tree(folder):
    return sorted(os.path.relpath(os.path.join(r, f), folder) for r, _, fs in os.walk(folder) for f in fs)

given = dict(name="given", labels={"given"}, tags={"given": 1})
out["precedence_cloud"] = meta(Dataset(path=FARM, **given))
out["precedence_local"] = meta(Dataset(path=LOCAL, **given))
out["ignored"] = meta(Dataset(path=FARM, ignore_stored_metadata=True, **given), with_id=False)
out["nothing_stored"] = meta(Dataset(path=BUCKET_PATH + "/nothing-here", **given), with_id=False)

farm = Dataset(path=FARM)
out["to_primitive"] = farm.to_primitive()
out["serialise"] = farm.serialise()
out["hash_value"] = farm.hash_value
out["metadata_hash_value"] = farm.metadata_hash_value
unlabelled = Dataset(path=LOCAL, ignore_stored_metadata=True, name="n", tags={"a": 1})
out["metadata_hash_value_no_labels"] = unlabelled.metadata_hash_value
out["repr"] = [repr(farm), repr(Dataset(path=LOCAL))]
out["exists"] = [[d.exists_in_cloud, d.exists_locally, d.all_files_are_in_cloud] for d in (farm, Dataset(path=LOCAL))]
out["roundtrip"] = Dataset.deserialise(farm.to_primitive()).serialise()
out["roundtrip_from_string"] = Dataset.deserialise(farm.serialise(), from_string=True).serialise()
farm.to_file(os.path.join(WORK, SIDE + "-farm.json"))
with open(os.path.join(WORK, SIDE + "-farm.json")) as written:
    out["to_file"] = written.read()
out["from_file"] = Dataset.from_file(os.path.join(WORK, SIDE + "-farm.json")).serialise()
out["len_and_label"] = [len(farm), farm.get_file_by_label("first").name]
changed = Dataset(path=FARM)
changed.add_labels("extra", "more")
changed.add_tags({"a": 1}, b=2)
out["added"] = meta(changed)

picked = Dataset(path=BUCKET_PATH + "/picked", files=[FARM + "/t1.csv"], id=PICKED_ID, name="picked",
                 labels={"p"}, tags={"n": 1})
manifest = Manifest(datasets={"farm": FARM, "picked": picked}, id=MANIFEST_ID, name="m")
out["manifest_primitive"] = manifest.to_primitive()
out["manifest_serialise"] = manifest.serialise()
out["manifest_hash_value"] = manifest.hash_value
out["manifest_roundtrip"] = Manifest.deserialise(manifest.to_primitive()).serialise()
out["manifest_roundtrip_from_string"] = Manifest.deserialise(manifest.serialise(), from_string=True).serialise()
manifest.to_file(os.path.join(WORK, SIDE + "-manifest.json"))
with open(os.path.join(WORK, SIDE + "-manifest.json")) as written:
    out["manifest_to_file"] = written.read()
out["empty_manifest_hash_value"] = Manifest().hash_value
out["all_datasets_are_in_cloud"] = [
    manifest.all_datasets_are_in_cloud, Manifest(datasets={"l": LOCAL}).all_datasets_are_in_cloud
]

moved = Manifest(datasets={"a": "rel/dataset_0", "b": "rel/dataset_1"})
moved.update_dataset_paths(lambda d: d.path.replace("0", "zero"))
out["updated_paths"] = {name: d.path for name, d in moved.datasets.items()}

out["errors"] = {
    "malformed_filter": error_kind(lambda: Dataset(path=FARM).files.filter(name_icontains="t")),
    "unknown_serialised_field": error_kind(lambda: Dataset.deserialise({"bogus": 1})),
    "files_not_iterable": error_kind(lambda: Dataset(files="some/path")),
    "two_files_with_label": error_kind(lambda: Dataset(path=FARM).get_file_by_label("csv")),
    "unknown_dataset": error_kind(lambda: manifest.get_dataset("nope")),
}

given_folder = os.path.join(WORK, SIDE + "-download-given")
out["download_given"] = Manifest(datasets={"farm": FARM}).download(paths={"farm": given_folder})
out["download_given_tree"] = tree(given_folder)
partial_folder = os.path.join(WORK, SIDE + "-download-partial")
out["download_partial"] = sorted(
    Manifest(datasets={"farm": FARM, "picked": picked}).download(paths={"farm": partial_folder}, download_all=False)
)
everything = Manifest(datasets={"farm": FARM, "picked": picked}).download()
out["download_all"] = {name: [os.path.basename(path), tree(path)] for name, path in everything.items()}
out["download_all_one_parent"] = len({os.path.dirname(path) for path in everything.values()})

signed = Manifest(datasets={"farm": FARM, "local": LOCAL}, id=MANIFEST_ID)
signed.use_signed_urls_for_datasets()
first = signed.datasets["farm"].path
signed.use_signed_urls_for_datasets()
out["signed_manifest"] = signed.to_primitive()
out["signed_idempotent"] = signed.datasets["farm"].path == first
out["signed_url"] = Dataset(path=FARM).generate_signed_url()
signed_read = Dataset(path=out["signed_url"])
out["signed_read"] = [meta(signed_read), sorted(f.name for f in signed_read.files),
                      sorted(content(f) for f in signed_read.files), signed_read.exists_in_cloud,
                      signed_read.exists_locally, signed_read.path == out["signed_url"]]
"""


def _sdk_script(calls: str, **names: Any) -> str:
    assignments = "".join(f"{name} = {value!r}\n" for name, value in names.items())
    return (
        "from octue.resources import Manifest\nfrom octue.utils.encoders import OctueJSONEncoder\nout = {}\n"
        f"{assignments}{calls}\nprint(json.dumps(out, cls=OctueJSONEncoder))\n"
    )


def _write_key(folder: Path) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path = folder / "signer.json"
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "test",
                "private_key_id": "1",
                "private_key": pem.decode(),
                "client_email": "signer@test.iam.gserviceaccount.com",
                "token_uri": "http://127.0.0.1:9/token",
            }
        )
    )
    return path


@pytest.fixture(scope="module")
def world(octue_python, emulator, tmp_path_factory):
    """A bucket holding the dataset `farm` (written by ours, read the same by both), a local dataset folder, and
    what the SDK answered to every call in `CALLS`."""
    work = tmp_path_factory.mktemp("dropin")
    bucket = "dropin-" + os.urandom(4).hex()
    store = Store(make_client())
    store.ensure_bucket(bucket)
    source = work / "farm-source"
    for relative, content in FILES.items():
        (source / relative).parent.mkdir(parents=True, exist_ok=True)
        (source / relative).write_text(content)
        labels = {"csv", "first"} if relative == "t1.csv" else {"csv"}
        Datafile(source / relative, labels=labels, tags={"turbine": relative[-5]}).update_metadata()
    farm = Dataset(source, name="farm-day", labels={"wind"}, tags={"site": "north", "height": 80.5}, store=store)
    farm.upload(f"gs://{bucket}/farm")
    local = work / "local"
    local.mkdir()
    (local / "a.txt").write_text("a")
    Dataset(local, name="local-one", labels={"here"}, tags={"k": "v"}).update_metadata()

    key = _write_key(work)
    names = {
        "BUCKET_PATH": f"gs://{bucket}",
        "FARM": f"gs://{bucket}/farm",
        "LOCAL": str(local),
        "WORK": str(work),
        "PICKED_ID": PICKED_ID,
        "MANIFEST_ID": MANIFEST_ID,
        "SIDE": "sdk",
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TMPDIR", str(work))  # Octue's temporary download folders go under pytest's folder
        sdk = run_sdk(octue_python, emulator, SIGNING_SETUP.format(key=str(key)) + _sdk_script(CALLS, **names), work)
    return {"work": work, "bucket": bucket, "key": key, "names": names, "sdk": sdk, "store": store}


@pytest.fixture(scope="module")
def ours(world):
    """What ours answers to the same calls, on the same bucket and folders (signing with the same key)."""
    key = service_account.Credentials.from_service_account_file(str(world["key"]))
    original = Blob.generate_signed_url

    def sign_with_key(self, *args, **kwargs):
        if not isinstance(kwargs.get("credentials"), Signing):
            kwargs["credentials"] = key
        return original(self, *args, **kwargs)

    names = {**world["names"], "SIDE": "ours"}
    namespace: dict[str, Any] = {"Dataset": Dataset, "Manifest": Manifest, "os": os, "out": {}, **names}
    with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", OctueCompatibilityWarning)
        patch.setattr(Blob, "generate_signed_url", sign_with_key)
        patch.setattr(tempfile, "tempdir", str(world["work"]))
        exec(CALLS, namespace)  # noqa: S102 - the same calls the SDK ran
    # Through JSON as the SDK's answers came, so both sides are compared as the same kinds of values.
    answers = json.loads(json.dumps(namespace["out"]))
    answers["warnings"] = [str(w.message) for w in caught if issubclass(w.category, OctueCompatibilityWarning)]
    return answers


SAME = [
    "precedence_cloud",
    "precedence_local",
    "ignored",
    "nothing_stored",
    "to_primitive",
    "serialise",
    "hash_value",
    "metadata_hash_value",
    "metadata_hash_value_no_labels",
    "repr",
    "exists",
    "roundtrip",
    "roundtrip_from_string",
    "to_file",
    "from_file",
    "manifest_to_file",
    "len_and_label",
    "added",
    "manifest_primitive",
    "manifest_serialise",
    "manifest_hash_value",
    "empty_manifest_hash_value",
    "all_datasets_are_in_cloud",
    "updated_paths",
    "download_given_tree",
    "download_partial",
    "download_all_one_parent",
    "signed_idempotent",
    "signed_read",
]


@pytest.mark.parametrize("key", SAME)
def test_same_call_same_result_as_the_sdk(world, ours, key):
    assert ours[key] == world["sdk"][key]


def test_errors_are_instances_of_every_builtin_the_sdks_are(world, ours):
    """Where Octue's error is a builtin (`ValueError`, `TypeError`), ours is too (and may be more: our
    `UnexpectedNumberOfResultsError` is also a `LookupError`, our `InvalidSerialisationError` also a `ValueError`)."""
    assert sorted(ours["errors"]) == sorted(world["sdk"]["errors"])
    for call, sdk_kinds in world["sdk"]["errors"].items():
        assert sdk_kinds is not None and ours["errors"][call] is not None, call
        assert {kind for kind, is_one in sdk_kinds.items() if is_one} <= {
            kind for kind, is_one in ours["errors"][call].items() if is_one
        }, call
    assert ours["errors"]["two_files_with_label"]["LookupError"]


def test_deliberate_difference_serialised_cloud_datasets_keep_their_metadata(world, ours):
    """Octue's `Manifest` makes a serialised cloud dataset from its path and files only, dropping its id, labels and
    tags (a new random id each time); ours keeps them. Everything else in the round trip is the same."""
    sdk = json.loads(world["sdk"]["manifest_roundtrip"])
    mine = json.loads(ours["manifest_roundtrip"])
    assert mine == json.loads(ours["manifest_serialise"]) == json.loads(world["sdk"]["manifest_serialise"])
    assert mine["datasets"]["picked"]["id"] == PICKED_ID and mine["datasets"]["picked"]["labels"] == ["p"]
    assert sdk["datasets"]["picked"]["id"] != PICKED_ID and sdk["datasets"]["picked"]["labels"] == []
    for kept in ("labels", "tags", "id"):
        sdk["datasets"]["picked"].pop(kept), mine["datasets"]["picked"].pop(kept)
    assert sdk == mine
    assert json.loads(ours["manifest_roundtrip_from_string"]) == json.loads(ours["manifest_roundtrip"])


def test_deliberate_difference_downloaded_files_never_leave_the_dataset_folder(world, ours):
    """A dataset of given files from another folder (`picked` holds `farm/t1.csv`): Octue's SDK downloads the file to
    `<folder>/../farm/t1.csv`, outside the folder it returns; ours puts it inside, under its name."""
    assert world["sdk"]["download_all"]["picked"] == ["picked", []]
    assert ours["download_all"]["picked"] == ["picked", ["t1.csv"]]
    assert ours["download_all"]["farm"] == world["sdk"]["download_all"]["farm"]


def test_the_compared_results_say_something(world):
    """Guards the comparison above against both sides agreeing on nothing: the SDK's answers are the expected kind."""
    sdk = world["sdk"]
    assert sdk["precedence_cloud"]["name"] == "farm-day" and sdk["precedence_cloud"]["labels"] == ["wind"]
    assert sdk["ignored"] == sdk["nothing_stored"] == {"name": "given", "labels": ["given"], "tags": {"given": 1}}
    assert sdk["precedence_local"]["name"] == "local-one"
    assert json.loads(sdk["serialise"])["files"] == sorted(f"{world['names']['FARM']}/{name}" for name in FILES)
    assert sdk["repr"][0] == "<Dataset('farm-day')>"
    assert sdk["errors"]["malformed_filter"]["ValueError"] and sdk["errors"]["unknown_serialised_field"]["TypeError"]
    assert sdk["download_all"]["farm"] == ["farm", ["deep/t3.csv", "t1.csv", "t2.csv"]]
    assert sdk["download_partial"] == ["farm"] and sdk["signed_idempotent"] is True
    assert sdk["updated_paths"] == {"a": "rel/dataset_zero", "b": "rel/dataset_1"}


def test_given_metadata_that_stored_metadata_overrides_is_named_in_a_warning(ours):
    """Octue's SDK drops the given values silently; ours drops them too, and says which (once per dataset made)."""
    assert ours["warnings"] == [
        "The name, labels, tags given for <Dataset('farm-day')> were not used: the metadata stored with it takes "
        "precedence, as in Octue's SDK. Pass ignore_stored_metadata=True to use what you give, or set the attributes "
        "and call update_metadata() to change what is stored.",
        "The name, labels, tags given for <Dataset('local-one')> were not used: the metadata stored with it takes "
        "precedence, as in Octue's SDK. Pass ignore_stored_metadata=True to use what you give, or set the attributes "
        "and call update_metadata() to change what is stored.",
    ]


def test_each_reads_the_others_files(world, ours):
    """`from_file` here reads what Octue's `to_file` wrote (the SDK's side reads ours in the next test)."""
    work = world["work"]
    assert Dataset.from_file(work / "sdk-farm.json").serialise() == world["sdk"]["serialise"]
    assert json.loads(Manifest.from_file(work / "sdk-manifest.json").serialise())["datasets"]["farm"] == (
        world["names"]["FARM"]
    )
    assert ours["to_file"] == world["sdk"]["serialise"]


def test_download_paths_are_returned_as_the_sdk_returns_them(world, ours):
    given = str(world["work"] / "ours-download-given")
    assert ours["download_given"] == {"farm": given}
    assert world["sdk"]["download_given"] == {"farm": str(world["work"] / "sdk-download-given")}


def test_signed_manifests_have_the_same_shape(world, ours):
    for answers in (world["sdk"], ours):
        farm_path = answers["signed_manifest"]["datasets"]["farm"]
        assert farm_path.startswith("http") and "/farm/.signed_metadata_files/" in farm_path
        assert answers["signed_manifest"]["datasets"]["local"] == world["names"]["LOCAL"]
        assert "/farm/.signed_metadata_files/" in answers["signed_url"]


def test_each_reads_the_others_signed_urls_and_manifests(world, ours, octue_python, emulator):
    """The SDK reads the dataset behind our signed URL and our manifest of signed URLs, and ours reads the SDK's,
    each finding the same metadata and files."""
    script = f"""
from octue.resources import Manifest
def content(datafile):
    with datafile.open() as file:
        return file.read()
def read(dataset):
    return {{"id": dataset.id, "name": dataset.name, "labels": sorted(map(str, dataset.labels)),
            "tags": dict(dataset.tags), "files": sorted(f.name for f in dataset.files),
            "contents": sorted(content(f) for f in dataset.files)}}
out = {{"url": read(Dataset(path={ours["signed_url"]!r})),
       "manifest": read(Manifest.deserialise({ours["signed_manifest"]!r}).datasets["farm"]),
       "from_file": read(Dataset.from_file({str(world["work"] / "ours-farm.json")!r}))}}
print(json.dumps(out))
"""
    sdk_read = run_sdk(octue_python, emulator, script, world["work"])
    farm = Dataset(world["names"]["FARM"], store=world["store"])
    expected = {
        "id": farm.id,
        "name": "farm-day",
        "labels": ["wind"],
        "tags": {"site": "north", "height": 80.5},
        "files": ["t1.csv", "t2.csv", "t3.csv"],
        "contents": sorted(FILES.values()),
    }
    assert sdk_read == {"url": expected, "manifest": expected, "from_file": expected}

    from_manifest = Manifest.deserialise(world["sdk"]["signed_manifest"]).datasets["farm"]
    for read, url in (
        (Dataset(path=world["sdk"]["signed_url"]), world["sdk"]["signed_url"]),
        (from_manifest, world["sdk"]["signed_manifest"]["datasets"]["farm"]),
    ):
        contents = []
        for file in read.files:
            with file.open() as opened:
                contents.append(opened.read())
        found = {
            "id": read.id,
            "name": read.name,
            "labels": sorted(read.labels),
            "tags": dict(read.tags),
            "files": sorted(file.name for file in read.files),
            "contents": sorted(contents),
        }
        assert found == expected
        assert read.exists_in_cloud and not read.exists_locally and read.path == url


def test_a_signed_url_dataset_downloads_into_its_folder_layout(world, tmp_path):
    """Downloading a dataset read from the SDK's signed URL lays its files out as in the bucket (Octue's SDK cannot
    here: it takes the emulator's port for part of the path), each checked against the crc32c the server reports."""
    read = Dataset(path=world["sdk"]["signed_url"])
    assert read.download(tmp_path / "copy") == str(tmp_path / "copy")
    for relative, content in FILES.items():
        assert (tmp_path / "copy" / relative).read_text() == content
    copied = (tmp_path / "copy").rglob("*")
    assert sorted(str(path.relative_to(tmp_path / "copy")) for path in copied if path.is_file()) == sorted(FILES)


def test_signed_url_datasets_are_read_only_with_a_clear_error(world, ours):
    read = Dataset(path=ours["signed_url"])
    attempts = (
        read.update_metadata,
        read.upload,
        lambda: read.upload(f"gs://{world['bucket']}/copy-of-signed"),
        lambda: read.add(Datafile(world["work"] / "local" / "a.txt")),
    )
    for attempt in attempts:
        with pytest.raises(ReadOnlyDatasetError, match="signed URL, which only reads") as caught:
            attempt()
        assert isinstance(caught.value, PermissionError) and isinstance(caught.value, OctueDagsterError)
        assert "Signature" not in str(caught.value)  # the URL's credential is never in an error
    assert not list(world["store"].list_objects(Dataset(f"gs://{world['bucket']}/copy-of-signed").gcs_prefix))


def test_an_unreachable_signed_url_is_logged_without_its_signature(caplog):
    url = "http://127.0.0.1:9/bucket/folder/.signed_metadata_files/x?X-Goog-Signature=secret"
    with caplog.at_level("ERROR"):
        dataset = Dataset(path=url)
    assert len(dataset.files) == 0 and dataset.path == url  # as Octue's SDK: proceeds without stored metadata
    assert "Couldn't access cloud dataset metadata for 'http://127.0.0.1:9/bucket/folder/.signed_metadata_files/x'" in (
        caplog.text
    )
    assert "secret" not in caplog.text


def test_our_errors_stay_under_our_root_with_the_sdks_builtins(world):
    farm = Dataset(world["names"]["FARM"], store=world["store"])
    with pytest.raises(InvalidFilterError, match="Invalid filter name 'name_icontains'"):
        farm.files.filter(name_icontains="t")
    with pytest.raises(InvalidSerialisationError, match="unknown fields \\['bogus'\\]") as caught:
        Dataset.deserialise({"bogus": 1})
    assert isinstance(caught.value, TypeError) and isinstance(caught.value, OctueDagsterError)
    with pytest.raises(InvalidSerialisationError, match="not JSON"):
        Manifest.deserialise("{", from_string=True)


def test_setting_a_path_moves_the_manifest_entry_not_the_files(world, tmp_path):
    farm = Dataset(world["names"]["FARM"], store=world["store"])
    before = sorted(file.cloud_path for file in farm.files)
    farm.path = str(tmp_path / "elsewhere")
    assert farm.path == str(tmp_path / "elsewhere") and farm.exists_locally
    assert sorted(file.cloud_path for file in farm.files) == before


def test_unreadable_signed_dataset_metadata_is_refused_without_the_signature(world):
    """A signed URL whose document holds an invalid label: a specific error naming the URL without its query."""
    key = service_account.Credentials.from_service_account_file(str(world["key"]))
    blob = make_client().bucket(world["bucket"]).blob("bad/.signed_metadata_files/doc")
    blob.upload_from_string(json.dumps({"id": PICKED_ID, "labels": ["Not A Label!"], "files": []}))
    url = blob.generate_signed_url(
        expiration=300, version="v4", credentials=key, api_access_endpoint=os.environ["STORAGE_EMULATOR_HOST"]
    )
    assert "X-Goog-Signature=" in url
    with pytest.raises(InvalidMetadataError, match="bad/.signed_metadata_files/doc cannot be read") as caught:
        Dataset(path=url)
    assert "X-Goog-Signature" not in str(caught.value) and isinstance(caught.value, ValueError)
    assert Dataset(path=url, ignore_stored_metadata=True, labels={"given"}).labels == {"given"}
