"""Hostile stored metadata, property-based: whatever another writer put in an object's custom metadata or a `.octue`
file, reading it either works or raises `InvalidMetadataError` (a `ValueError` under the library's error root) that
names the object or file and the field; a write never leaves content without its metadata entry, and never changes
what it could not read.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from octue_dagster import Datafile
from octue_dagster.core.metadata import values as md
from octue_dagster.exceptions import CorruptMetadataFileError, InvalidMetadataError, OctueDagsterError
from reliability_summary import save_summary

_summary: dict[str, Any] = {"cloud_examples": 0, "octue_file_examples": 0, "rejected": 0}
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
FILES = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

deep = st.integers(min_value=500, max_value=6000).flatmap(
    lambda depth: st.sampled_from(["[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth])
)
offsets = st.integers(min_value=-23 * 60, max_value=23 * 60).map(lambda minutes: f"{'+' if minutes >= 0 else '-'}"
                                                                  f"{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}")
iso_texts = st.one_of(
    st.sampled_from(["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00",
                     "not a date", "", "2024-02-30T00:00:00", "2024-01-01T25:00:00"]),
    st.builds(lambda year, offset: f"{year:04d}-01-01T00:00:00{offset}", st.integers(1, 9999), offsets | st.just("")),
)
timestamps = st.one_of(
    iso_texts.map(lambda text: json.dumps({"_type": "datetime", "value": text})),
    iso_texts.map(json.dumps),
    st.sampled_from(["1e308", "-1e308", "NaN", "Infinity", "1700000000", "true", "[]", '{"_type": "datetime"}']),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=10,
)
tags = st.one_of(
    deep.map(lambda nested: '{"t": ' + nested + "}"),
    json_values.map(lambda value: json.dumps({"t": value})),  # NaN and infinities written as Octue writes them
    st.dictionaries(st.text(max_size=8), json_values, max_size=3).map(json.dumps),
    st.text(max_size=30),
)
labels = st.one_of(
    st.lists(st.text(max_size=8), max_size=4).map(lambda items: json.dumps({"_type": "set", "items": items})),
    deep, st.text(max_size=30), json_values.map(json.dumps),
)
ids = st.one_of(st.uuids().map(lambda value: json.dumps(str(value))), st.text(max_size=40), json_values.map(json.dumps))
custom_metadata = st.fixed_dictionaries(
    {}, optional={"octue__id": ids, "octue__timestamp": timestamps, "octue__tags": tags, "octue__labels": labels}
)


@pytest.fixture(scope="module", autouse=True)
def write_summary():
    yield
    save_summary("hostile_metadata", _summary)


def _judge(call, where: str):
    """Run `call`: it succeeds, or raises the library's metadata error naming `where` and a field."""
    try:
        return call()
    except InvalidMetadataError as error:
        assert isinstance(error, OctueDagsterError) and isinstance(error, ValueError)
        assert where in str(error), error
        assert isinstance(error, CorruptMetadataFileError) or any(
            f"'{field}'" in str(error) or f"octue__{field}" in str(error) for field in md.METADATA_FIELDS
        ), error
        _summary["rejected"] += 1
        return None


@PROPERTY
@given(custom_metadata)
def test_hostile_cloud_metadata_is_read_or_rejected_naming_object_and_field(custom):
    _summary["cloud_examples"] += 1
    stored = _judge(lambda: md.from_cloud_metadata(custom, "gs://bucket/object.csv"), "gs://bucket/object.csv")
    if stored is not None:
        # Whatever was accepted can be written back (unless Octue's spacing takes it over GCS's 8 KiB limit, which
        # is refused by name), and reads back as the same record.
        try:
            encoded = md.to_cloud_metadata(stored.id or "a1b2c3d4-0000-4000-8000-000000000001", stored.timestamp,
                                           stored.labels or (), stored.tags or {})
        except InvalidMetadataError as error:
            assert "8192 bytes" in str(error)
            return
        again = md.from_cloud_metadata(encoded, "gs://bucket/object.csv")
        assert again.canonical() == md.StoredMetadata(again.id, stored.timestamp, stored.labels or frozenset(),
                                                      stored.tags or {}).canonical()


@pytest.mark.parametrize(
    "key, value, field",
    [
        ("octue__tags", '{"t": ' + "[" * 5000 + "]" * 5000 + "}", "octue__tags"),
        ("octue__labels", "[" * 5000 + "]" * 5000, "octue__labels"),
        ("octue__timestamp", '{"_type": "datetime", "value": "yesterday"}', "'timestamp'"),
        ("octue__id", '"not-a-uuid"', "'id'"),
    ],
)
def test_hostile_object_metadata_raises_a_library_error_naming_object_and_field(client, bucket, key, value, field):
    blob = client.bucket(bucket).blob("hostile.csv")
    blob.metadata = {key: value}
    blob.upload_from_string(b"a,b\n")
    with pytest.raises(InvalidMetadataError) as raised:
        Datafile(f"gs://{bucket}/hostile.csv", storage_client=client)
    assert f"gs://{bucket}/hostile.csv" in str(raised.value) and field in str(raised.value)
    assert isinstance(raised.value, OctueDagsterError) and isinstance(raised.value, ValueError)
    # The user's way out: replace what is stored.
    Datafile(f"gs://{bucket}/hostile.csv", storage_client=client, ignore_stored_metadata=True, labels={"fixed"}).upload()
    assert Datafile(f"gs://{bucket}/hostile.csv", storage_client=client).labels == {"fixed"}


def _entry(custom: dict[str, str]) -> str:
    """A `.octue` entry whose fields hold the raw JSON texts of `custom` (parsed where they parse)."""
    fields = []
    for key, text in custom.items():
        try:
            json.loads(text)
            raw = text
        except (ValueError, RecursionError):
            raw = json.dumps(text)
        fields.append(f'"{key.removeprefix("octue__")}": {raw}')
    return "{" + ", ".join(fields) + "}"


@FILES
@given(ours=custom_metadata, theirs=custom_metadata)
def test_hostile_octue_files_are_read_or_rejected_and_never_half_written(tmp_path, ours, theirs):
    _summary["octue_file_examples"] += 1
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    text = '{"datafiles": {"data.txt": ' + _entry(ours) + ', "other.txt": ' + _entry(theirs) + "}}"
    (folder / ".octue").write_text(text)
    (folder / "data.txt").write_text("old")
    where = str(folder / ".octue") if _unparseable(text) else str(folder / "data.txt")
    datafile = _judge(lambda: Datafile(folder / "data.txt"), where)
    if datafile is None:
        assert (folder / ".octue").read_text() == text
        datafile = Datafile(folder / "data.txt", ignore_stored_metadata=True)
    try:
        with datafile.open("w") as file:
            file.write("new")
    except CorruptMetadataFileError as error:  # the file as a whole cannot be parsed: nothing changes
        assert str(folder / ".octue") in str(error)
        assert (folder / "data.txt").read_text() == "old" and (folder / ".octue").read_text() == text
        return
    assert (folder / "data.txt").read_text() == "new"
    after = md.parse_raw_json((folder / ".octue").read_text())
    assert json.dumps(after["datafiles"]["other.txt"]) == json.dumps(json.loads(text)["datafiles"]["other.txt"])
    assert Datafile(folder / "data.txt").id == datafile.id


def _unparseable(text: str) -> bool:
    try:
        json.loads(text)
        return False
    except (ValueError, RecursionError):
        return True
