"""Datafile metadata (id, timestamp, labels, tags): validation, Octue SDK serialisation and hashing.

The serialised forms are those of Octue's SDK 0.69, so that buckets and folders written by either are read by both:

- on a GCS object, custom metadata keys `octue__id`, `octue__timestamp`, `octue__tags`, `octue__labels` and
  `octue__sdk_version`, each holding a JSON document;
- in a local `.octue` file, an entry `{"id": ..., "timestamp": ..., "tags": ..., "labels": ..., "sdk_version": ...}`.

In both, sets are written as `{"_type": "set", "items": [...]}` and datetimes as
`{"_type": "datetime", "value": "<isoformat>"}`. As in Octue's SDK, NaN and infinite numbers are written as the
JavaScript literals `NaN`, `Infinity` and `-Infinity`, naive timestamps stay naive, aware ones keep their offset.

Stored metadata is untrusted: everything wrong with it (bad JSON, nesting too deep to parse, impossible dates)
raises `InvalidMetadataError` naming the object or file and the field.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
import threading
import uuid
from collections import UserString
from collections.abc import Iterable, Mapping
from typing import Any


from octue_dagster.core.local.hashing import crc32c_base64
from octue_dagster.exceptions import (
    InvalidLabelError,
    InvalidMetadataError,
    InvalidTagError,
    InvalidTimestampError,
    InvalidTimestampTypeError,
)

NAMESPACE = "octue"
#: The Octue SDK version whose metadata format this library reads and writes.
OCTUE_SDK_FORMAT_VERSION = "0.69.1"
METADATA_FIELDS = ("id", "timestamp", "tags", "labels")

#: GCS limits an object's custom metadata (keys and values together) to 8 KiB.
GCS_CUSTOM_METADATA_LIMIT_BYTES = 8 * 1024

LABEL_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]*(?<!-)$")
TAG_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_]*(?<!_)$")


# --- validation ---------------------------------------------------------------------------------------------------


def validate_label(label: object) -> str:
    """Return `label` stripped of surrounding whitespace if it follows Octue's label rule, else raise."""
    if isinstance(label, UserString):  # Octue's own `Label` is a UserString
        label = str(label)
    if not isinstance(label, str):
        raise InvalidLabelError(f"Labels must be strings; got {label!r} of type {type(label).__name__}.")
    cleaned = label.strip()
    if not LABEL_PATTERN.match(cleaned):
        hint = f" Did you mean {cleaned.lower()!r}?" if LABEL_PATTERN.match(cleaned.lower()) else ""
        raise InvalidLabelError(
            f"Invalid label {label!r}: labels may contain only lowercase letters a-z, digits 0-9 and '-', and must "
            f"not start or end with '-'.{hint}"
        )
    return cleaned


def validate_tag_name(name: object) -> str:
    """Return `name` if it follows Octue's tag-name rule, else raise `InvalidTagError`."""
    if not isinstance(name, str) or not TAG_NAME_PATTERN.match(name):
        raise InvalidTagError(
            f"Invalid tag name {name!r}: tag names may contain only lowercase letters a-z, digits 0-9 and '_', and "
            f"must not start or end with '_'."
        )
    return name


#: Types (exactly these, not subclasses such as enums) whose values JSON stores and reads back unchanged.
_STORED_AS_THEMSELVES = frozenset({str, int, float, bool, type(None)})


def validate_tag_value(name: str, value: Any) -> Any:
    """Return `value` as it will be read back once stored, if Octue's SDK can store it, else raise `InvalidTagError`.

    As in Octue's SDK, values may be anything its JSON encoder takes: JSON values (NaN and infinities included),
    sets, datetimes, `UserString`s, numpy arrays and scalars and objects with a `to_primitive` method. The value kept
    is the stored form (a numpy array becomes a list, a tuple a list), so that what a datafile holds in memory is
    what every reader of the stored metadata sees.
    """
    if type(value) in _STORED_AS_THEMSELVES and not (type(value) is int and value.bit_length() > 10_000):
        # Immutable, and read back exactly as given: no need to round-trip it through JSON (ints of thousands of
        # digits go the long way, to meet Python's limit on converting them to text as they would when stored).
        return value
    try:
        return decode_json(encode_json(value))
    except (TypeError, ValueError, RecursionError) as error:
        raise InvalidTagError(
            f"The value of tag {name!r} ({_shorten(value)}) cannot be stored: tag values must be JSON-serialisable "
            f"(strings, numbers, booleans, None, lists, dicts with string keys, sets and datetimes); {_reason(error)}."
        ) from None


