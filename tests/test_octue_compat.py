"""Buckets and folders written by Octue's SDK 0.69 are read by us, and what we write has the SDK's exact shape.

The fixtures are real bytes written by `octue==0.69.1` (see fixtures/octue_sdk/README.md).
"""

from __future__ import annotations

import base64
import datetime
import json
import shutil
from pathlib import Path

import pytest

from octue_dagster import Datafile
from octue_dagster.core.metadata.values import decode_json, encode_json

FIXTURES = Path(__file__).parent / "fixtures" / "octue_sdk"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())


def _put_fixture_object(client, bucket: str, fixture: str) -> tuple[str, dict]:
    """Store a fixture object in the emulator with exactly the custom metadata Octue's SDK gave it."""
    data = json.loads((FIXTURES / f"cloud_{fixture}.json").read_text())
    blob = client.bucket(bucket).blob(data["name"])
    blob.metadata = data["metadata"]
    blob.upload_from_string(base64.b64decode(data["content_b64"]), content_type=data["content_type"])
    return f"gs://{bucket}/{data['name']}", data


def _expected_timestamp(value: str | None) -> datetime.datetime | None:
    """The timestamp Octue's SDK reported: naive stays naive, as in the SDK."""
    return None if value is None else datetime.datetime.fromisoformat(value)


@pytest.mark.parametrize("fixture", ["cleaned", "no_metadata", "h5_naive"])
def test_reads_objects_written_by_octue_sdk(client, bucket, fixture):
    path, data = _put_fixture_object(client, bucket, fixture)
    expected = EXPECTED["cloud"][fixture]
    datafile = Datafile(path, storage_client=client)
    assert datafile.id == expected["id"]
    assert sorted(datafile.labels) == expected["labels"]
    assert dict(datafile.tags) == expected["tags"]
    assert datafile.timestamp == _expected_timestamp(expected["timestamp"])
    assert datafile.hash_value == expected["hash_value"] == data["crc32c"]
    assert datafile.name == expected["name"]


def test_writes_cloud_metadata_byte_for_byte_like_octue_sdk(client, bucket):
    _, octue_data = _put_fixture_object(client, bucket, "cleaned")
    expected = EXPECTED["cloud"]["cleaned"]
    ours = Datafile(
        f"gs://{bucket}/ours/cleaned_data.txt",
        storage_client=client,
        id=expected["id"],
        labels=expected["labels"],
        tags={"turbine_id": "T1", "height_m": 80, "nested": {"a": [1, 2]}},
        timestamp=_expected_timestamp(expected["timestamp"]),
    )
    with ours.open("w") as file:
        file.write(base64.b64decode(octue_data["content_b64"]).decode())
    written = client.bucket(bucket).get_blob("ours/cleaned_data.txt")
    assert written.metadata == octue_data["metadata"]
    assert written.crc32c == octue_data["crc32c"]


def test_reads_local_octue_file_written_by_octue_sdk(tmp_path):
    folder = tmp_path / "local"
    shutil.copytree(FIXTURES / "local", folder)
    for name, expected in EXPECTED["local"]["datafiles"].items():
        datafile = Datafile(folder / name)
        assert datafile.id == expected["id"]
        assert sorted(datafile.labels) == expected["labels"]
        assert dict(datafile.tags) == expected["tags"]
        assert datafile.timestamp == _expected_timestamp(expected["timestamp"])
        assert datafile.hash_value == expected["hash_value"]
    octue_file = json.loads((folder / ".octue").read_text())
    cleaned = Datafile(folder / "cleaned_data.txt")
    entry = octue_file["datafiles"]["cleaned_data.txt"]
    assert cleaned.id == entry["id"]
    assert cleaned.labels == set(entry["labels"]["items"])
    assert cleaned.tags == entry["tags"]
    assert cleaned.timestamp == _expected_timestamp(entry["timestamp"]["value"])
    assert cleaned.hash_value == "BE0c5A=="


def test_updating_local_metadata_keeps_entries_it_does_not_own(tmp_path):
    folder = tmp_path / "local"
    shutil.copytree(FIXTURES / "local", folder)
    before = decode_json((folder / ".octue").read_text())
    datafile = Datafile(folder / "cleaned_data.txt")
    datafile.labels.add("reviewed")
    datafile.update_metadata()
    after = decode_json((folder / ".octue").read_text())
    assert after["dataset"] == before["dataset"]
    assert after["datafiles"]["measurements.h5"] == before["datafiles"]["measurements.h5"]
    assert after["datafiles"]["cleaned_data.txt"]["labels"] == {"cleaned", "wind-speed", "reviewed"}
    assert after["datafiles"]["cleaned_data.txt"]["id"] == before["datafiles"]["cleaned_data.txt"]["id"]


def test_local_octue_file_round_trips_in_the_sdk_format(tmp_path):
    text = (FIXTURES / "local" / ".octue").read_text()
    assert encode_json(decode_json(text), indent=4) + "\n" == text
