"""Addresses: every (asset key, partition key) and every op output gets its own folder, which no other one shares,
contains or lies in, for any key Dagster accepts (hypothesis); plus the documented layout."""

from urllib.parse import unquote

import pytest
from dagster import MultiPartitionKey
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from octue_dagster.dagster.addresses import (
    asset_address,
    default_object_name,
    encode_segment,
    extension_of,
    op_output_address,
    op_outputs_root,
    validate_prefix,
)
from octue_dagster.exceptions import InvalidCloudPathError

# Text that stresses the layout: separators, the Hive '=', percent signs, dots, unicode, control characters.
pieces = st.sampled_from(list("ab/=%.-_ é\x00\n") + ["..", "partition", "%2F", "%"])
tricky = st.lists(pieces, max_size=4).map("".join)
texts = st.one_of(tricky, st.text(max_size=8))
asset_keys = st.lists(texts, min_size=1, max_size=4)
multi_keys = st.dictionaries(texts, texts, min_size=2, max_size=2)
partitions = st.one_of(st.none(), texts, multi_keys)
asset_targets = st.tuples(st.just("asset"), asset_keys, partitions)
op_targets = st.tuples(st.just("op"), st.lists(texts, min_size=3, max_size=3), st.one_of(st.none(), texts))
targets = st.one_of(asset_targets, op_targets)


def _folder(target) -> str:
    kind, key, partition = target
    if kind == "asset":
        return asset_address("b-1", "dagster", key, partition).folder.name
    run_id, step_key, output = key
    return op_output_address("b-1", "dagster", run_id, step_key, output, partition).folder.name


def _identity(target):
    kind, key, partition = target
    return kind, tuple(key), tuple(sorted(partition.items())) if isinstance(partition, dict) else partition


@settings(max_examples=1500, deadline=None)
@given(targets, targets)
def test_distinct_targets_never_share_or_nest_an_address(first, second):
    assume(_identity(first) != _identity(second))
    a, b = _folder(first), _folder(second)
    assert not a.startswith(b) and not b.startswith(a), (first, second, a, b)


@settings(max_examples=500, deadline=None)
@given(asset_keys, partitions)
def test_an_address_is_a_function_of_its_pair_and_decodes_back(key, partition):
    first, again = asset_address("b-1", "p", key, partition), asset_address("b-1", "p", list(key), partition)
    assert first == again
    segments = first.folder.name.split("/")[1:-1]  # without the prefix and the trailing ''
    assert all(segment not in {"", ".", ".."} and "/" not in segment for segment in segments)
    decoded_parts = [unquote(segment) if segment != "%" else "" for segment in segments[: len(key)]]
    assert decoded_parts == list(key)
    # Key parts never hold a bare '=', partition folders always do.
    assert all("=" not in segment for segment in segments[: len(key)])
    assert all("=" in segment for segment in segments[len(key) :])


@given(texts)
def test_segments_are_plain_and_percent_encoded(text):
    encoded = encode_segment(text)
    assert "/" not in encoded and "=" not in encoded and encoded not in {"", ".", ".."}
    assert (unquote(encoded) if encoded != "%" else "") == text


def test_the_documented_layout():
    assert str(asset_address("b-1", "dagster", ["raw", "readings"]).folder) == "gs://b-1/dagster/raw/readings/=/"
    assert str(asset_address("b-1", "", ["x"], "2024-01-01").folder) == "gs://b-1/x/partition=2024-01-01/"
    multi = MultiPartitionKey({"site": "north", "date": "2024-01-01"})
    assert str(asset_address("b-1", "p/q/", ["x"], multi).folder) == "gs://b-1/p/q/x/date=2024-01-01/site=north/"
    assert str(asset_address("b-1", "d", ["x"], "a/b=c").folder) == "gs://b-1/d/x/partition=a%2Fb%3Dc/"
    assert str(asset_address("b-1", "d", ["x"], "..").folder) == "gs://b-1/d/x/partition=%2E%2E/"
    # The collision: asset sites/north and partition north of asset sites.
    assert asset_address("b-1", "d", ["sites", "north"]).folder != asset_address("b-1", "d", ["sites"], "north").folder
    op = op_output_address("b-1", "dagster", "run-1", "make_file", "result")
    assert str(op.folder) == "gs://b-1/dagster/run=run-1/step=make_file/output=result/=/"
    assert str(op_outputs_root("b-1", "dagster")) == "gs://b-1/dagster/run="


def test_owner_marks_name_the_asset_and_partition():
    assert asset_address("b-1", "d", ["raw", "r"], "p1").owner == '{"asset_key":["raw","r"],"partition":"p1"}'
    multi = MultiPartitionKey({"site": "n", "date": "d"})
    assert asset_address("b-1", "d", ["g"], multi).owner == '{"asset_key":["g"],"partition":{"date":"d","site":"n"}}'
    assert asset_address("b-1", "d", ["g"]).owner != asset_address("b-1", "d", ["g"], "").owner


@pytest.mark.parametrize(
    ("file_name", "expected"),
    [("readings.csv", ".csv"), ("tmpa8f3", ""), ("x.tar.gz", ".tar.gz"), ("run.2024.h5", ".h5"), (".hidden", "")],
)
def test_object_names_derive_from_the_asset_and_keep_the_extension(file_name, expected):
    assert extension_of(file_name) == expected
    address = asset_address("b-1", "d", ["raw", "readings"], "p")
    assert default_object_name(address, file_name) == "readings" + expected


def test_object_names_longer_than_gcs_allows_are_rejected():
    address = asset_address("b-1", "d", ["x" * 500, "y" * 500])
    with pytest.raises(InvalidCloudPathError, match="longer than GCS's limit"):
        address.object_path("y" * 30 + ".csv")


@pytest.mark.parametrize("prefix", ["/abs", "a/../b", "gs://bucket/x", "a//b", "./a", "a=b"])
def test_malformed_prefixes_are_rejected(prefix):
    with pytest.raises(InvalidCloudPathError):
        validate_prefix(prefix)
