"""Catalog metadata: the profiler (CSV columns, types, row count, preview; HDF5 tree and tables) on its own, and the
metadata real materializations through `DatafileIOManager` record on the emulator (column schema, row count, preview,
HDF5 tree), which Dagster's own `build_column_schema_change_checks` reads."""

from __future__ import annotations

import csv
import io
import random
import sys
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pytest
from dagster import (
    AssetCheckSeverity,
    AssetKey,
    DagsterInstance,
    StaticPartitionsDefinition,
    TableColumn,
    TableSchema,
    asset,
    build_column_schema_change_checks,
    materialize,
)
from dagster_gcp import GCSResource
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from octue_dagster import Datafile, Dataset
from octue_dagster.core.local import hashing, profiling
from octue_dagster.core.local.profiling import (
    Column,
    RecordCounter,
    count_csv_records,
    profile_csv,
    profile_file,
    profile_hdf5,
)
from octue_dagster.dagster.catalog import (
    MAX_BYTES_VARIABLE,
    CatalogSettings,
    profile_metadata,
)
from octue_dagster.dagster.io_manager import DatafileIOManager
from octue_dagster.dagster.resources import DatafileResource
from octue_dagster.exceptions import InvalidInputError, OctueDagsterError

# --- the profiler -----------------------------------------------------------------------------------------------------


def _parser_records(data: bytes) -> int:
    """What `csv.reader` counts: the non-empty records."""
    text = io.StringIO(data.decode("utf-8", errors="replace"), newline="")
    return sum(1 for record in csv.reader(text) if record)


def _fed(data: bytes, cuts: list[int]) -> RecordCounter:
    counter = RecordCounter()
    edges = [0, *sorted(cut % (len(data) + 1) for cut in cuts), len(data)]
    for index, (start, end) in enumerate(zip(edges, edges[1:])):
        if index % 2:
            counter.feed(memoryview(data)[start:end])
        else:  # as the hash read hands blocks over: a reused buffer holding stale bytes after `length`
            counter.feed(bytearray(data[start:end] + b'"\r\n\n'), end - start)
    return counter


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet='a,"\n\r ', max_size=60), st.lists(st.integers(0, 200), max_size=6))
def test_record_counter_agrees_with_the_csv_parser_whatever_the_blocks(text: str, cuts: list[int]) -> None:
    data = text.encode()
    counter = _fed(data, cuts)
    assert counter.lines == len(list(io.StringIO(text, newline="")))  # as a text stream's readline splits them
    if '"' not in text and "\r" not in text.replace("\r\n", ""):
        assert counter.exact  # the fast path is taken whenever it can be exact
    if counter.exact:
        assert counter.records == _parser_records(data)
    else:
        assert counter.records is None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300) | st.text(alphabet='ab1.,"\n\r\x00é-:T', max_size=120).map(str.encode))
def test_any_bytes_give_a_profile_whose_row_count_is_the_parsers(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "any.csv"
    path.write_bytes(data)
    profile = profile_csv(path)  # never raises, whatever the bytes
    expected = _parser_records(data.removeprefix(b"\xef\xbb\xbf"))
    assert profile.row_count == max(expected - 1, 0)
    if expected:
        assert profile.columns is not None and len(profile.columns) >= 1
    else:
        assert profile.columns is None
    assert len(profile.preview) <= min(profiling.PREVIEW_ROWS, profile.row_count)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(alphabet="ab,\n\r ", max_size=80), block=st.integers(1, 9))
def test_counting_in_the_hash_read_is_exact_across_its_block_boundaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, block: int
) -> None:
    # The hashing pass reuses one buffer for every block (the last one partly filled): the counter must not keep it.
    monkeypatch.setattr(hashing, "HASH_BLOCK_BYTES", block)
    path = tmp_path / "blocks.csv"
    data = text.encode()
    path.write_bytes(data)
    counter = RecordCounter()
    assert hashing.hash_file_blocks(path, counter.feed) == hashing.crc32c_base64(data)
    assert counter.records == (_parser_records(data) if counter.exact else None)
    assert profile_csv(path).row_count == max(_parser_records(data) - 1, 0)


