"""The layers: the core never imports Dagster, and the pure parts (merge, upload plan) hold their rules for any input.

These tests need no server: the merge and the plan are pure functions, checked over generated inputs.
"""

from __future__ import annotations

import datetime
import subprocess
import sys

import hypothesis.strategies as st
from hypothesis import given

from octue_dagster import exceptions
from octue_dagster.core.gcs_path import GCSPath
from octue_dagster.core.merge import merge
from octue_dagster.core.metadata import StoredMetadata
from octue_dagster.core.store import ObjectInfo
from octue_dagster.core.upload_plan import UploadAction, plan_upload


def _imported_modules(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint('\\n'.join(sorted(sys.modules)))"
    output = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return set(output.split())


def test_the_core_and_the_top_level_datafile_never_import_dagster():
    statements = [
        "import octue_dagster.core.datafile, octue_dagster.core.selection, octue_dagster.core.store",
        "from octue_dagster import Datafile, Store, RetagSpec, OctueDagsterError",
    ]
    for statement in statements:
        modules = _imported_modules(statement)
        assert "octue_dagster.core.datafile" in modules, "the statement did not import the core"
        assert not {name for name in modules if name == "dagster" or name.startswith("dagster.")}, statement


def test_the_dagster_layer_loads_on_first_use_of_a_dagster_name():
    modules = _imported_modules("from octue_dagster import DatafileIOManager")
    assert "dagster" in modules and "octue_dagster.dagster.io_manager" in modules


def test_every_library_error_has_the_one_root_and_is_exported_from_the_package():
    import octue_dagster

    errors = [value for value in vars(exceptions).values() if isinstance(value, type) and issubclass(value, Exception)]
    assert len(errors) > 10
    for error in errors:
        assert issubclass(error, exceptions.OctueDagsterError), error
        assert getattr(octue_dagster, error.__name__) is error, f"{error.__name__} is not exported"
    assert issubclass(exceptions.InvalidLabelError, ValueError)
    assert issubclass(exceptions.CloudObjectNotFoundError, FileNotFoundError)


# --- the three-way metadata merge -------------------------------------------------------------------------------------

labels = st.frozensets(st.sampled_from(["a", "b", "c", "d", "e"]))
tags = st.dictionaries(st.sampled_from(["x", "y", "z"]), st.integers(0, 3))
timestamps = st.sampled_from([None, datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
                              datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc)])
metadata = st.builds(StoredMetadata, id=st.sampled_from([None, "1c4b0b36-6a49-4b6a-9d55-1b0f5f4a0a11"]),
                     timestamp=timestamps, labels=labels, tags=tags)


@given(metadata, metadata, metadata)
def test_merge_applies_our_changes_and_keeps_everything_else_of_theirs(base, ours, theirs):
    merged = merge(base, ours, theirs)
    for label in "abcde":
        we_added = label in ours.labels and label not in base.labels
        we_removed = label in base.labels and label not in ours.labels
        expected = True if we_added else False if we_removed else label in theirs.labels
        assert (label in merged.labels) == expected, label
    for name in "xyz":
        we_changed = name in ours.tags and base.tags.get(name, object()) != ours.tags[name]
        we_removed = name in base.tags and name not in ours.tags
        expected = ours.tags[name] if we_changed else None if we_removed else theirs.tags.get(name)
        assert merged.tags.get(name) == expected, name
    assert merged.timestamp == (ours.timestamp if ours.timestamp != base.timestamp else theirs.timestamp)
    assert merged.id == (theirs.id or ours.id)


@given(metadata, metadata)
def test_merge_without_changes_of_ours_is_theirs_and_without_theirs_is_ours(base, theirs):
    unchanged = merge(base, base, theirs)
    assert (unchanged.labels, unchanged.tags, unchanged.timestamp) == (theirs.labels, theirs.tags, theirs.timestamp)
    alone = merge(base, theirs, base)
    assert (alone.labels, alone.tags, alone.timestamp) == (theirs.labels, theirs.tags, theirs.timestamp)


# --- the upload plan ------------------------------------------------------------------------------------------------


def _object(crc32c: str) -> ObjectInfo:
    return ObjectInfo(GCSPath("b", "o"), 1, 1, 3, crc32c, None, None, None, {})


@given(st.sampled_from(["AAAAAA==", "BBBBBB=="]), st.booleans(), st.sampled_from([None, "AAAAAA==", "CCCCCC=="]),
       st.booleans())
def test_upload_plan_never_sends_content_the_destination_already_holds(crc32c, local, existing_crc32c, differs):
    existing = _object(existing_crc32c) if existing_crc32c else None
    action = plan_upload(content_crc32c=crc32c, has_local_bytes=local, existing=existing, metadata_differs=differs)
    if existing_crc32c == crc32c:
        assert action is (UploadAction.PATCH if differs else UploadAction.NOTHING)
    else:
        assert action is (UploadAction.UPLOAD if local else UploadAction.COPY)
