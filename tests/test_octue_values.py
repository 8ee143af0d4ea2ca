"""Octue's values, exactly: naive timestamps, NaN and infinite tags, JSON-list labels, numpy and UserString values.

Every expectation comes from bytes the real Octue SDK 0.69.1 wrote (fixtures/octue_sdk, see its README): we read
what it wrote as it reads it, write what it would write for the same input, and re-write its entries byte-identical
where we changed nothing.
"""

from __future__ import annotations

import base64
import collections
import datetime
import json
import math
import shutil
from pathlib import Path

import numpy
import pytest

from octue_dagster import Datafile
from octue_dagster.core.metadata import values as md

FIXTURES = Path(__file__).parent / "fixtures" / "octue_sdk"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
EDGE_LABELS = '["json-list", "labels"]'
EDGE_TIMESTAMP = datetime.datetime(2022, 3, 4, 5, 6, 7, 891011)


def edge_tags() -> dict:
    """The tag values generate.py gave the SDK, built the same way."""
    return {
        "nan": float("nan"),
        "inf": float("inf"),
        "ninf": float("-inf"),
        "array": numpy.array([1.5, 2.5]),
        "float64": numpy.float64(0.25),
        "user_string": collections.UserString("text"),
        "nested": {"values": [float("nan"), 1]},
    }


def _fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"cloud_{name}.json").read_text())


def _put(client, bucket: str, fixture: str) -> tuple[str, dict]:
    data = _fixture(fixture)
    blob = client.bucket(bucket).blob(data["name"])
    blob.metadata = data["metadata"]
    blob.upload_from_string(base64.b64decode(data["content_b64"]), content_type=data["content_type"])
    return f"gs://{bucket}/{data['name']}", data


def _same_json(left, right) -> bool:
    """Equal as JSON values, NaN included (NaN != NaN in Python)."""
    return json.dumps(left, sort_keys=True) == json.dumps(right, sort_keys=True)


def _assert_edge_tags(tags: dict) -> None:
    assert math.isnan(tags["nan"]) and tags["inf"] == math.inf and tags["ninf"] == -math.inf
    assert tags["array"] == [1.5, 2.5] and tags["float64"] == 0.25 and tags["user_string"] == "text"
    assert math.isnan(tags["nested"]["values"][0])


# --- naive timestamps -----------------------------------------------------------------------------------------------


def test_naive_cloud_timestamp_is_read_naive_and_rewritten_byte_identical(client, bucket):
    path, data = _put(client, bucket, "h5_naive")
    datafile = Datafile(path, storage_client=client)
    assert datafile.timestamp == datetime.datetime.fromisoformat(EXPECTED["cloud"]["h5_naive"]["timestamp"])
    assert datafile.timestamp.tzinfo is None and not EXPECTED["cloud"]["h5_naive"]["timestamp_is_tz_aware"]
    datafile.labels.add("retagged")
    datafile.update_metadata()
    written = client.bucket(bucket).get_blob(data["name"]).metadata
    assert written["octue__timestamp"] == data["metadata"]["octue__timestamp"]
    assert written["octue__tags"] == data["metadata"]["octue__tags"]
    assert md.decode_json(written["octue__labels"]) == {"raw", "retagged"}


def test_naive_local_timestamp_is_read_naive_and_rewritten_byte_identical(tmp_path):
    folder = tmp_path / "local"
    shutil.copytree(FIXTURES / "local", folder)
    before = json.loads((folder / ".octue").read_text())
    datafile = Datafile(folder / "measurements.h5")
    assert datafile.timestamp == datetime.datetime(2023, 11, 2, 8, 15) and datafile.timestamp.tzinfo is None
    datafile.labels.add("retagged")
    datafile.update_metadata()
    after = json.loads((folder / ".octue").read_text())
    assert after["datafiles"]["measurements.h5"]["timestamp"] == before["datafiles"]["measurements.h5"]["timestamp"]
    assert after["datafiles"]["measurements.h5"]["labels"]["items"] == ["raw", "retagged"]


def test_naive_timestamp_written_by_us_is_what_the_sdk_writes(client, bucket):
    data = _fixture("h5_naive")
    ours = Datafile(f"gs://{bucket}/ours.bin", storage_client=client, id=EXPECTED["cloud"]["h5_naive"]["id"],
                    labels={"raw"}, tags={"sensor": "lidar"}, timestamp=datetime.datetime(2023, 11, 2, 8, 15))
    with ours.open("wb") as file:
        file.write(b"x")
    assert client.bucket(bucket).get_blob("ours.bin").metadata == data["metadata"]