def test_quoted_newlines_count_as_one_record_and_blank_lines_as_none(tmp_path: Path) -> None:
    path = tmp_path / "quoted.csv"
    path.write_bytes(b'id,comment\r\n1,"two\r\nlines"\r\n\r\n2,"a ""quote"""\r\n')
    profile = profile_csv(path)
    assert profile.row_count == 2
    assert profile.columns == (Column("id", "int"), Column("comment", "string"))
    assert profile.preview == ({"id": 1, "comment": "two\r\nlines"}, {"id": 2, "comment": 'a "quote"'})


def test_empty_file_and_header_only(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    profile = profile_csv(empty)
    assert (profile.columns, profile.row_count, profile.preview) == (None, 0, ())
    assert profile.notes == ("the file is empty",)
    assert profile_metadata(profile).keys() == {"dagster/row_count", "catalog_notes"}

    header = tmp_path / "header.csv"
    header.write_bytes(b"\xef\xbb\xbfa,,a\n")  # a byte-order mark, an empty name and a repeated one
    profile = profile_csv(header)
    assert profile.row_count == 0
    assert [column.name for column in profile.columns] == ["a", "column_2", "a_2"]
    assert {column.type for column in profile.columns} == {"string"}


def test_ragged_rows_are_noted_and_padded_in_the_preview(tmp_path: Path) -> None:
    path = tmp_path / "ragged.csv"
    path.write_text("a,b,c\n1,2\n3,4,5,6\n")
    profile = profile_csv(path)
    assert profile.row_count == 2
    assert profile.preview == ({"a": 1, "b": 2, "c": None}, {"a": 3, "b": 4, "c": 5})
    assert profile.notes == ("2 of the first 2 rows have a different number of fields than the header",)


def test_bytes_that_are_not_utf8_are_replaced_and_said(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("name,city\nJosé,Zürich\n".encode("latin-1"))
    profile = profile_csv(path)
    assert profile.row_count == 1
    assert profile.preview == ({"name": "Jos\ufffd", "city": "Z\ufffdrich"},)
    assert profile.notes[0] == "the file is not valid UTF-8: undecodable bytes are shown as \ufffd"


def test_column_types_are_inferred_from_the_sample(tmp_path: Path) -> None:
    path = tmp_path / "types.csv"
    path.write_text(
        "n,x,flag,when,day,mixed,blank,numberish\n"
        "1,1.5,true,2024-03-01T00:10:00+00:00,2024-03-01,1,,007\n"
        "-2,3,FALSE,2024-03-01 00:20:00,2024-03-02,x,,1e3\n"
        "+3,nan,True,2024-03-01T00:30:00,2024-03-03,2.5,,-.5\n"
    )
    types = {column.name: column.type for column in profile_csv(path).columns}
    assert types == {
        "n": "int",
        "x": "float",
        "flag": "bool",
        "when": "datetime",
        "day": "datetime",
        "mixed": "string",
        "blank": "string",
        "numberish": "float",
    }
    # Beyond the sample, types are not looked at: a later text value does not change an int column.
    path.write_text("n\n" + "1\n" * 5 + "oops\n")
    assert profile_csv(path, sample_rows=5).columns == (Column("n", "int"),)
    assert profile_csv(path, sample_rows=6).columns == (Column("n", "string"),)


def test_the_sample_is_bounded_in_characters_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "long-rows.csv"
    path.write_text("n,text\n" + "".join(f"{i},{'x' * 1000}\n" for i in range(50)) + "oops,x\n")
    monkeypatch.setattr(profiling, "SAMPLE_CHARS", 20_000)  # about 20 rows: the text in row 51 is never read
    profile = profile_csv(path)
    assert profile.columns == (Column("n", "int"), Column("text", "string"))
    assert profile.row_count == 51


def test_preview_cells_are_bounded_and_json_safe(tmp_path: Path) -> None:
    path = tmp_path / "wide.csv"
    names = [f"c{index}" for index in range(profiling.PREVIEW_COLUMNS + 5)]
    long_text = "x" * (profiling.MAX_CELL_CHARS + 50)
    path.write_text(",".join(["v", "text", *names]) + "\n" + ",".join(["nan", long_text, *["1"] * len(names)]) + "\n")
    profile = profile_csv(path)
    assert len(profile.columns) == len(names) + 2  # the schema has every column
    (row,) = profile.preview
    assert len(row) == profiling.PREVIEW_COLUMNS  # the preview the first ones
    assert row["v"] == "nan"  # a float column, but NaN is not JSON: shown as written
    assert row["text"] == "x" * (profiling.MAX_CELL_CHARS - 1) + "…"
    assert profile.notes == (f"the preview shows the first {profiling.PREVIEW_COLUMNS} of {len(names) + 2} columns",)
    metadata = profile_metadata(profile)
    assert len(metadata["preview"].value.schema.columns) == profiling.PREVIEW_COLUMNS
    assert len(metadata["dagster/column_schema"].value.columns) == len(names) + 2


def test_over_the_size_limit_there_is_no_row_count_but_columns_and_preview(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_text("a,b\n" + "".join(f"{i},{i * 2}\n" for i in range(100)))
    profile = profile_csv(path, max_bytes=100)
    assert profile.row_count is None
    assert profile.columns == (Column("a", "int"), Column("b", "int"))
    assert len(profile.preview) == profiling.PREVIEW_ROWS
    size = path.stat().st_size
    assert profile.notes == (f"row count skipped: the file's {size} bytes are over the catalog's limit of 100",)
    assert profile_csv(path, max_bytes=path.stat().st_size).row_count == 100


def test_counting_shares_the_hash_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "shared.csv"
    path.write_text("a\n1\n2\n")
    profile_csv(path)

    def no_second_read(*args, **kwargs):
        raise AssertionError("the file was hashed again")

    monkeypatch.setattr(hashing, "read_file_hash", no_second_read)
    assert hashing.hash_file(path) == hashing.crc32c_base64(path.read_bytes())


def test_a_file_without_line_ends_or_with_a_runaway_quote_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "one-line.csv"
    path.write_bytes(b"a" * (profiling.MAX_LINE_CHARS + 10))
    profile = profile_csv(path)
    assert profile.columns is None and profile.row_count == 0
    assert "longer than" in profile.notes[0]

    # A quoted file (so the CSV parser counts) with a line over the bound: the cut is seen, no wrong count is given.
    long_line = tmp_path / "long-line.csv"
    long_line.write_bytes(b'a,"b"\n' + b"x," * (profiling.MAX_LINE_CHARS // 2 + 10) + b"\n1,2\n")
    profile = profile_csv(long_line)
    assert profile.row_count is None
    assert profile.notes[0] == (
        f"row count skipped: the file cannot be parsed as CSV to its end (a line is longer than "
        f"{profiling.MAX_LINE_CHARS} characters)"
    )
    assert count_csv_records(long_line)[0] is None  # the same without the line count, by the bounded reader

    runaway = tmp_path / "runaway.csv"
    runaway.write_bytes(b'a,b\n1,"' + b"x" * 200_000 + b"\n2,3\n")
    profile = profile_csv(runaway)
    assert profile.row_count is None
    assert profile.notes[0].startswith("row count skipped: the file cannot be parsed as CSV to its end")
    assert profile.columns == (Column("a", "string"), Column("b", "string"))


@pytest.mark.parametrize("quoted", [False, True], ids=["line-counted", "parsed"])
def test_memory_stays_flat_in_file_size(tmp_path: Path, quoted: bool) -> None:
    path = tmp_path / "large.csv"
    rng = random.Random(1)
    with open(path, "w", newline="") as file:
        file.write("id,when,value,comment\n")
        line = '{},2024-03-01T00:00:00,{:.6f},"a\nb"\n' if quoted else "{},2024-03-01T00:00:00,{:.6f},plain\n"
        for start in range(0, 800_000, 10_000):
            file.write("".join(line.format(i, rng.random()) for i in range(start, start + 10_000)))
    size = path.stat().st_size
    assert size > 30 * 1024 * 1024
    tracemalloc.start()
    try:
        profile = profile_csv(path, max_bytes=size)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert profile.row_count == 800_000
    assert profile.columns == (
        Column("id", "int"),
        Column("when", "datetime"),
        Column("value", "float"),
        Column("comment", "string"),
    )
    # The hash's 4 MiB buffer (the counter copies no block), whatever the file's size.
    assert peak < hashing.HASH_BLOCK_BYTES + 1024 * 1024, f"{peak} bytes peak for a {size}-byte file"


def _write_hdf5(path: Path, tables: int = 1) -> None:
    records = np.array(
        [(b"wt-01", 1200.5, 3), (b"wt-02", 980.25, 0), (b"wt-03", 1500.0, 1)],
        dtype=[("turbine", "S8"), ("mean_power_kw", "f8"), ("faults", "i4")],
    )
    with h5py.File(path, "w") as h5:
        h5.attrs["site"] = "north"
        group = h5.create_group("wt-01")
        group.create_dataset("power", data=np.arange(12, dtype="f4").reshape(3, 4))
        for index in range(tables):
            h5.create_dataset("summary" if index == 0 else f"summary_{index}", data=records)


def test_hdf5_tree_and_table(tmp_path: Path) -> None:
    path = tmp_path / "summary.h5"
    _write_hdf5(path)
    profile = profile_file(path)
    assert profile.format == "hdf5" and profile.table == "/summary"
    assert profile.columns == (Column("turbine", "string"), Column("mean_power_kw", "float"), Column("faults", "int"))
    assert profile.row_count == 3
    assert profile.preview[0] == {"turbine": "wt-01", "mean_power_kw": 1200.5, "faults": 3}
    assert [(node.path, node.kind, node.shape, node.dtype) for node in profile.tree] == [
        ("/", "group", None, None),
        ("/summary", "dataset", (3,), str(np.dtype([("turbine", "S8"), ("mean_power_kw", "f8"), ("faults", "i4")]))),
        ("/wt-01", "group", None, None),
        ("/wt-01/power", "dataset", (3, 4), "float32"),
    ]
    markdown = profile_metadata(profile)["hdf5_tree"].value
    assert "- `/` · attributes: `site`" in markdown
    assert "  - `wt-01/`\n    - `power` 3×4 `float32`" in markdown


def test_hdf5_names_cannot_act_as_markdown(tmp_path: Path) -> None:
    path = tmp_path / "names.h5"
    with h5py.File(path, "w") as h5:
        group = h5.create_group("a`b\n- *fake*")
        group.attrs["<img src=x>"] = 1
    markdown = profile_metadata(profile_file(path))["hdf5_tree"].value
    assert markdown.splitlines() == ["- `/`", "  - `a'b - *fake*/` · attributes: `<img src=x>`"]


def test_hdf5_with_several_tables_needs_a_choice(tmp_path: Path) -> None:
    path = tmp_path / "tables.h5"
    _write_hdf5(path, tables=2)
    profile = profile_hdf5(path)
    assert profile.columns is None and profile.row_count is None and len(profile.tree) == 5
    assert "choose one with the asset metadata 'octue_dagster/hdf5_table'" in profile.notes[0]
    assert profile_hdf5(path, table="summary_1").table == "/summary_1"
    assert profile_hdf5(path, table="wt-01/power").notes == (
        "'wt-01/power' is not a one-dimensional compound dataset in this file: no table shown",
    )


def test_hdf5_is_found_by_its_signature_and_a_large_tree_is_cut(tmp_path: Path) -> None:
    path = tmp_path / "groups.nc"  # NetCDF-4 files are HDF5 files
    with h5py.File(path, "w") as h5:
        for index in range(profiling.MAX_TREE_NODES + 20):
            h5.create_group(f"g{index:03d}")
    profile = profile_file(path)
    assert profile.format == "hdf5" and profile.tree_truncated
    assert len(profile.tree) == profiling.MAX_TREE_NODES
    assert profile_metadata(profile)["hdf5_tree"].value.endswith(
        f"- … more (only the first {profiling.MAX_TREE_NODES} groups and datasets are listed)"
    )


def test_without_h5py_an_hdf5_file_gets_a_note(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "summary.h5"
    _write_hdf5(path)
    monkeypatch.setitem(sys.modules, "h5py", None)  # as if the [hdf5] extra were not installed
    profile = profile_file(path)
    assert profile.tree == () and profile.columns is None
    assert profile.notes == ("not profiled: reading HDF5 files needs h5py (pip install 'octue-dagster[hdf5]')",)


def test_a_broken_hdf5_file_gets_a_note(tmp_path: Path) -> None:
    path = tmp_path / "broken.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100)
    profile = profile_file(path)
    assert profile.format == "hdf5" and profile.tree == ()
    assert profile.notes[0].startswith("not profiled: the file cannot be read as HDF5")


def test_tab_separated_files_are_split_on_tabs(tmp_path: Path) -> None:
    path = tmp_path / "readings.tsv"
    path.write_text("turbine\tpower, kW\nwt-01\t1200.5\n")
    profile = profile_file(path)
    assert profile.columns == (Column("turbine", "string"), Column("power, kW", "float"))
    assert profile.preview == ({"turbine": "wt-01", "power, kW": 1200.5},) and profile.row_count == 1


def test_other_files_are_not_profiled(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("a,b\n1,2\n")
    assert profile_file(path) is None


def test_row_counts_over_32_bits_are_recorded_whole() -> None:
    # GraphQL's Int is 32-bit: the API gives intValue null and intRepr the exact count, which the UI shows.
    metadata = profile_metadata(profiling.Profile("csv", columns=(Column("a", "int"),), row_count=3_000_000_000))
    assert metadata["dagster/row_count"].value == 3_000_000_000


def test_size_limit_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MAX_BYTES_VARIABLE, raising=False)
    assert CatalogSettings.resolve().max_bytes == profiling.DEFAULT_MAX_BYTES
    monkeypatch.setenv(MAX_BYTES_VARIABLE, "1000")
    assert CatalogSettings.resolve().max_bytes == 1000
    assert CatalogSettings.resolve(max_bytes=5).max_bytes == 5
    monkeypatch.setenv(MAX_BYTES_VARIABLE, "1 GB")
    with pytest.raises(InvalidInputError, match="OCTUE_DAGSTER_CATALOG_MAX_BYTES must be a whole number") as caught:
        CatalogSettings.resolve()
    assert isinstance(caught.value, OctueDagsterError) and isinstance(caught.value, ValueError)
    with pytest.raises(InvalidInputError, match="catalog_max_bytes must be 0 or more"):
        CatalogSettings.resolve(max_bytes=-1)


# --- real materializations --------------------------------------------------------------------------------------------

#: What the assets below write; tests change it between materializations.
CONTENT: dict[str, bytes] = {}


def _resources(bucket: str, **io_manager) -> dict:
    gcs = GCSResource()
    return {
        "io_manager": DatafileIOManager(bucket=bucket, gcs=gcs, **io_manager),
        "datafiles": DatafileResource(gcs=gcs),
    }


def _write(datafiles: DatafileResource, name: str, content: bytes) -> Datafile:
    datafile = datafiles.new(name)
    with datafile.open("wb") as file:
        file.write(content)
    return datafile


@asset
def readings(datafiles: DatafileResource) -> Datafile:
    return _write(datafiles, "readings.csv", CONTENT["readings"])


def _latest(instance: DagsterInstance, key: str, partition: str | None = None):
    records = instance.fetch_materializations(AssetKey(key), limit=10).records
    matching = [record for record in records if partition is None or record.partition_key == partition]
    return matching[0].asset_materialization


def test_a_csv_asset_records_schema_row_count_and_preview(bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    instance = DagsterInstance.ephemeral()
    CONTENT["readings"] = b'time,power_kw,ok\n2024-03-01T00:00:00,1200.5,true\n2024-03-01T00:10:00,"1,180.0",false\n'
    hash_reads = []
    read_stream_hash = hashing.read_stream_hash
    monkeypatch.setattr(
        hashing, "read_stream_hash", lambda *args: hash_reads.append(args) or read_stream_hash(*args)
    )
    assert materialize([readings], resources=_resources(bucket), instance=instance).success
    # The file was hashed once, by the read that also counted its rows (it had a block callback); the upload used
    # that hash.
    assert len(hash_reads) == 1 and len(hash_reads[0]) == 2 and hash_reads[0][1] is not None
    metadata = _latest(instance, "readings").metadata
    assert metadata["dagster/column_schema"].value == TableSchema(
        columns=[TableColumn("time", "datetime"), TableColumn("power_kw", "string"), TableColumn("ok", "bool")]
    )
    assert metadata["dagster/row_count"].value == 2
    assert "dagster/partition_row_count" not in metadata
    preview = metadata["preview"].value
    assert [record.data for record in preview.records] == [
        {"time": "2024-03-01T00:00:00", "power_kw": "1200.5", "ok": True},
        {"time": "2024-03-01T00:10:00", "power_kw": "1,180.0", "ok": False},
    ]
    assert [column.name for column in preview.schema.columns] == ["time", "power_kw", "ok"]
    assert "catalog_notes" not in metadata


def test_schema_change_checks_pass_when_unchanged_and_fail_when_a_column_is_added(
    bucket: str, client, request_log, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance = DagsterInstance.ephemeral()
    checks = build_column_schema_change_checks(assets=[readings], severity=AssetCheckSeverity.ERROR)
    CONTENT["readings"] = b"t,v\n0,1.5\n1,2.5\n"
    assert materialize([readings, *checks], resources=_resources(bucket), instance=instance).success
    generation = client.bucket(bucket).get_blob("dagster/readings/=/readings.csv").generation

    # The same content again: nothing is uploaded, yet the catalog metadata is there, and the schema check passes.
    monkeypatch.setattr(GCSResource, "get_client", lambda self: client)
    request_log.clear()
    result = materialize([readings, *checks], resources=_resources(bucket), instance=instance)
    assert [r for r in request_log.requests if r[0] not in ("GET", "HEAD")] == []
    assert request_log.downloads() == []
    assert client.bucket(bucket).get_blob("dagster/readings/=/readings.csv").generation == generation
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.passed, evaluation.description
    assert _latest(instance, "readings").metadata["dagster/row_count"].value == 2

    CONTENT["readings"] = b"t,v,site\n0,1.5,north\n"
    result = materialize([readings, *checks], resources=_resources(bucket), instance=instance, raise_on_error=False)
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed
    assert "Added columns: site" in evaluation.description

    CONTENT["readings"] = b"t,v,site\n0,oops,north\n"
    result = materialize([readings, *checks], resources=_resources(bucket), instance=instance, raise_on_error=False)
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed
    assert "- v: float -> string" in evaluation.description


daily = StaticPartitionsDefinition(["2024-03-01", "2024-03-02"])


@asset(partitions_def=daily)
def daily_readings(context, datafiles: DatafileResource) -> Datafile:
    rows = 3 if context.partition_key == "2024-03-01" else 5
    return _write(datafiles, "day.csv", b"t,v\n" + b"".join(b"%d,%d\n" % (i, i) for i in range(rows)))


def test_partitions_record_their_own_row_counts(bucket: str) -> None:
    instance = DagsterInstance.ephemeral()
    for day in daily.get_partition_keys():
        assert materialize([daily_readings], partition_key=day, resources=_resources(bucket), instance=instance).success
    for day, rows in (("2024-03-01", 3), ("2024-03-02", 5)):
        metadata = _latest(instance, "daily_readings", day).metadata
        assert metadata["dagster/row_count"].value == rows
        assert metadata["dagster/partition_row_count"].value == rows
        assert metadata["dagster/column_schema"].value.columns[1] == TableColumn("v", "int")


@asset
def summary_h5(datafiles: DatafileResource) -> Datafile:
    datafile = datafiles.new("summary.h5")
    _write_hdf5(Path(datafile.local_path))
    return datafile


def test_an_hdf5_asset_records_its_tree_and_table(bucket: str) -> None:
    instance = DagsterInstance.ephemeral()
    assert materialize([summary_h5], resources=_resources(bucket), instance=instance).success
    metadata = _latest(instance, "summary_h5").metadata
    assert [column.name for column in metadata["dagster/column_schema"].value.columns] == [
        "turbine",
        "mean_power_kw",
        "faults",
    ]
    assert metadata["dagster/row_count"].value == 3
    assert metadata["preview"].value.records[1].data == {"turbine": "wt-02", "mean_power_kw": 980.25, "faults": 0}
    assert "`summary` 3 `" in metadata["hdf5_tree"].value and "(the table: 3 rows)" in metadata["hdf5_tree"].value


def test_a_cloud_datafile_output_is_not_downloaded_for_the_catalog(
    bucket: str, client, request_log, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source = Datafile(str(tmp_path / "source.csv"), storage_client=client)
    with source.open("w") as file:
        file.write("a,b\n1,2\n")
    source.upload(f"gs://{bucket}/incoming/source.csv")
    monkeypatch.setattr(GCSResource, "get_client", lambda self: client)

    @asset(name="copied")
    def copied(datafiles: DatafileResource) -> Datafile:
        return datafiles.get(f"gs://{bucket}/incoming/source.csv")

    instance = DagsterInstance.ephemeral()
    request_log.clear()
    assert materialize([copied], resources=_resources(bucket), instance=instance).success
    assert request_log.downloads() == []
    metadata = _latest(instance, "copied").metadata
    assert "dagster/column_schema" not in metadata and "dagster/row_count" not in metadata


def test_the_catalog_can_be_turned_off_and_limited(bucket: str) -> None:
    instance = DagsterInstance.ephemeral()
    CONTENT["readings"] = b"t,v\n0,1\n"
    assert materialize([readings], resources=_resources(bucket, catalog_metadata=False), instance=instance).success
    assert "dagster/column_schema" not in _latest(instance, "readings").metadata
    assert materialize([readings], resources=_resources(bucket, catalog_max_bytes=0), instance=instance).success
    metadata = _latest(instance, "readings").metadata
    assert "dagster/row_count" not in metadata
    assert metadata["dagster/column_schema"].value.columns[0] == TableColumn("t", "int")
    assert metadata["catalog_notes"].value.startswith("row count skipped")
    assert "preview" in metadata
    assert materialize([readings], resources=_resources(bucket, catalog_preview=False), instance=instance).success
    metadata = _latest(instance, "readings").metadata
    assert "preview" not in metadata and metadata["dagster/row_count"].value == 1


DATASET_FILES: dict[str, bytes] = {}


@asset
def turbine_files(datafiles: DatafileResource) -> Dataset:
    dataset = datafiles.new_dataset("turbines")
    for name, content in DATASET_FILES.items():
        datafile = Datafile(Path(dataset.path) / name)
        with datafile.open("wb") as file:
            file.write(content)
        dataset.add(datafile)
    return dataset


def test_a_dataset_of_csvs_with_one_header_records_one_schema(bucket: str) -> None:
    instance = DagsterInstance.ephemeral()
    DATASET_FILES.clear()
    DATASET_FILES.update({"wt-02.csv": b"t,v\n2,2.5\n3,3.5\n", "wt-01.csv": b"t,v\n0,1\n1,2\n4,5\n"})
    assert materialize([turbine_files], resources=_resources(bucket), instance=instance).success
    metadata = _latest(instance, "turbine_files").metadata
    assert metadata["dagster/column_schema"].value == TableSchema(
        columns=[TableColumn("t", "int"), TableColumn("v", "float")]  # ints in one file, floats in the other
    )
    assert metadata["dagster/row_count"].value == 5
    assert [record.data["t"] for record in metadata["preview"].value.records] == [0, 1, 4, 2, 3]
    assert metadata["file_count"].value == 2

    DATASET_FILES["README.txt"] = b"One CSV per turbine.\n"
    assert materialize([turbine_files], resources=_resources(bucket), instance=instance).success
    metadata = _latest(instance, "turbine_files").metadata
    assert metadata["dagster/row_count"].value == 5 and metadata["file_count"].value == 3
    assert metadata["catalog_notes"].value == "columns and rows of the 2 CSV files; 1 other file(s) left out"

    del DATASET_FILES["README.txt"]
    DATASET_FILES["wt-03.csv"] = b"t,w\n0,1\n"
    assert materialize([turbine_files], resources=_resources(bucket), instance=instance).success
    metadata = _latest(instance, "turbine_files").metadata
    assert "dagster/column_schema" not in metadata
    assert metadata["catalog_notes"].value == "no column schema: the files have 2 different headers"


# --- the example project ----------------------------------------------------------------------------------------------


def test_the_example_pipeline_pages_show_schema_row_count_and_preview(
    bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dagster as dg

    from example_project import demo
    from example_project import readings as example_readings
    from example_project.definitions import build_definitions
    from example_project.partitions import daily_partitions

    monkeypatch.setenv("OCTUE_DAGSTER_BUCKET", bucket)
    demo.seed(bucket)
    job = build_definitions(bucket).resolve_implicit_global_asset_job_def()
    instance = DagsterInstance.ephemeral()
    days = daily_partitions.get_partition_keys()
    evaluations = []
    for day in days:
        keys = [AssetKey("raw_readings"), AssetKey("cleaned_readings"), AssetKey("turbine_files")]
        result = job.execute_in_process(partition_key=day, asset_selection=keys, instance=instance)
        assert result.success
        evaluations += [
            evaluation
            for evaluation in result.get_asset_check_evaluations()
            if evaluation.check_name == "column_schema_change"
        ]
    # The example's Dagster schema-change checks ran with every day and found the same columns each time.
    assert len(evaluations) == 3 * len(days) and all(evaluation.passed for evaluation in evaluations)
    keys = [AssetKey("site_metadata"), AssetKey("turbine_summary")]
    assert job.execute_in_process(asset_selection=keys, instance=instance).success

    day = days[0]
    for key in ("raw_readings", "cleaned_readings", "turbine_files"):
        metadata = _latest(instance, key, day).metadata
        columns = metadata["dagster/column_schema"].value.columns
        assert [column.name for column in columns] == list(example_readings.COLUMNS), key
        assert len(metadata["preview"].value.records) == profiling.PREVIEW_ROWS
        assert metadata["dagster/partition_row_count"].value == metadata["dagster/row_count"].value
    # The row counts are the rows the assets wrote (which they also put in their tags).
    raw = _latest(instance, "raw_readings", day).metadata
    cleaned = _latest(instance, "cleaned_readings", day).metadata
    assert raw["dagster/row_count"].value == raw["tags"].value["rows"]
    assert cleaned["dagster/row_count"].value == cleaned["tags"].value["rows"]
    assert _latest(instance, "turbine_files", day).metadata["dagster/row_count"].value == cleaned["tags"].value["rows"]
    types = {column.name: column.type for column in cleaned["dagster/column_schema"].value.columns}
    assert types["power_kw"] == "float" and types["timestamp"] == "datetime"

    tree = _latest(instance, "turbine_summary").metadata["hdf5_tree"].value
    for turbine in example_readings.TURBINES:
        assert f"- `{turbine}/`" in tree
    assert "`power_kw` " in tree and "`float64`" in tree


def test_a_profiler_failure_never_stops_the_file_being_stored(
    bucket: str, client, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("a bug in the profiler")

    monkeypatch.setattr(profiling, "profile_file", broken)
    instance = DagsterInstance.ephemeral()
    CONTENT["readings"] = b"t,v\n0,1\n"
    result = materialize([readings], resources=_resources(bucket), instance=instance)
    assert result.success
    assert client.bucket(bucket).get_blob("dagster/readings/=/readings.csv").download_as_bytes() == CONTENT["readings"]
    metadata = _latest(instance, "readings").metadata
    assert metadata["catalog_notes"].value == "not profiled: RuntimeError"
    assert "dagster/column_schema" not in metadata and metadata["crc32c"].value
    warnings = [
        entry.user_message
        for entry in instance.all_logs(result.run_id)
        if "Could not profile asset readings" in entry.user_message
    ]
    assert len(warnings) == 1 and "a bug in the profiler" in warnings[0]
