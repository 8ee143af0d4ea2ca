"""Octue's filter syntax for collections of Datafiles (or anything with attributes): `FilterSet`, `FilterList` and
`FilterDict`, with `filter`, `one` and `order_by`.

A filter is a keyword argument `<attribute>__<nested attribute or key>__...__<action>=value`, as in Octue's SDK:
`name__ends_with=".csv"`, `labels__contains="raw"`, `tags__turbine__equals="T1"` (or just `tags__turbine="T1"`),
`timestamp__gt=datetime(...)`, `size_bytes__in_range=(0, 1024)`. Every part before the action names an attribute or,
for mappings such as tags, a key. Which actions exist depends on the type of the value found (the tables below mirror
Octue's), and each has a `not_` complement (`is_not` for `is`). An action the value's type lacks falls back to
`equals` on the whole path, so `tags__cluster=1` means `tags["cluster"] == 1`.

Differences from Octue 0.69.1, all where Octue raises: a file that lacks a filtered-for attribute or tag, or whose
value is `None` for an action `None` cannot take (`timestamp__gt` on a file without a timestamp), does not satisfy
the filter instead of raising (unless `ignore_items_without_attribute=False`); several filters at once are applied
with the same setting (Octue 0.69.1 flips it after the first); items need no base class, only attributes.

Everything here is pure: no I/O.
"""

from __future__ import annotations

import collections.abc
import datetime
import numbers
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from octue_dagster.exceptions import BrokenSequenceError, InvalidFilterError, UnexpectedNumberOfResultsError

Action = Callable[[Any, Any], bool]
T = TypeVar("T")

_MISSING = object()


def _with_complement(name: str, action: Action) -> dict[str, Action]:
    """An action and its negation (`not_<name>`, or `is_not` for `is`)."""
    complement = "is_not" if name == "is" else f"not_{name}"
    return {name: action, complement: lambda item, value: not action(item, value)}


_IS = _with_complement("is", lambda item, value: item is value)
_EQUALS = _with_complement("equals", lambda item, value: value == item)
_CONTAINS = _with_complement("contains", lambda item, value: value in item)
_IN_RANGE = _with_complement("in_range", lambda item, value: value[0] <= item <= value[1])
_ICONTAINS = _with_complement("icontains", lambda item, value: value.casefold() in item.casefold())
_COMPARISONS: dict[str, Action] = {
    "lt": lambda item, value: item < value,
    "lte": lambda item, value: item <= value,
    "gt": lambda item, value: item > value,
    "gte": lambda item, value: item >= value,
}


def _any_label(test: Callable[[str, str], bool]) -> Action:
    return lambda labels, value: any(test(str(label), value) for label in labels)


def _datetime_part(part: Callable[[datetime.datetime], Any]) -> dict[str, Action]:
    return {"equals": lambda item, value: part(item) == value, "in": lambda item, value: part(item) in value}


_DATETIME_PARTS: dict[str, Callable[[datetime.datetime], Any]] = {
    "year": lambda item: item.year,
    "month": lambda item: item.month,
    "day": lambda item: item.day,
    "weekday": lambda item: item.weekday(),
    "iso_weekday": lambda item: item.isoweekday(),
    "time": lambda item: item.time(),
    "hour": lambda item: item.hour,
    "minute": lambda item: item.minute,
    "second": lambda item: item.second,
}

#: Actions by the exact type name of the value, as in Octue (so a `LabelSet` gets label actions, a `bool` no `lt`).
TYPE_ACTIONS: dict[str, dict[str, Action]] = {
    "bool": {**_EQUALS, **_IS},
    "str": {
        **_with_complement("iequals", lambda item, value: value.casefold() == item.casefold()),
        **_with_complement("starts_with", lambda item, value: item.startswith(value)),
        **_with_complement("ends_with", lambda item, value: item.endswith(value)),
        **_EQUALS,
        **_IS,
        **_COMPARISONS,
        **_CONTAINS,
        **_ICONTAINS,
        **_IN_RANGE,
    },
    "NoneType": {**_EQUALS, **_IS},
    "LabelSet": {
        **_EQUALS,
        **_CONTAINS,
        **_IS,
        **_with_complement("any_label_contains", _any_label(lambda label, value: value in label)),
        **_with_complement("any_label_starts_with", _any_label(lambda label, value: label.startswith(value))),
        **_with_complement("any_label_ends_with", _any_label(lambda label, value: label.endswith(value))),
    },
    "datetime": {
        **_EQUALS,
        **_IS,
        **_COMPARISONS,
        **_IN_RANGE,
        **{
            f"{part}_{kind}": action
            for part, getter in _DATETIME_PARTS.items()
            for kind, action in _datetime_part(getter).items()
        },
        "in_date_range": lambda item, value: value[0] <= item.date() <= value[1],
        "in_time_range": lambda item, value: value[0] <= item.time() <= value[1],
    },
}