def test_timestamp_offset_is_kept_and_far_past_offsets_do_not_overflow(tmp_path):
    plus_five = datetime.timezone(datetime.timedelta(hours=5))
    first_day = datetime.datetime(1, 1, 1, tzinfo=plus_five)  # converting it to UTC would overflow
    (tmp_path / "f.txt").write_text("x")
    (tmp_path / ".octue").write_text(json.dumps({"datafiles": {"f.txt": {
        "id": "a1b2c3d4-0000-4000-8000-000000000001",
        "timestamp": {"_type": "datetime", "value": "0001-01-01T00:00:00+05:00"},
    }}}))
    datafile = Datafile(tmp_path / "f.txt")
    assert datafile.timestamp == first_day and datafile.timestamp.utcoffset() == datetime.timedelta(hours=5)
    assert datafile.posix_timestamp == -62135614800.0
    datafile.labels.add("seen")
    datafile.update_metadata()
    entry = json.loads((tmp_path / ".octue").read_text())["datafiles"]["f.txt"]
    assert entry["timestamp"] == {"_type": "datetime", "value": "0001-01-01T00:00:00+05:00"}


def test_posix_seconds_still_mean_utc(tmp_path):
    datafile = Datafile(tmp_path / "f", timestamp=1700000000)
    assert datafile.timestamp == datetime.datetime(2023, 11, 14, 22, 13, 20, tzinfo=datetime.timezone.utc)


# --- NaN, infinities, numpy, UserString, JSON-list labels --------------------------------------------------------


def test_edge_values_written_by_the_sdk_are_read_as_it_reads_them(client, bucket):
    path, data = _put(client, bucket, "edge_values")
    expected = EXPECTED["cloud"]["edge_values"]
    datafile = Datafile(path, storage_client=client)
    assert sorted(datafile.labels) == expected["labels"] == ["json-list", "labels"]
    _assert_edge_tags(datafile.tags)
    assert _same_json(dict(datafile.tags), expected["tags"])
    assert datafile.timestamp == EDGE_TIMESTAMP and datafile.timestamp.tzinfo is None
    assert datafile.hash_value == expected["hash_value"]


def test_edge_values_written_by_us_are_byte_identical_to_the_sdks(client, bucket):
    data = _fixture("edge_values")
    ours = Datafile(f"gs://{bucket}/ours.txt", storage_client=client, id="a1b2c3d4-0000-4000-8000-00000000000d",
                    labels=EDGE_LABELS, tags=edge_tags(), timestamp=EDGE_TIMESTAMP)
    with ours.open("w") as file:
        file.write("Edge values.")
    assert client.bucket(bucket).get_blob("ours.txt").metadata == data["metadata"]
    assert md.encode_json(edge_tags()) == EXPECTED["encoder_examples"]["edge tags"]


def test_retagging_an_sdk_object_keeps_its_nan_tags_byte_identical(client, bucket):
    path, data = _put(client, bucket, "edge_values")
    datafile = Datafile(path, storage_client=client)
    assert not datafile._metadata_changed()  # NaN equals itself when nothing changed: no spurious writes
    datafile.labels.add("checked")
    datafile.update_metadata()
    written = client.bucket(bucket).get_blob(data["name"]).metadata
    assert written["octue__tags"] == data["metadata"]["octue__tags"]
    assert written["octue__timestamp"] == data["metadata"]["octue__timestamp"]


def test_local_edge_values_read_and_other_entries_kept(tmp_path):
    folder = tmp_path / "local_edge"
    shutil.copytree(FIXTURES / "local_edge", folder)
    before = (folder / ".octue").read_text()
    for name, expected in EXPECTED["local_edge"].items():
        datafile = Datafile(folder / name)
        assert datafile.id == expected["id"]
        _assert_edge_tags(datafile.tags)
        assert datafile.timestamp.isoformat() == expected["timestamp"]
    values = Datafile(folder / "values.txt")
    values.tags["checked"] = True
    with values.open("w") as file:  # a content write whose .octue holds NaN in another file's entry
        file.write("new")
    after = md.parse_raw_json((folder / ".octue").read_text())
    original = md.parse_raw_json(before)
    assert _same_json(after["datafiles"]["other.txt"], original["datafiles"]["other.txt"])
    mine = after["datafiles"]["values.txt"]
    assert mine["tags"]["checked"] is True and math.isnan(mine["tags"]["nan"])
    assert mine["timestamp"] == original["datafiles"]["values.txt"]["timestamp"]
    assert (folder / "values.txt").read_text() == "new"


@pytest.mark.parametrize(
    "labels, expected",
    [('["a", "b-c"]', {"a", "b-c"}), ("a b", {"a", "b"}), ("  [\"x\"] ", {"x"}),
     (collections.UserString("one two"), {"one", "two"}), ([collections.UserString("u")], {"u"})],
)
def test_labels_as_the_sdk_accepts_them(labels, expected):
    assert md.LabelSet(labels) == expected


def test_tag_values_as_the_sdk_accepts_them(tmp_path):
    class Primitive:
        def to_primitive(self):
            return {"kind": "custom"}

    datafile = Datafile(tmp_path / "f", tags={"matrix": numpy.array([[1, 2], [3, 4]]), "count": numpy.int64(3),
                                              "flag": numpy.bool_(True), "custom": Primitive()})
    assert dict(datafile.tags) == {"matrix": [[1, 2], [3, 4]], "count": 3, "flag": True, "custom": {"kind": "custom"}}
    datafile.update_metadata()
    assert Datafile(tmp_path / "f").tags == datafile.tags
