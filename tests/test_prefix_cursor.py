"""The bounded prefix-sensor cursor against a model bucket: every new content version is reported exactly once.

The model is what GCS does and fake-gcs-server does not fully do: a metadata patch bumps `updated` (and the
metageneration) but keeps the generation and creation time; an overwrite, or a delete and re-create, is a new
generation with a new creation time; several objects can share one creation time; and an upload's creation time can
be a moment older than an object that became visible before it.
"""

from __future__ import annotations

import dataclasses
import datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from octue_dagster.core.listing.prefix_cursor import LegacyCursor, PrefixCursor, decode_cursor, scan

EPOCH = datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc)
SETTLE = datetime.timedelta(milliseconds=5)


@dataclasses.dataclass(frozen=True)
class Path:
    name: str


@dataclasses.dataclass(frozen=True)
class Listed:
    path: Path
    generation: int
    time_created: datetime.datetime | None
    updated: datetime.datetime | None
    crc32c: str = ""


class ModelBucket:
    def __init__(self) -> None:
        self.objects: dict[str, Listed] = {}
        self.clock = 0  # milliseconds
        self.next_generation = 1

    def now(self, lateness_ms: int = 0) -> datetime.datetime:
        return EPOCH + datetime.timedelta(milliseconds=self.clock - lateness_ms)

    def write(self, name: str, lateness_ms: int = 0) -> None:
        created = self.now(lateness_ms)
        self.objects[name] = Listed(Path(name), self.next_generation, created, created, f"crc{self.next_generation}")
        self.next_generation += 1

    def patch(self, name: str) -> None:
        if name in self.objects:  # metadata only: `updated` moves, generation and creation time do not
            self.objects[name] = dataclasses.replace(self.objects[name], updated=self.now())

    def delete(self, name: str) -> None:
        self.objects.pop(name, None)

    def listing(self) -> list[Listed]:
        return [self.objects[name] for name in sorted(self.objects)]


names = st.sampled_from([f"in/{letter}.csv" for letter in "abcdef"])
operations = st.lists(
    st.one_of(
        st.tuples(st.just("write"), names, st.integers(0, 5)),  # lateness up to SETTLE
        st.tuples(st.just("patch"), names, st.just(0)),
        st.tuples(st.just("delete"), names, st.just(0)),
        st.tuples(st.just("tick"), st.just(""), st.integers(0, 3)),  # advance the clock by 0-3 ms (ties happen)
        st.tuples(st.just("scan"), st.just(""), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(operations=operations, limit=st.none() | st.integers(1, 3))
def test_every_new_content_version_is_reported_exactly_once_and_metadata_patches_never(operations, limit):
    bucket = ModelBucket()
    cursor_text: str | None = None
    reported: list[tuple[str, int]] = []

    def run_scan() -> None:
        nonlocal cursor_text
        result = scan(bucket.listing(), decode_cursor(cursor_text), settle=SETTLE, limit=limit)
        assert limit is None or len(result.changed) <= limit
        reported.extend((info.path.name, info.generation) for info in result.changed)
        cursor_text = result.cursor.encode()
        # Bounded: only objects created within the settle window of the high-water mark are remembered.
        cursor = decode_cursor(cursor_text)
        assert isinstance(cursor, PrefixCursor)
        for name in cursor.recent:
            assert bucket.objects.get(name) is None or bucket.objects[name].time_created >= cursor.high_water - SETTLE

    for kind, name, amount in operations:
        if kind == "write":
            bucket.write(name, lateness_ms=amount)
        elif kind == "patch":
            bucket.patch(name)
        elif kind == "delete":
            bucket.delete(name)
        elif kind == "tick":
            bucket.clock += amount
        else:
            run_scan()
    # Drain: with a limit, later scans report what earlier ones deferred; then nothing is left.
    bucket.clock += 10
    for _ in range(len(bucket.objects) + 1):
        run_scan()
    assert len(reported) == len(set(reported)), "a content version was reported twice"
    present = {(info.path.name, info.generation) for info in bucket.listing()}
    assert present <= set(reported), "a present content version was never reported"
    written_generations = set(range(1, bucket.next_generation))
    assert {generation for _, generation in reported} <= written_generations


def test_cursor_size_does_not_grow_with_the_number_of_objects():
    bucket = ModelBucket()
    for index in range(5000):
        bucket.write(f"old/{index:05d}.csv")
        bucket.clock += 1
    first = scan(bucket.listing(), None, settle=SETTLE, report_existing=False)
    assert first.changed == [] and len(first.cursor.recent) <= 6  # the objects of the last 5 ms
    bucket.clock += 1000
    for index in range(3):
        bucket.write(f"new/{index}.csv")  # three objects at one instant
    bucket.patch("old/00000.csv")
    second = scan(bucket.listing(), decode_cursor(first.cursor.encode()), settle=SETTLE)
    assert [info.path.name for info in second.changed] == ["new/0.csv", "new/1.csv", "new/2.csv"]
    assert set(second.cursor.recent) == {"new/0.csv", "new/1.csv", "new/2.csv"}
    assert len(second.cursor.encode()) < 200


def test_objects_sharing_the_high_water_instant_are_told_apart_by_name_and_generation():
    bucket = ModelBucket()
    bucket.write("a.csv")
    first = scan(bucket.listing(), None, settle=datetime.timedelta(0))
    bucket.write("b.csv")  # same millisecond as a.csv
    second = scan(bucket.listing(), first.cursor, settle=datetime.timedelta(0))
    assert [info.path.name for info in second.changed] == ["b.csv"]
    bucket.delete("a.csv")
    bucket.write("a.csv")  # re-created in the same millisecond: a new generation
    third = scan(bucket.listing(), second.cursor, settle=datetime.timedelta(0))
    assert [(info.path.name, info.generation) for info in third.changed] == [("a.csv", 3)]


def test_a_first_version_cursor_is_migrated_without_reporting_unchanged_objects():
    bucket = ModelBucket()
    for name in ("a.csv", "b.csv"):
        bucket.write(name)
        bucket.clock += 10
    legacy = '{"version": 1, "objects": {"a.csv": [1, "crc1"], "b.csv": [2, "old"]}}'
    decoded = decode_cursor(legacy)
    assert isinstance(decoded, LegacyCursor)
    result = scan(bucket.listing(), decoded, settle=SETTLE)
    assert [info.path.name for info in result.changed] == ["b.csv"]
    assert scan(bucket.listing(), decode_cursor(result.cursor.encode()), settle=SETTLE).changed == []


def test_unreadable_cursors_count_as_a_first_evaluation():
    for text in (None, "", "not json", "[]", '{"version": 2}', '{"version": 2, "high_water": "x", "recent": {}}'):
        assert decode_cursor(text) is None
