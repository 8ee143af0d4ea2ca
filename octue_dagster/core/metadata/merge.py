"""Three-way merge of Datafile metadata: a pure function, the one rule every writer of metadata follows.

`base` is what a writer last read from the store, `ours` what it holds now, `theirs` what the store holds now. A
writer's own changes (`base` -> `ours`) are applied onto `theirs`, so other writers' changes since `base` survive:

- labels: ours added are added; ours removed are removed; theirs otherwise stay;
- tags: a tag we set or changed takes our value; a tag we removed is removed; every other tag keeps their value;
- timestamp: ours if we changed it, else theirs;
- id: theirs if the store has one (ids are never reassigned), else ours.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from octue_dagster.core.metadata.values import StoredMetadata, canonical_json

def merge(base: StoredMetadata, ours: StoredMetadata, theirs: StoredMetadata) -> StoredMetadata:
    """`theirs` with the changes from `base` to `ours` applied (see the module docstring for the rule)."""
    base_labels, our_labels = base.labels or frozenset(), ours.labels or frozenset()
    labels = ((theirs.labels or frozenset()) - (base_labels - our_labels)) | (our_labels - base_labels)
    return StoredMetadata(
        id=theirs.id or ours.id,
        timestamp=ours.timestamp if ours.timestamp != base.timestamp else theirs.timestamp,
        labels=frozenset(labels),
        tags=merge_tags(base.tags or {}, ours.tags or {}, theirs.tags or {}),
    )


def merge_tags(base: Mapping[str, Any], ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> dict[str, Any]:
    """`theirs` with the tags we set, changed or removed since `base` set, changed or removed likewise."""
    tags = dict(theirs)
    for name in base.keys() - ours.keys():
        tags.pop(name, None)
    for name, value in ours.items():
        # Compared as stored JSON, so that an untouched NaN tag (NaN != NaN) does not count as our change.
        if name not in base or canonical_json(base[name]) != canonical_json(value):
            tags[name] = value
    return tags


__all__ = ["merge", "merge_tags"]
