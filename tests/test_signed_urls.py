"""V4 signed URLs for Datafiles and Datasets, signed offline with a generated service-account key."""

from __future__ import annotations

import datetime
import hashlib
import urllib.parse

import google.auth
import google.auth.exceptions
import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from google.oauth2 import service_account

from octue_dagster import Datafile, Dataset
from octue_dagster.exceptions import (
    CloudLocationNotSpecifiedError,
    InvalidInputError,
    MissingCredentialsError,
)

EMAIL = "signer@test-project.iam.gserviceaccount.com"


@pytest.fixture(scope="module")
def key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def credentials(key):
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return service_account.Credentials.from_service_account_info(
        {
            "type": "service_account",
            "project_id": "test-project",
            "private_key_id": "1",
            "private_key": pem,
            "client_email": EMAIL,
            "token_uri": "https://oauth2.googleapis.com/token",
        }
    )


def verify_v4_signature(url: str, public_key) -> dict[str, str]:
    """Check a V4 signed URL's signature against the key (GCS's canonical request for a GET with a host header)."""
    parsed = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parsed.query, keep_blank_values=True))
    signature = bytes.fromhex(query.pop("X-Goog-Signature"))
    canonical_query = "&".join(
        f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}" for k, v in sorted(query.items())
    )
    canonical_request = "\n".join(
        ["GET", parsed.path, canonical_query, f"host:{parsed.netloc}", "", "host", "UNSIGNED-PAYLOAD"]
    )
    scope = query["X-Goog-Credential"].split("/", 1)[1]
    string_to_sign = "\n".join(
        ["GOOG4-RSA-SHA256", query["X-Goog-Date"], scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    public_key.verify(signature, string_to_sign.encode(), padding.PKCS1v15(), hashes.SHA256())
    return query


def test_datafile_signed_url_is_signed_by_the_key_and_reads_the_object(client, bucket, credentials, key, emulator):
    blob = client.bucket(bucket).blob("data/t1.csv")
    blob.upload_from_string("time,speed\n0,7\n")
    datafile = Datafile(f"gs://{bucket}/data/t1.csv", storage_client=client)

    url = datafile.generate_signed_url(datetime.timedelta(hours=1), credentials=credentials)

    assert url.startswith(f"{emulator.url}/{bucket}/data/t1.csv?")
    query = verify_v4_signature(url, key.public_key())
    assert query["X-Goog-Algorithm"] == "GOOG4-RSA-SHA256"
    assert query["X-Goog-Expires"] == "3600"
    assert query["X-Goog-Credential"].startswith(EMAIL + "/")
    with pytest.raises(Exception):
        verify_v4_signature(url.replace("t1.csv", "t2.csv"), key.public_key())
    response = requests.get(url, timeout=10)
    assert response.status_code == 200 and response.text == "time,speed\n0,7\n"


def test_dataset_signed_url_points_at_signed_metadata_with_signed_file_urls(client, bucket, credentials, key, tmp_path):
    (tmp_path / "farm").mkdir()
    for name in ("a.csv", "b.csv"):
        (tmp_path / "farm" / name).write_text(name)
    local = Dataset(tmp_path / "farm", name="farm", labels={"wind"}, storage_client=client)
    local.upload(f"gs://{bucket}/farm")

    url = local.generate_signed_url(datetime.timedelta(minutes=5), credentials=credentials)

    verify_v4_signature(url, key.public_key())
    assert "/farm/.signed_metadata_files/" in url
    document = requests.get(url, timeout=10).json()
    assert document["id"] == local.id and document["name"] == "farm" and document["labels"] == ["wind"]
    contents = sorted(requests.get(file_url, timeout=10).text for file_url in document["files"])
    assert contents == ["a.csv", "b.csv"]
    # The signed metadata object is never a file of the dataset.
    assert sorted(f.name for f in Dataset(f"gs://{bucket}/farm", storage_client=client)) == ["a.csv", "b.csv"]


def test_signing_without_a_key_or_service_account_says_how_to_fix_it(client, bucket, monkeypatch):
    client.bucket(bucket).blob("x").upload_from_string("x")

    def no_credentials(*args, **kwargs):
        raise google.auth.exceptions.DefaultCredentialsError("none")

    monkeypatch.setattr(google.auth, "default", no_credentials)
    with pytest.raises(MissingCredentialsError, match="GOOGLE_APPLICATION_CREDENTIALS"):
        Datafile(f"gs://{bucket}/x", storage_client=client).generate_signed_url()


def test_signed_url_inputs_are_checked(client, bucket, credentials, tmp_path):
    client.bucket(bucket).blob("x").upload_from_string("x")
    datafile = Datafile(f"gs://{bucket}/x", storage_client=client)
    with pytest.raises(InvalidInputError, match="7 days"):
        datafile.generate_signed_url(datetime.timedelta(days=8), credentials=credentials)
    with pytest.raises(InvalidInputError, match="naive"):
        datafile.generate_signed_url(datetime.datetime(2030, 1, 1), credentials=credentials)
    (tmp_path / "local.txt").write_text("x")
    with pytest.raises(CloudLocationNotSpecifiedError, match="cloud"):  # Octue's CloudLocationNotSpecified
        Datafile(tmp_path / "local.txt").generate_signed_url(credentials=credentials)
    with pytest.raises(InvalidInputError, match="cloud"):
        Dataset(tmp_path).generate_signed_url(credentials=credentials)