#: Actions by interface, for values whose type has no entry above (numbers, then any other iterable).
INTERFACE_ACTIONS: tuple[tuple[type, dict[str, Action]], ...] = (
    (numbers.Number, {**_EQUALS, **_COMPARISONS, **_IS, **_IN_RANGE}),
    (collections.abc.Iterable, {**_EQUALS, **_CONTAINS, **_ICONTAINS, **_IS}),
)

_ALL_ACTION_NAMES = frozenset(
    name for actions in [*TYPE_ACTIONS.values(), *(actions for _, actions in INTERFACE_ACTIONS)] for name in actions
)


def get_nested(item: Any, path: Iterable[str]) -> Any:
    """Follow `path` through attributes and mapping keys (in any mix); raise `AttributeError` if a step is missing."""
    value = item
    for part in path:
        if isinstance(value, Mapping) and part in value:
            value = value[part]
            continue
        found = getattr(value, part, _MISSING)
        if found is _MISSING:
            raise AttributeError(f"{item!r} has no attribute or key {'.'.join(path)!r}.")
        value = found
    return value


def actions_for(value: Any) -> dict[str, Action]:
    """The filter actions available for a value, by its type name or, failing that, its interface (`{}` if none)."""
    actions = TYPE_ACTIONS.get(type(value).__name__)
    if actions is not None:
        return actions
    for interface, interface_actions in INTERFACE_ACTIONS:
        if isinstance(value, interface):
            return interface_actions
    return {}


def _split(filter_name: str) -> list[str]:
    parts = filter_name.split("__")
    if not all(parts):
        raise InvalidFilterError(
            f"Invalid filter name {filter_name!r}: write '<attribute>__<action>' or '<attribute>__<key>__<action>' "
            f"with single names between double underscores, e.g. 'name__ends_with' or 'tags__turbine__equals'."
        )
    return parts


def satisfies(item: Any, filter_name: str, value: Any, *, ignore_items_without_attribute: bool = True) -> bool:
    """Whether `item` passes one filter such as `name__ends_with=".csv"` (see the module docstring)."""
    parts = _split(filter_name)
    parent: Any = _MISSING
    if len(parts) > 1:
        try:
            parent = get_nested(item, parts[:-1])
        except AttributeError:
            if ignore_items_without_attribute:
                return False
            raise
        action = actions_for(parent).get(parts[-1])
        if action is not None:
            try:
                return bool(action(parent, value))
            except TypeError as error:
                # Such as a naive timestamp (as Octue's SDK writes them) compared with an aware one.
                raise InvalidFilterError(
                    f"The filter {filter_name}={value!r} cannot compare {type(parent).__name__} {parent!r} with "
                    f"{type(value).__name__} {value!r} ({error}). Give a value of the same kind (for timestamps: both "
                    f"naive or both timezone-aware)."
                ) from None
        if parent is None and parts[-1] in _ALL_ACTION_NAMES:
            # A missing value (no timestamp, a tag set to None) does not satisfy a comparison, rather than raising.
            return False
    # Not an action for this value: `a__b=value` is shorthand for `a__b__equals=value`.
    try:
        whole = get_nested(item, parts)
    except AttributeError:
        if len(parts) == 1:
            # Not an attribute and no action (such as `name_icontains`, a single underscore): a malformed filter, which
            # raises as in Octue's SDK rather than matching nothing.
            raise InvalidFilterError(
                f"Invalid filter name {filter_name!r}. Filter names should be in the form "
                f"'<attribute_name_0>__<attribute_name_1>__<...>__<filter_kind>' with at least one attribute name "
                f"included, e.g. 'name__icontains'."
            ) from None
        if parent is not _MISSING and not isinstance(parent, Mapping):
            # Not a key that some items may lack, so a misspelt or unsupported action: say so whatever the setting.
            raise InvalidFilterError(
                f"Invalid filter {filter_name!r}: there is no filter action {parts[-1]!r} for "
                f"{type(parent).__name__} values; the options are {sorted(actions_for(parent))}."
            ) from None
        if ignore_items_without_attribute:
            return False
        raise
    return bool(whole == value)


def _filter_items(items: Iterable[T], key: Callable[[T], Any], filters: Mapping[str, Any], ignore: bool) -> list[T]:
    if not filters:
        raise InvalidFilterError("Give at least one filter, e.g. files.filter(name__ends_with='.csv').")
    return [
        item
        for item in items
        if all(
            satisfies(key(item), name, value, ignore_items_without_attribute=ignore) for name, value in filters.items()
        )
    ]


def _sort_key(attribute_name: str) -> tuple[list[str], Callable[[Any], Any]]:
    path = _split(attribute_name.replace(".", "__"))
    return path, lambda item: get_nested(item, path)


