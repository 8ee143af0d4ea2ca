"""Octue's filter syntax on FilterSet / FilterList / FilterDict, on local Datafiles (pure: no storage)."""

from __future__ import annotations

import datetime

import pytest

from octue_dagster import Datafile
from octue_dagster.core.dataset.filters import FilterDict, FilterList, FilterSet, satisfies
from octue_dagster.exceptions import (
    BrokenSequenceError,
    InvalidFilterError,
    OctueDagsterError,
    UnexpectedNumberOfResultsError,
)

UTC = datetime.timezone.utc
JANUARY_1 = datetime.datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture
def files(tmp_path) -> FilterSet:
    specs = [
        # Aware timestamps: a naive one stays naive (as in Octue's SDK) and cannot be compared with an aware one.
        ("t1.csv", {"turbine": "T1", "cluster": 0, "height": 80.5}, {"raw", "wind-speed"}, JANUARY_1),
        ("t2.csv", {"turbine": "T2", "cluster": 1, "height": 90}, {"cleaned"}, JANUARY_1 + datetime.timedelta(days=1)),
        ("notes.txt", {"turbine": "T3"}, {"raw", "notes"}, None),
    ]
    datafiles = []
    for name, tags, labels, timestamp in specs:
        (tmp_path / name).write_text(name)
        datafiles.append(Datafile(tmp_path / name, tags=tags, labels=labels, timestamp=timestamp))
    return FilterSet(datafiles)


def names(items) -> set[str]:
    return {item.name for item in items}


def test_string_actions_and_their_complements(files):
    assert names(files.filter(name__ends_with=".csv")) == {"t1.csv", "t2.csv"}
    assert names(files.filter(name__not_ends_with=".csv")) == {"notes.txt"}
    assert names(files.filter(name__starts_with="t")) == {"t1.csv", "t2.csv"}
    assert names(files.filter(name__icontains="NOTES")) == {"notes.txt"}
    assert names(files.filter(name__iequals="T1.CSV")) == {"t1.csv"}
    assert names(files.filter(name__in_range=("a", "s"))) == {"notes.txt"}
    assert isinstance(files.filter(name__ends_with=".csv"), FilterSet)


def test_label_actions(files):
    assert names(files.filter(labels__contains="raw")) == {"t1.csv", "notes.txt"}
    assert names(files.filter(labels__not_contains="raw")) == {"t2.csv"}
    assert names(files.filter(labels__any_label_starts_with="wind")) == {"t1.csv"}
    assert names(files.filter(labels__any_label_ends_with="speed")) == {"t1.csv"}
    assert names(files.filter(labels__any_label_contains="ot")) == {"notes.txt"}
    assert names(files.filter(labels__equals={"cleaned"})) == {"t2.csv"}


def test_tag_filters_nested_keys_and_equals_shorthand(files):
    assert names(files.filter(tags__turbine__equals="T2")) == {"t2.csv"}
    assert names(files.filter(tags__turbine="T2")) == {"t2.csv"}
    assert names(files.filter(tags__cluster__gt=0)) == {"t2.csv"}
    assert names(files.filter(tags__height__in_range=(80, 85))) == {"t1.csv"}
    assert names(files.filter(tags__contains="cluster")) == {"t1.csv", "t2.csv"}
    # notes.txt has no cluster tag: it does not satisfy the filter (Octue raises here).
    assert names(files.filter(tags__cluster=0)) == {"t1.csv"}
    with pytest.raises(AttributeError):
        files.filter(ignore_items_without_attribute=False, tags__cluster__gt=0)


def test_timestamp_actions_skip_files_without_timestamps(files):
    assert names(files.filter(timestamp__gt=datetime.datetime(2024, 1, 1, 12, tzinfo=UTC))) == {"t2.csv"}
    assert names(files.filter(timestamp__day_equals=1)) == {"t1.csv"}
    assert names(files.filter(timestamp__weekday_in={0, 1})) == {"t1.csv", "t2.csv"}
    assert names(
        files.filter(timestamp__in_date_range=(datetime.date(2024, 1, 2), datetime.date(2024, 1, 3)))
    ) == {"t2.csv"}
    assert names(files.filter(timestamp__is=None)) == {"notes.txt"}


