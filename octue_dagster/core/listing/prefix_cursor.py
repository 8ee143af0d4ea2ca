"""New-or-changed detection over a listing, with a cursor whose size does not grow with the bucket.

Each content version of an object has its own generation and creation time (`timeCreated`); a metadata-only patch
changes neither (it bumps `updated` and the metageneration), and deleting and re-creating an object gives it a new
generation and creation time. So "new or changed content since the last look" is exactly "created after what was
seen last time", and the cursor needs only the newest creation time seen (the high-water mark) plus the objects
created within `settle` of it, with their generations: objects created at the same instant, or committed out of
order by a few moments, are told apart by name and generation. The cursor grows with how many objects are written
within `settle` of the newest one, never with the number of objects under the prefix.

One difference from a map of every object's crc32c: an object re-uploaded with identical bytes is a new
generation, so it is reported (`Datafile.upload` never re-uploads identical content; other tools may).

A scan reads the listing once, as a stream, holding only the objects created within the window (plus those to
report), so a prefix of 10^6 objects costs the listing requests and little memory.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Iterable, Mapping
from typing import Protocol

CURSOR_VERSION = 2
#: How far before the newest creation time seen objects are still remembered by name: covers uploads whose
#: creation time was assigned before, but whose commit became visible after, a newer object's.
DEFAULT_SETTLE = datetime.timedelta(seconds=1)
#: Drop settled objects from memory whenever this many have piled up during a scan.
_PRUNE_EVERY = 4096


class _Path(Protocol):
    name: str


class ListedObject(Protocol):
    """What a scan needs of a listed object (`store.ObjectInfo` has it)."""

    path: _Path
    generation: int
    time_created: datetime.datetime | None


@dataclasses.dataclass(frozen=True)
class PrefixCursor:
    """The newest creation time seen (`high_water`) and the generations of the objects created within the settle
    window below it (`recent`, name -> generation)."""

    high_water: datetime.datetime | None = None
    recent: Mapping[str, int] = dataclasses.field(default_factory=dict)

    def encode(self) -> str:
        return json.dumps(
            {
                "version": CURSOR_VERSION,
                "high_water": None if self.high_water is None else self.high_water.isoformat(),
                "recent": {name: str(generation) for name, generation in sorted(self.recent.items())},
            },
            separators=(",", ":"),
        )


@dataclasses.dataclass(frozen=True)
class LegacyCursor:
    """A cursor written by the first version of the prefix sensor: every object's name -> crc32c."""

    crc32c_by_name: Mapping[str, str]


def decode_cursor(text: str | None) -> PrefixCursor | LegacyCursor | None:
    """The cursor stored by a previous evaluation, or `None` for the first one (or a cursor that cannot be read)."""
    if not text:
        return None
    try:
        data = json.loads(text)
        if data.get("version") == CURSOR_VERSION:
            high_water = data["high_water"]
            return PrefixCursor(
                None if high_water is None else datetime.datetime.fromisoformat(high_water),
                {str(name): int(generation) for name, generation in data["recent"].items()},
            )
        return LegacyCursor({str(name): str(entry[1]) for name, entry in data["objects"].items()})
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None


@dataclasses.dataclass(frozen=True)
class ScanResult:
    """The objects with new content (oldest first, at most the limit), and the cursor for the next scan."""

    changed: list[ListedObject]
    cursor: PrefixCursor
    #: New or changed objects left for a later scan because of the limit.
    deferred: int = 0


def scan(
    objects: Iterable[ListedObject],
    previous: PrefixCursor | LegacyCursor | None,
    *,
    settle: datetime.timedelta = DEFAULT_SETTLE,
    limit: int | None = None,
    report_existing: bool = True,
) -> ScanResult:
    """Find the objects created since `previous` was written, and the cursor that records them as seen.

    With `previous=None` (the first scan) every object is new, unless `report_existing=False`, which records them
    all as seen. With `limit`, only the oldest `limit` new objects are reported; the cursor stops just before the
    rest, so the next scan reports them.
    """
    window_start: datetime.datetime | None = None
    recent: Mapping[str, int] = {}
    legacy: Mapping[str, str] | None = None
    old_high_water: datetime.datetime | None = None
    if isinstance(previous, PrefixCursor):
        old_high_water, recent = previous.high_water, previous.recent
        window_start = None if old_high_water is None else old_high_water - settle
    elif isinstance(previous, LegacyCursor):
        legacy = previous.crc32c_by_name

    fresh: list[ListedObject] = []
    seen_window: dict[str, tuple[datetime.datetime | None, int]] = {}  # seen objects that may still be recent
    seen_newest: datetime.datetime | None = None
    for info in objects:
        created = info.time_created
        if window_start is not None and created is not None and created < window_start:
            continue  # created long before the last scan's newest object: seen then
        name = info.path.name
        if legacy is not None:
            is_new = legacy.get(name) != (getattr(info, "crc32c", None) or "")
        elif previous is None:
            is_new = report_existing
        else:
            is_new = recent.get(name) != info.generation
        if is_new:
            fresh.append(info)
            continue
        seen_window[name] = (created, info.generation)
        if created is not None and (seen_newest is None or created > seen_newest):
            seen_newest = created
        if len(seen_window) >= _PRUNE_EVERY and seen_newest is not None:
            seen_window = _within(seen_window, seen_newest - settle)

    fresh.sort(key=lambda item: (_sortable(item.time_created), item.path.name))
    reported = fresh if limit is None else fresh[:limit]
    known = [time for time in (old_high_water, seen_newest, *(i.time_created for i in reported)) if time is not None]
    high_water = max(known) if known else None
    if len(reported) < len(fresh) and high_water is not None and fresh[len(reported)].time_created is not None:
        # Stop at the first deferred object (only a legacy cursor can have seen objects newer than it).
        high_water = min(high_water, fresh[len(reported)].time_created)
    window = {name: entry for name, entry in seen_window.items()}
    window.update((info.path.name, (info.time_created, info.generation)) for info in reported)
    if high_water is not None:
        window = _within(window, high_water - settle)
    cursor = PrefixCursor(high_water, {name: generation for name, (_, generation) in window.items()})
    return ScanResult(reported, cursor, deferred=len(fresh) - len(reported))


def _within(
    entries: dict[str, tuple[datetime.datetime | None, int]], start: datetime.datetime
) -> dict[str, tuple[datetime.datetime | None, int]]:
    return {name: entry for name, entry in entries.items() if entry[0] is None or entry[0] >= start}


_EARLIEST = datetime.datetime.min.replace(tzinfo=datetime.timezone.utc)


def _sortable(time: datetime.datetime | None) -> datetime.datetime:
    return _EARLIEST if time is None else time


__all__ = ["DEFAULT_SETTLE", "LegacyCursor", "PrefixCursor", "ScanResult", "decode_cursor", "scan"]