def _raise_unless_one(count: int, filters: Mapping[str, Any]) -> None:
    if count == 0:
        raise UnexpectedNumberOfResultsError(f"No results found for filters {dict(filters)}.")
    if count > 1:
        raise UnexpectedNumberOfResultsError(f"More than one result found for filters {dict(filters)} ({count} results).")


class FilterContainer:
    """Filtering and ordering for a container of items with attributes; mixed into `set`, `list` (and `dict`)."""

    def _values(self) -> Iterable[Any]:
        return iter(self)  # type: ignore[call-overload]

    def filter(self, ignore_items_without_attribute: bool = True, **filters: Any) -> Any:
        """A new container of the same type holding only the items that satisfy every filter.

        Items without a filtered-for attribute or key are left out, or raise `AttributeError` if
        `ignore_items_without_attribute` is `False`.
        """
        return type(self)(_filter_items(self._values(), lambda item: item, filters, ignore_items_without_attribute))

    def one(self, **filters: Any) -> Any:
        """The only item satisfying the filters (or the only item, with no filters); otherwise raise
        `UnexpectedNumberOfResultsError`."""
        results = self.filter(**filters) if filters else self
        _raise_unless_one(len(results), filters)  # type: ignore[arg-type]
        return next(iter(results))

    def order_by(
        self,
        attribute_name: str,
        check_start_value: Any = None,
        check_constant_increment: Any = None,
        reverse: bool = False,
    ) -> FilterList:
        """The items sorted by an (optionally nested: `"tags__height"` or `"tags.height"`) attribute, as a `FilterList`.

        `check_start_value` and `check_constant_increment` raise `BrokenSequenceError` if the first value or the steps
        between values are not as given (to check, say, that no day of a series is missing).
        """
        path, key = _sort_key(attribute_name)
        try:
            results = FilterList(sorted(self._values(), key=key, reverse=reverse))
        except AttributeError:
            raise InvalidFilterError(
                f"Cannot order by {attribute_name!r}: one or more items have no attribute or key {'.'.join(path)!r}."
            ) from None
        except TypeError as error:
            raise InvalidFilterError(
                f"Cannot order by {attribute_name!r}: its values cannot be compared ({error}); some may be None."
            ) from None
        values = [key(item) for item in results]
        if check_start_value is not None and values and values[0] != check_start_value:
            raise BrokenSequenceError(
                f"The first {attribute_name!r} is {values[0]!r}, not the expected start value {check_start_value!r}."
            )
        if check_constant_increment is not None:
            for before, after in zip(values, values[1:]):
                if after - before != check_constant_increment:
                    raise BrokenSequenceError(
                        f"The values of {attribute_name!r} do not increase by a constant {check_constant_increment!r}: "
                        f"{before!r} is followed by {after!r}."
                    )
        return results


class FilterSet(FilterContainer, set):  # type: ignore[misc]
    """A set of items that can be filtered, picked from (`one`) and ordered (`order_by`) with Octue's filter syntax."""

    def __repr__(self) -> str:
        return f"<FilterSet({set(self)!r})>"


class FilterList(FilterContainer, list):  # type: ignore[misc]
    """A list of items that can be filtered, picked from (`one`) and ordered (`order_by`) with Octue's filter syntax."""

    def __repr__(self) -> str:
        return f"<FilterList({list(self)!r})>"


class FilterDict(dict):  # type: ignore[type-arg]
    """A dict whose values can be filtered with Octue's filter syntax; `filter` keeps keys, `one` returns a (key,
    value) pair and `order_by` a `FilterList` of pairs ordered by the values' attribute."""

    def filter(self, ignore_items_without_attribute: bool = True, **filters: Any) -> FilterDict:
        """A new `FilterDict` of the entries whose values satisfy every filter."""
        kept = _filter_items(self.items(), lambda entry: entry[1], filters, ignore_items_without_attribute)
        return FilterDict(kept)

    def one(self, **filters: Any) -> tuple[Any, Any]:
        """The only (key, value) entry whose value satisfies the filters; otherwise `UnexpectedNumberOfResultsError`."""
        results = self.filter(**filters) if filters else self
        _raise_unless_one(len(results), filters)
        return next(iter(results.items()))

    def order_by(self, attribute_name: str, reverse: bool = False) -> FilterList:
        """The (key, value) entries sorted by an attribute of the values, as a `FilterList`."""
        path, key = _sort_key(attribute_name)
        try:
            return FilterList(sorted(self.items(), key=lambda entry: key(entry[1]), reverse=reverse))
        except AttributeError:
            raise InvalidFilterError(
                f"Cannot order by {attribute_name!r}: one or more values have no attribute or key {'.'.join(path)!r}."
            ) from None
        except TypeError as error:
            raise InvalidFilterError(f"Cannot order by {attribute_name!r}: its values cannot be compared ({error}).")

    def __repr__(self) -> str:
        return f"<FilterDict({dict(self)!r})>"