def _reason(error: BaseException) -> str:
    """What went wrong, in words (a RecursionError's own message speaks of Python's stack, not of the value)."""
    return "it is nested too deeply" if isinstance(error, RecursionError) else str(error)


def _shorten(value: object, limit: int = 200) -> str:
    try:
        text = repr(value)
    except RecursionError:
        text = f"<{type(value).__name__} nested too deeply to show>"
    except ValueError:  # an int of more digits than Python converts to text
        text = f"<{type(value).__name__} too large to show>"
    return text if len(text) <= limit else text[:limit] + "..."


def normalise_timestamp(value: object) -> datetime.datetime | None:
    """Check a timestamp: a datetime is kept as it is (naive stays naive, as in Octue's SDK, and an aware one keeps
    its offset, so that stored timestamps are written back byte-identical); POSIX seconds become an aware UTC
    datetime."""
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return datetime.datetime.fromtimestamp(value, tz=datetime.timezone.utc)
        except (OverflowError, OSError, ValueError) as error:
            raise InvalidTimestampError(f"The timestamp {value!r} is not a representable POSIX time: {error}.") from None
    raise InvalidTimestampTypeError(
        f"Invalid timestamp {value!r} of type {type(value).__name__}: give a datetime.datetime, POSIX seconds (an int "
        f"or float, taken as UTC), or None."
    )


def validate_id(value: object) -> str:
    """Return the canonical string form of a UUID, else raise `InvalidMetadataError`."""
    try:
        return str(uuid.UUID(str(value)))
    except (ValueError, TypeError, AttributeError):
        raise InvalidMetadataError(f"Invalid datafile id {value!r}: ids must be UUIDs, such as {str(uuid.uuid4())!r}.")


# --- containers that validate on every change ----------------------------------------------------------------------


class LabelSet(set):
    """A set of labels that checks every label added to it against Octue's label rule.

    A single string is split on whitespace, as in Octue's SDK: `LabelSet("a b")` holds `{"a", "b"}`.
    """

    def __init__(self, labels: Iterable[str] | str | None = None) -> None:
        super().__init__(self._clean_all(labels))

    @staticmethod
    def _clean_all(labels: Iterable[str] | str | None) -> set[str]:
        if labels is None:
            return set()
        if isinstance(labels, UserString):
            labels = str(labels)
        if isinstance(labels, str):
            labels = _json_list_or_words(labels)
        if isinstance(labels, Mapping) or not isinstance(labels, Iterable):
            raise InvalidLabelError(f"Labels must be given as an iterable of strings; got {labels!r}.")
        return {validate_label(label) for label in labels}

    def add(self, label: str) -> None:
        super().add(validate_label(label))

    def update(self, *others: Iterable[str]) -> None:
        for other in others:
            super().update(self._clean_all(other))

    def __ior__(self, other: Iterable[str]) -> LabelSet:  # type: ignore[override,misc]
        self.update(other)
        return self

    def symmetric_difference_update(self, other: Iterable[str]) -> None:
        super().symmetric_difference_update(self._clean_all(other))

    def __ixor__(self, other: Iterable[str]) -> LabelSet:  # type: ignore[override,misc]
        self.symmetric_difference_update(other)
        return self

    def any_label_starts_with(self, value: str) -> bool:
        """Whether any label starts with `value` (as in Octue's SDK)."""
        return any(label.startswith(value) for label in self)

    def any_label_ends_with(self, value: str) -> bool:
        """Whether any label ends with `value` (as in Octue's SDK)."""
        return any(label.endswith(value) for label in self)

    def any_label_contains(self, value: str) -> bool:
        """Whether any label contains `value` (as in Octue's SDK)."""
        return any(value in label for label in self)


def _json_list_or_words(text: str) -> list[Any]:
    """Labels given as one string: a JSON list (`'["a", "b"]'`, as Octue's SDK accepts) or whitespace-separated."""
    if text.lstrip().startswith("["):
        try:
            parsed = json.loads(text)
        except (ValueError, RecursionError):
            parsed = None
        if isinstance(parsed, list):
            return parsed
    return text.split()


