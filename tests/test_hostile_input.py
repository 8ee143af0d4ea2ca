"""Hostile input, property-based: the library accepts an input or rejects it with a `ValueError` subclass that says
why; it never raises anything else, and never writes outside its cache whatever the object name.
"""

from __future__ import annotations

import datetime
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from octue_dagster import Datafile
from octue_dagster.core.cache import copies as cache
from octue_dagster.core.metadata import values as md
from octue_dagster.core.storage.gcs_path import GCSPath, parse_gcs_path
from octue_dagster.exceptions import InvalidInputError
from reliability_summary import save_summary

_summary: dict[str, Any] = {"inputs": 0, "accepted": 0, "rejected": 0}
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SLOW = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
anything = json_values | st.binary(max_size=10) | st.sets(st.integers(), max_size=3) | st.datetimes() | st.just(object())


@pytest.fixture(scope="module", autouse=True)
def write_summary():
    yield
    save_summary("hostile_input", _summary)


def judge(call) -> Any:
    """Run `call`: it must succeed or raise the library's input error with a message; count which."""
    _summary["inputs"] += 1
    try:
        result = call()
    except InvalidInputError as error:
        assert len(str(error)) > 20, f"unhelpful message: {error!r}"
        _summary["rejected"] += 1
        return None
    _summary["accepted"] += 1
    return result


@FAST
@given(st.one_of(st.text(max_size=30), st.lists(anything, max_size=4), anything))
def test_labels(labels):
    result = judge(lambda: md.LabelSet(labels))
    if result is not None:
        assert all(md.LABEL_PATTERN.match(label) for label in result)


@FAST
@given(st.dictionaries(st.text(max_size=20), anything, max_size=4) | anything)
def test_tags(tags):
    result = judge(lambda: md.TagDict(tags))
    if result is not None:
        md.encode_json(dict(result))  # whatever was accepted can be stored


@FAST
@given(st.one_of(st.floats(allow_nan=True), st.integers(), st.datetimes(timezones=st.timezones()), anything))
def test_timestamps(value):
    result = judge(lambda: md.normalise_timestamp(value))
    if isinstance(value, datetime.datetime):
        assert result is value  # kept as given, naive or aware, as Octue's SDK keeps it
    elif result is not None:
        assert result.tzinfo is not None and result.utcoffset() == datetime.timedelta(0)


@FAST
@given(st.text(max_size=300))
def test_gs_urls(text):
    parsed = judge(lambda: parse_gcs_path("gs://" + text))
    if parsed is not None:
        assert cache.cache_root() in cache.cached_path(parsed).parents


@FAST
@given(st.text(min_size=1, max_size=1100))
def test_any_object_name_stays_inside_the_cache(name):
    path = judge(lambda: parse_gcs_path(f"gs://bucket/{name}"))
    for candidate in [path, GCSPath("bucket", name)] if path is not None else [GCSPath("bucket", name)]:
        target = cache.cached_path(candidate).resolve()
        assert cache.cache_root() in target.parents
        assert len(target.name.encode()) < 255


@FAST
@given(st.dictionaries(st.sampled_from([f"octue__{field}" for field in md.METADATA_FIELDS] + ["other"]),
                       st.text(max_size=50) | json_values.map(json.dumps), max_size=5))
def test_object_custom_metadata(custom):
    judge(lambda: md.from_cloud_metadata(custom, "gs://bucket/object"))


@FAST
@given(st.lists(st.text(alphabet="abcdefghij", min_size=1, max_size=20), max_size=60),
       st.text(max_size=9000))
def test_metadata_size_limit(labels, tag):
    encoded = judge(lambda: md.to_cloud_metadata("1c4b0b36-6a49-4b6a-9d55-1b0f5f4a0a11", None, labels, {"t": tag}))
    if encoded is not None:
        assert sum(len(key.encode()) + len(value.encode()) for key, value in encoded.items()) <= 8 * 1024


@SLOW
@given(st.binary(max_size=200) | json_values.map(lambda value: json.dumps(value).encode())
       | st.dictionaries(st.just("datafiles"), st.dictionaries(st.just("data.txt"), json_values, max_size=1))
       .map(lambda value: json.dumps(value).encode()))
def test_arbitrary_octue_file_is_read_or_rejected_and_never_overwritten(tmp_path, contents):
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    (folder / "data.txt").write_text("x")
    (folder / ".octue").write_bytes(contents)
    datafile = judge(lambda: Datafile(folder / "data.txt"))
    if datafile is None:
        assert (folder / ".octue").read_bytes() == contents


@SLOW
@given(st.text(max_size=80))
def test_local_paths(tmp_path, name):
    datafile = judge(lambda: Datafile(tmp_path / name if name else name))
    if datafile is not None:
        assert Path(datafile.local_path).is_absolute()


@pytest.mark.parametrize(
    "name", ["a/../../x", "/etc/passwd", "../../../../tmp/escape", "x" * 1000 + ".csv", "dir/.hidden", "ünïcode/ø.txt"]
)
def test_hostile_object_names_download_into_the_cache(client, bucket, name):
    blob = client.bucket(bucket).blob(name)
    blob.upload_from_string(b"content")
    datafile = Datafile(f"gs://{bucket}/{name}", storage_client=client)
    local = Path(datafile.download()).resolve()
    assert cache.cache_root() in local.parents
    assert local.read_bytes() == b"content"
    _summary["inputs"] += 1
    _summary["accepted"] += 1
