"""The layers: the core never imports Dagster, and the pure parts (merge, upload plan) hold their rules for any input.

These tests need no server: the merge and the plan are pure functions, checked over generated inputs.
"""

from __future__ import annotations

import ast
import datetime
import subprocess
import sys
from pathlib import Path

import hypothesis.strategies as st
from hypothesis import given

import octue_dagster.core
from octue_dagster import exceptions
from octue_dagster.core.storage.gcs_path import GCSPath
from octue_dagster.core.metadata.merge import merge
from octue_dagster.core.metadata.values import StoredMetadata
from octue_dagster.core.storage.store import ObjectInfo
from octue_dagster.core.datafile.upload_plan import UploadAction, plan_upload


def _imported_modules(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint('\\n'.join(sorted(sys.modules)))"
    output = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return set(output.split())


def test_the_core_and_the_top_level_datafile_never_import_dagster():
    statements = [
        "import octue_dagster.core.datafile.datafile, octue_dagster.core.listing.selection, octue_dagster.core.storage.store",
        "from octue_dagster import Datafile, Store, RetagSpec, OctueDagsterError",
    ]
    for statement in statements:
        modules = _imported_modules(statement)
        assert "octue_dagster.core.datafile.datafile" in modules, "the statement did not import the core"
        assert not {name for name in modules if name == "dagster" or name.startswith("dagster.")}, statement


#: The core's subpackages, lowest first: a module may import only from its own subpackage and the ones before it.
CORE_LAYERS = ["local", "storage", "cache", "metadata", "datafile", "dataset", "listing"]


def _core_imports(module: Path) -> set[str]:
    """The core subpackages a module imports (from its import statements, wherever they are in the module)."""
    found = set()
    for node in ast.walk(ast.parse(module.read_text())):
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[:2] == ["octue_dagster", "core"] and len(parts) > 2:
                found.add(parts[2])
            elif parts == ["octue_dagster", "core"] and isinstance(node, ast.ImportFrom):
                found.update(alias.name for alias in node.names)
    return found


def test_the_core_is_layered_by_its_subpackages():
    core = Path(octue_dagster.core.__file__).parent
    packages = {path.name for path in core.iterdir() if (path / "__init__.py").exists()}
    assert packages == set(CORE_LAYERS), "a core subpackage is missing from CORE_LAYERS (or was removed)"
    assert not [path.name for path in core.glob("*.py") if path.name != "__init__.py"], "modules belong in a subpackage"
    checked = 0
    for layer, package in enumerate(CORE_LAYERS):
        for module in (core / package).glob("*.py"):
            above = _core_imports(module) - set(CORE_LAYERS[: layer + 1])
            assert not above, f"{package}/{module.name} imports {sorted(above)}, a layer above {package!r}"
            checked += 1
    assert checked > 25


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


#: The longest a class may grow before it is split into parts that read on their own (as `Datafile` is, into its
#: metadata, transfers and Octue-named API).
MAX_CLASS_LINES = 350


def test_no_class_of_the_package_is_longer_than_the_limit():
    package = Path(octue_dagster.__file__).parent
    lengths = {
        f"{module.relative_to(package)}:{node.name}": node.end_lineno - node.lineno + 1
        for module in package.rglob("*.py")
        for node in ast.walk(ast.parse(module.read_text()))
        if isinstance(node, ast.ClassDef)
    }
    assert len(lengths) > 50, "the package's classes were not found"
    too_long = {name: length for name, length in lengths.items() if length > MAX_CLASS_LINES}
    assert not too_long, f"split these classes (over {MAX_CLASS_LINES} lines): {too_long}"
