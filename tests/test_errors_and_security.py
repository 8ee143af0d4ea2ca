"""Bad input gets specific errors; object names never escape the cache; no credentials leak."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage as gcs_storage

from octue_dagster import (
    BucketNotFoundError,
    CloudObjectNotFoundError,
    Datafile,
    InvalidCloudPathError,
    StoragePermissionError,
)
from octue_dagster.core.cache import copies as cache
from octue_dagster.core.storage.gcs_path import GCSPath, parse_gcs_path


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("gs://", "no bucket"),
        ("gs:///object", "no bucket"),
        ("gs://bucket", "object name is empty"),
        ("gs://Bad_Bucket/x", "not a valid bucket name"),
        ("gs://ab/x", "not a valid bucket name"),
        ("s3://bucket/x", "must start with 'gs://'"),
        ("gs://bucket/" + "x" * 1100, "longer than"),
        ("gs://bucket/a\nb", "newline"),
    ],
)
def test_malformed_cloud_paths(path, problem):
    with pytest.raises(InvalidCloudPathError, match=problem):
        parse_gcs_path(path)
    assert issubclass(InvalidCloudPathError, ValueError)


def test_missing_bucket_is_named(client, emulator):
    datafile = Datafile("gs://no-such-bucket-here/x.txt", storage_client=client)
    with pytest.raises(BucketNotFoundError, match="no-such-bucket-here"):
        datafile.download()


def test_missing_object_is_a_file_not_found(client, bucket):
    with pytest.raises(CloudObjectNotFoundError, match="There is no object"):
        Datafile(f"gs://{bucket}/absent.csv", storage_client=client).download()
    assert issubclass(CloudObjectNotFoundError, FileNotFoundError)


@pytest.mark.parametrize(
    "name",
    ["a/../../x.csv", "../../../../etc/passwd", "/abs/olute.txt", "..", "a/./b/../../../c.h5", "x" * 900 + ".csv",
     "dir/", "ünïcødé/файл.txt", "a\\..\\..\\b.txt"],
)
def test_object_names_never_escape_the_cache(name, cache_dir):
    path = GCSPath("some-bucket", name)
    target = cache.cached_path(path).resolve()
    root = cache.cache_root()
    assert root in target.parents
    assert target.name not in {".", ".."} and "/" not in target.name
    if name.endswith((".csv", ".txt", ".h5")):
        assert target.suffix == os.path.splitext(name)[1]


def test_hostile_object_name_downloads_inside_the_cache(client, bucket, cache_dir):
    client.bucket(bucket).blob("a/../../escape.csv").upload_from_string(b"x,y\n")
    datafile = Datafile(f"gs://{bucket}/a/../../escape.csv", storage_client=client)
    local = os.path.realpath(datafile.local_path)
    assert local.startswith(str(cache_dir.resolve()) + os.sep)
    assert local.endswith(".csv")
    with datafile.open() as file:
        assert file.read() == "x,y\n"


class _Forbidding(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        body = json.dumps({"error": {"code": 403, "message": "caller does not have storage.objects.get access"}})
        self.send_response(403)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    do_GET = do_POST = do_PATCH = _answer

    def log_message(self, *args):  # keep test output clean
        pass


def test_permission_denied_is_explained():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Forbidding)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = gcs_storage.Client(
            project="test",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": f"http://127.0.0.1:{server.server_port}"},
        )
        with pytest.raises(StoragePermissionError, match="Permission denied.*gs://locked-bucket/secret.csv"):
            Datafile("gs://locked-bucket/secret.csv", storage_client=client)
    finally:
        server.shutdown()


def _environment_without_credentials(tmp_path) -> dict[str, str]:
    """This environment with no emulator and no Google credentials to find."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in {"STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT"}
    }
    # Keep google-auth off the network: no metadata-server probe, and any probe would go to a closed loopback port.
    environment.update(
        NO_GCE_CHECK="true", GCE_METADATA_HOST="127.0.0.1:9", GCE_METADATA_IP="127.0.0.1:9",
        CLOUDSDK_CONFIG=str(tmp_path / "gcloud"), HOME=str(tmp_path), DAGSTER_HOME=str(tmp_path),
    )
    return environment


def test_no_credentials_says_how_to_fix(tmp_path):
    environment = _environment_without_credentials(tmp_path)
    code = (
        "from octue_dagster import Datafile, MissingCredentialsError\n"
        "try:\n    Datafile('gs://some-bucket/x.csv')\n"
        "except MissingCredentialsError as error:\n    print('MISSING:', error)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True, timeout=60)
    assert "MISSING:" in result.stdout, result.stderr
    assert "gcloud auth application-default login" in result.stdout


def test_repr_and_metadata_hold_no_credentials(client, bucket):
    datafile = Datafile(f"gs://{bucket}/x.txt", storage_client=client, labels={"a"})
    assert repr(datafile) == "<Datafile('x.txt')>"  # Octue's repr: the name
    assert set(datafile.metadata(use_octue_namespace=False)) == {"id", "timestamp", "tags", "labels", "sdk_version"}


def test_io_manager_without_credentials_fails_at_start_up(tmp_path):
    environment = _environment_without_credentials(tmp_path)
    code = (
        "import dagster as dg\n"
        "from dagster_gcp import GCSResource\n"
        "from octue_dagster import DatafileIOManager, Datafile\n"
        "ran = []\n"
        "@dg.asset\n"
        "def a() -> Datafile:\n    ran.append(1)\n    raise AssertionError\n"
        "gcs = GCSResource()\n"
        "try:\n"
        "    dg.materialize([a], resources={'io_manager': DatafileIOManager(bucket='some-bucket', gcs=gcs)})\n"
        "except Exception as error:\n"
        "    chain = []\n"
        "    while error is not None:\n"
        "        chain.append(str(error)); error = error.__cause__ or error.__context__\n"
        "    print('FAILED:', ' | '.join(chain), 'RAN:', ran)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True, timeout=120)
    assert "FAILED:" in result.stdout, result.stderr[-2000:]
    assert "No Google Cloud credentials" in result.stdout
    assert "RAN: []" in result.stdout


@pytest.mark.parametrize("bucket_name", ["..", ".", "", "a/b", "a\\b"])
def test_hand_built_paths_with_bad_buckets_are_refused_by_the_cache(bucket_name, cache_dir):
    with pytest.raises(ValueError, match="bucket"):
        cache.cached_path(GCSPath(bucket_name, "x.csv"))


def test_the_librarys_log_lines_are_redacted(caplog):
    import logging

    from octue_dagster.core.listing import selection

    session = "https://storage.googleapis.com/upload/storage/v1/b/b/o?uploadType=resumable&upload_id=ADPycdu-x_1"
    with caplog.at_level(logging.WARNING, logger=selection.logger.name):
        selection.logger.warning("Could not re-tag %s: %s", "gs://b/o", f"PUT {session}: 503")
    assert caplog.records and "ADPycdu" not in caplog.text and "upload_id=[REDACTED]" in caplog.text