class TagDict(dict):
    """A dict of tags that checks every name and value set in it against Octue's tag rules."""

    def __init__(self, tags: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__()
        if tags is not None and not isinstance(tags, Mapping):
            raise InvalidTagError(f"Tags must be given as a mapping of tag names to values; got {tags!r}.")
        self.update(tags or {}, **kwargs)

    def __setitem__(self, name: str, value: Any) -> None:
        super().__setitem__(validate_tag_name(name), validate_tag_value(name, value))

    def update(self, *args: Any, **kwargs: Any) -> None:
        for name, value in dict(*args, **kwargs).items():
            self[name] = value

    def setdefault(self, name: str, default: Any = None) -> Any:
        if name not in self:
            self[name] = default
        return self[name]

    def __ior__(self, other: Mapping[str, Any]) -> TagDict:  # type: ignore[override,misc]
        self.update(other)
        return self


class LabelsAndTags:
    """`labels` and `tags` attributes that validate whatever they are set to (for Datafile and Dataset)."""

    _labels: LabelSet
    _tags: TagDict

    @property
    def labels(self) -> LabelSet:
        """The labels: a set of lowercase strings, checked as they are added."""
        return self._labels

    @labels.setter
    def labels(self, value: Iterable[str] | str | None) -> None:
        self._labels = LabelSet(value)

    @property
    def tags(self) -> TagDict:
        """The tags: a dict of tag names to JSON-serialisable values, checked as they are set."""
        return self._tags

    @tags.setter
    def tags(self, value: Mapping[str, Any] | None) -> None:
        self._tags = TagDict(value)

    def add_labels(self, *labels: str) -> None:
        """Add labels (each checked), as Octue's SDK's `add_labels("a", "b")`."""
        for label in labels:
            self._labels.update(LabelSet(label))

    def add_tags(self, tags: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        """Add or replace tags (each checked), as Octue's SDK's `add_tags({"a": 1}, b=2)`."""
        self._tags.update({**(tags or {}), **kwargs})


# --- JSON in Octue's dialect ---------------------------------------------------------------------------------------


class OctueJSONEncoder(json.JSONEncoder):
    """Encode what Octue's SDK's encoder encodes, the way it does: sets, datetimes, `UserString`s, numpy values and
    objects with a `to_primitive` method."""

    def default(self, obj: Any) -> Any:
        if hasattr(obj, "to_primitive"):
            return obj.to_primitive()
        if isinstance(obj, (set, frozenset)):
            return {"_type": "set", "items": sorted(obj)}
        if isinstance(obj, UserString):
            return str(obj)
        if isinstance(obj, datetime.datetime):
            return {"_type": "datetime", "value": obj.isoformat()}
        # numpy arrays, matrices and scalars, without importing numpy (it is not a dependency).
        if type(obj).__module__.split(".")[0] == "numpy" and hasattr(obj, "tolist"):
            return obj.tolist()
        return super().default(obj)


def _decode_hook(obj: dict[str, Any]) -> Any:
    kind = obj.get("_type")
    if kind == "set" and isinstance(obj.get("items"), list):
        try:
            return set(obj["items"])
        except TypeError:
            return obj
    if kind == "datetime" and isinstance(obj.get("value"), str):
        try:
            return datetime.datetime.fromisoformat(obj["value"])
        except ValueError:
            return obj
    return obj


#: Encoders by their options, made once: `json.dumps(..., cls=...)` builds a new encoder on every call, which costs
#: more than encoding a label set (every listed or uploaded datafile encodes five fields).
_ENCODERS: dict[tuple[tuple[str, Any], ...], OctueJSONEncoder] = {}
#: One decoder per thread (its scanner is not shared while the decode hook runs Python code), made once, for the
#: same reason.
_decoders = threading.local()


def encode_json(value: Any, **kwargs: Any) -> str:
    """Serialise `value` to JSON as Octue's SDK does (sets and datetimes tagged with `_type`, NaN as `NaN`)."""
    try:
        key = tuple(sorted(kwargs.items()))
        encoder = _ENCODERS.get(key)
    except TypeError:  # an option whose value cannot be a key (a `default` function, say): made for this call
        return json.dumps(value, cls=OctueJSONEncoder, **kwargs)
    if encoder is None:
        encoder = OctueJSONEncoder(**kwargs)
        if len(_ENCODERS) < 16:
            _ENCODERS[key] = encoder
    return encoder.encode(value)


def decode_json(text: str | bytes) -> Any:
    """Parse JSON written by `encode_json` or by Octue's SDK; anything unparseable raises `ValueError`.

    Exactly `json.loads(text, object_hook=...)`, with the decoder made once per thread.
    """
    if isinstance(text, (bytes, bytearray)):
        text = text.decode(json.detect_encoding(text), "surrogatepass")
    elif not isinstance(text, str):
        raise TypeError(f"the JSON object must be str, bytes or bytearray, not {type(text).__name__}")
    if text.startswith("\ufeff"):
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
    decoder = getattr(_decoders, "decoder", None)
    if decoder is None:
        decoder = _decoders.decoder = json.JSONDecoder(object_hook=_decode_hook)
    try:
        return decoder.decode(text)
    except RecursionError:
        raise ValueError("the JSON is nested too deeply to read") from None


def parse_raw_json(text: str | bytes) -> Any:
    """Parse JSON without interpreting it (no sets or datetimes made; NaN and unknown `_type` objects kept), for
    documents whose other parts must be written back as they were; unparseable input raises `ValueError`."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("the JSON is nested too deeply to read") from None


def decode_raw(value: Any) -> Any:
    """Interpret a value parsed by `parse_raw_json` as `decode_json` would have."""
    return decode_json(encode_json(value))


def canonical_json(value: Any) -> str:
    """One JSON text per value (sorted keys and set items, ASCII, no spaces), to compare values that hold NaN."""
    return encode_json(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


# --- the metadata record -------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class StoredMetadata:
    """Metadata as read from a store. Fields missing from the store are `None`.

    Two records are equal when they would be stored as the same JSON (so a NaN tag equals itself, and a naive
    timestamp differs from an aware one at the same wall-clock time).
    """

    id: str | None = None
    timestamp: datetime.datetime | None = None
    labels: frozenset[str] | None = None
    tags: dict[str, Any] | None = None

    def canonical(self) -> str:
        """The record as canonical JSON (see `canonical_json`)."""
        labels = sorted(self.labels) if self.labels is not None else None
        return canonical_json([self.id, self.timestamp, labels, self.tags])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StoredMetadata):
            return NotImplemented
        return self.canonical() == other.canonical()

    def __hash__(self) -> int:
        return hash(self.canonical())


def metadata_record(
    id: str, timestamp: datetime.datetime | None, labels: Iterable[str], tags: Mapping[str, Any]
) -> dict[str, Any]:
    """The Octue SDK's primitive metadata dictionary, before JSON encoding."""
    return {
        "id": id,
        "timestamp": timestamp,
        "tags": dict(tags),
        "labels": set(labels),
        "sdk_version": OCTUE_SDK_FORMAT_VERSION,
    }


def to_cloud_metadata(
    id: str, timestamp: datetime.datetime | None, labels: Iterable[str], tags: Mapping[str, Any]
) -> dict[str, str]:
    """GCS custom metadata for a datafile, in Octue's format; raises if it exceeds GCS's 8 KiB limit."""
    encoded = {
        f"{NAMESPACE}__{key}": encode_json(value) for key, value in metadata_record(id, timestamp, labels, tags).items()
    }
    size = sum(len(key.encode()) + len(value.encode()) for key, value in encoded.items())
    if size > GCS_CUSTOM_METADATA_LIMIT_BYTES:
        raise InvalidMetadataError(
            f"The metadata of datafile {id} takes {size} bytes, over GCS's limit of "
            f"{GCS_CUSTOM_METADATA_LIMIT_BYTES} bytes for custom metadata. Keep large values in the file itself."
        )
    return encoded


def to_local_metadata(
    id: str, timestamp: datetime.datetime | None, labels: Iterable[str], tags: Mapping[str, Any]
) -> dict[str, Any]:
    """A `.octue` entry for a datafile, as primitives ready for `encode_json`."""
    return metadata_record(id, timestamp, labels, tags)


def _parse_timestamp(value: Any) -> datetime.datetime | None:
    if isinstance(value, str):
        value = datetime.datetime.fromisoformat(value)
    elif isinstance(value, dict):
        raise InvalidTimestampError(f"{_shorten(value)} is not a datetime in Octue's format")
    return normalise_timestamp(value)


def _parse_labels(value: Any) -> frozenset[str]:
    if isinstance(value, dict) and value.get("_type") == "set":
        value = value.get("items")
    return frozenset(LabelSet(value))


def _parse_tags(value: Any) -> dict[str, Any]:
    return dict(TagDict(value))


_FIELD_PARSERS = {"id": validate_id, "timestamp": _parse_timestamp, "labels": _parse_labels, "tags": _parse_tags}


def to_local_entry(raw: Any, stored: StoredMetadata | None, merged: StoredMetadata) -> dict[str, Any]:
    """The `.octue` entry that records `merged`, given the uninterpreted entry `raw` that was read as `stored`
    (`None`: `raw` could not be read, so its fields are all replaced).

    Fields whose value did not change, and keys this library does not know, are kept exactly as they were written
    (NaN, unknown `_type` objects, datetime spellings), so that rewriting an entry changes only what changed.
    """
    entry = dict(raw) if isinstance(raw, Mapping) else {}
    record = metadata_record(merged.id or "", merged.timestamp, merged.labels or (), merged.tags or {})
    changed = False
    for field in METADATA_FIELDS:
        unchanged = stored is not None and canonical_json(_field(stored, field)) == canonical_json(_field(merged, field))
        if field in entry and unchanged:
            continue
        entry[field] = parse_raw_json(encode_json(record[field]))
        changed = True
    if changed or "sdk_version" not in entry:
        entry["sdk_version"] = OCTUE_SDK_FORMAT_VERSION
    return entry


def _field(record: StoredMetadata, field: str) -> Any:
    value = getattr(record, field)
    return sorted(value) if field == "labels" and value is not None else value


def _parse_fields(fields: Mapping[str, Any], where: str) -> StoredMetadata:
    """Validate decoded metadata fields, raising `InvalidMetadataError` that names `where` and the field."""
    values: dict[str, Any] = {}
    for field, parse in _FIELD_PARSERS.items():
        if fields.get(field) is None:
            continue
        try:
            values[field] = parse(fields[field])
        except (ValueError, TypeError, OverflowError, RecursionError) as error:
            raise _unreadable_field(field, where, error) from None
    return StoredMetadata(**values)


def _unreadable_field(field: str, where: str, error: BaseException) -> InvalidMetadataError:
    return InvalidMetadataError(
        f"The stored metadata field {field!r} of {where} cannot be read: {_reason(error).rstrip('.')}. Fix it, or "
        f"instantiate the datafile with ignore_stored_metadata=True to replace it."
    )


#: What `stored_field` returns for a field that cannot be read.
UNREADABLE: Any = object()


def stored_field(custom_metadata: Mapping[str, str] | None, field: str) -> Any:
    """One Octue field of a GCS object's custom metadata, parsed as `from_cloud_metadata` parses it (labels as a
    frozenset, tags as a dict), `None` if absent, or `UNREADABLE`: for filters that need one field of many objects."""
    raw = (custom_metadata or {}).get(f"{NAMESPACE}__{field}")
    if raw is None:
        return None
    try:
        value = decode_json(raw)
        return None if value is None else _FIELD_PARSERS[field](value)
    except (ValueError, TypeError, OverflowError, RecursionError):
        return UNREADABLE


def from_cloud_metadata(custom_metadata: Mapping[str, str] | None, where: str) -> StoredMetadata:
    """Read Octue metadata from a GCS object's custom metadata; keys outside the `octue__` namespace are ignored."""
    fields: dict[str, Any] = {}
    for field in METADATA_FIELDS:
        raw = (custom_metadata or {}).get(f"{NAMESPACE}__{field}")
        if raw is None:
            continue
        try:
            fields[field] = decode_json(raw)
        except (ValueError, TypeError) as error:
            raise InvalidMetadataError(
                f"The custom metadata {NAMESPACE}__{field}={raw[:200]!r} of {where} is not JSON in Octue's format "
                f"({error}). Fix it, or instantiate the datafile with ignore_stored_metadata=True to replace it."
            ) from None
    return _parse_fields(fields, where)


def from_local_metadata(entry: Any, where: str) -> StoredMetadata:
    """Read Octue metadata from one `.octue` datafile entry, as parsed by `parse_raw_json` or `decode_json`."""
    if entry is None:
        return StoredMetadata()
    if not isinstance(entry, Mapping):
        raise InvalidMetadataError(f"The metadata entry for {where} should be a JSON object; got {_shorten(entry)}.")
    fields: dict[str, Any] = {}
    for field in METADATA_FIELDS:
        try:
            fields[field] = decode_raw(entry.get(field))
        except (ValueError, TypeError, RecursionError) as error:
            raise _unreadable_field(field, where, error) from None
    return _parse_fields(fields, where)


def posix_seconds(timestamp: datetime.datetime) -> float:
    """A timestamp as POSIX seconds: a naive one in local time (as Python and Octue's SDK take it), or as UTC where
    local time cannot represent it (such as 0001-01-01)."""
    try:
        return timestamp.timestamp()
    except (OverflowError, ValueError, OSError):
        return (timestamp.replace(tzinfo=timestamp.tzinfo or datetime.timezone.utc) - _EPOCH).total_seconds()


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def metadata_hash(timestamp: datetime.datetime | None, labels: Iterable[str], tags: Mapping[str, Any]) -> str:
    """Hash a canonical JSON form of the metadata (sorted keys and labels, id excluded); equal in every process."""
    canonical = canonical_json({"labels": sorted(labels), "tags": tags, "timestamp": timestamp})
    return crc32c_base64(canonical.encode("ascii"))