def test_several_filters_are_all_applied(files):
    assert names(files.filter(name__ends_with=".csv", labels__contains="raw")) == {"t1.csv"}
    assert names(files.filter(name__ends_with=".csv", labels__contains="nothing")) == set()


def test_one_returns_the_single_match_or_raises(files):
    assert files.one(tags__turbine="T1").name == "t1.csv"
    with pytest.raises(UnexpectedNumberOfResultsError, match="More than one"):
        files.one(name__ends_with=".csv")
    with pytest.raises(UnexpectedNumberOfResultsError, match="No results"):
        files.one(name__ends_with=".h5")
    with pytest.raises(UnexpectedNumberOfResultsError):
        files.one()
    assert FilterSet([next(iter(files))]).one() is next(iter(files))
    assert issubclass(UnexpectedNumberOfResultsError, OctueDagsterError)


def test_order_by_nested_attribute_and_sequence_checks(files):
    csvs = files.filter(name__ends_with=".csv")
    ordered = csvs.order_by("tags__cluster")
    assert isinstance(ordered, FilterList) and [f.name for f in ordered] == ["t1.csv", "t2.csv"]
    assert [f.name for f in csvs.order_by("tags.cluster", reverse=True)] == ["t2.csv", "t1.csv"]
    csvs.order_by("tags__cluster", check_start_value=0, check_constant_increment=1)
    with pytest.raises(BrokenSequenceError, match="start value"):
        csvs.order_by("tags__cluster", check_start_value=5)
    with pytest.raises(BrokenSequenceError, match="constant"):
        csvs.order_by("tags__cluster", check_constant_increment=2)
    with pytest.raises(InvalidFilterError, match="cluster"):
        files.order_by("tags__cluster")  # notes.txt has no cluster tag
    with pytest.raises(InvalidFilterError, match="compared"):
        files.order_by("timestamp")  # None cannot be compared with datetimes


def test_filter_list_keeps_order_and_type(files):
    ordered = files.order_by("name")
    kept = ordered.filter(name__ends_with=".csv")
    assert isinstance(kept, FilterList) and [f.name for f in kept] == ["t1.csv", "t2.csv"]


def test_filter_dict_filters_values_and_keeps_keys(files):
    by_name = FilterDict({f.name: f for f in files})
    kept = by_name.filter(labels__contains="raw")
    assert isinstance(kept, FilterDict) and set(kept) == {"t1.csv", "notes.txt"}
    key, value = by_name.one(tags__turbine="T2")
    assert key == "t2.csv" and value.name == "t2.csv"
    assert [key for key, _ in by_name.order_by("name")] == ["notes.txt", "t1.csv", "t2.csv"]


def test_misspelt_actions_and_bad_names_raise_specific_errors(files):
    with pytest.raises(InvalidFilterError, match="ends_withh"):
        files.filter(name__ends_withh=".csv")
    with pytest.raises(InvalidFilterError, match="double underscores"):
        files.filter(name____ends_with=".csv")
    with pytest.raises(InvalidFilterError, match="at least one filter"):
        files.filter()


def test_plain_objects_and_dicts_can_be_filtered():
    items = FilterList([{"a": {"b": 1}}, {"a": {"b": 2}}, {"c": 3}])
    assert items.filter(a__b__gte=2) == [{"a": {"b": 2}}]
    assert satisfies({"x": True}, "x__is", True)
    assert not satisfies({"x": True}, "x__is_not", True)


def test_comparing_naive_with_aware_timestamps_is_a_library_error_naming_both():
    import datetime

    from octue_dagster.core.dataset.filters import FilterList
    from octue_dagster.exceptions import InvalidFilterError

    class Item:
        timestamp = datetime.datetime(2024, 1, 1)  # naive, as Octue's SDK writes a naive datetime

    aware = datetime.datetime(2023, 1, 1, tzinfo=datetime.timezone.utc)
    with pytest.raises(InvalidFilterError, match="naive or both timezone-aware"):
        FilterList([Item()]).filter(timestamp__gt=aware)
    assert len(FilterList([Item()]).filter(timestamp__gt=datetime.datetime(2023, 1, 1))) == 1
