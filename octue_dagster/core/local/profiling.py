"""Profiles of tabular files for a data catalog: a CSV's columns (names from the header, types inferred from the first
rows), its row count and first rows; an HDF5 file's tree of groups and datasets, and the columns, row count and first
rows of its table (a one-dimensional compound dataset).

Everything is streamed: memory stays flat in the file's size. A CSV's records are counted in the pass that hashes it
(`hashing.hash_file_blocks`), by counting line ends block by block, which is exact unless the file has a quote
character (a quoted field may hold line ends) or a bare carriage return; only then a second, streaming pass through
Python's `csv` parser counts them. Files over `max_bytes` are not read whole: their columns and preview come from the
first rows, and they get no row count. Nothing here raises on bad content: what could not be read is said in
`Profile.notes`.

Example::

    profile = profile_file("readings.csv")
    profile.columns     # (Column(name='t', type='datetime'), Column(name='v', type='float'))
    profile.row_count   # 144
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime
import functools
import io
import math
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Union

from octue_dagster.core.local import hashing

#: Files larger than this are not read whole for the catalog (no row count); overridable per call.
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
#: Column types are inferred from at most this many rows at the top of a CSV file...
SAMPLE_ROWS = 1000
#: ... and from at most about this many characters (rows of 1 MiB lines would otherwise make the sample a GiB).
SAMPLE_CHARS = 8 * 1024 * 1024
#: At most this many rows are shown in a preview.
PREVIEW_ROWS = 10
#: At most this many columns are shown in a preview (the column schema lists them all, up to `MAX_COLUMNS`).
PREVIEW_COLUMNS = 30
#: At most this many columns are described (a wider file's schema is cut there, with a note).
MAX_COLUMNS = 1000
#: A preview cell longer than this many characters is cut, ending with an ellipsis.
MAX_CELL_CHARS = 200
#: A CSV line longer than this many characters stops reading (a file without line ends would otherwise be one line).
MAX_LINE_CHARS = 1024 * 1024
#: At most this many groups and datasets of an HDF5 file are listed in its tree.
MAX_TREE_NODES = 200

CSV_DELIMITERS = {".csv": ",", ".tsv": "\t"}
HDF5_EXTENSIONS = (".h5", ".hdf5", ".hdf", ".he5")

#: A value in a preview row, as Dagster's table records accept them.
Cell = Union[str, int, float, bool, None]


@dataclasses.dataclass(frozen=True)
class Column:
    """One column of a table: its name and type (`int`, `float`, `bool`, `datetime`, `string`, or an HDF5 field's
    numpy type such as `float32[3]`)."""

    name: str
    type: str


@dataclasses.dataclass(frozen=True)
class TreeNode:
    """One group or dataset of an HDF5 file (`shape` and `dtype` are `None` for groups)."""

    path: str
    kind: str
    shape: tuple[int, ...] | None = None
    dtype: str | None = None
    attributes: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Profile:
    """What a catalog shows about one file. `None` means unknown (not read, or not readable: see `notes`)."""

    format: str
    columns: tuple[Column, ...] | None = None
    row_count: int | None = None
    preview: tuple[dict[str, Cell], ...] = ()
    tree: tuple[TreeNode, ...] = ()
    tree_truncated: bool = False
    table: str | None = None
    notes: tuple[str, ...] = ()


# --- CSV: counting records --------------------------------------------------------------------------------------------

# A line end ending an empty line: a "\n" right after another line end ("\n" or "\r\n").
_BLANK_LINE_END = re.compile(rb"(?:(?<=\n)|(?<=\n\r))\n")
# Whether a block may hold an empty line (searching for one is cheaper than counting them).
_EMPTY_LINE = re.compile(rb"\n\n")
_EMPTY_LINE_CRLF = re.compile(rb"\n\r?\n")


class RecordCounter:
    """Counts the non-empty records of a CSV file from its raw blocks, in order, as `csv.reader` would find them.

    Feed it every block (`feed`), then read `records`: the number of non-empty lines, which equals the number of
    non-empty CSV records unless a field is quoted (it may hold line ends) or a line ends in a bare carriage return;
    then `records` is `None` and only the CSV parser can count (`count_csv_records`). Per block this is one
    `bytes.count` of line ends and a few searches (carriage returns and empty lines are counted only in blocks that
    have them): several times slower than crc32c, over ten times faster than the CSV parser (`python -m benchmarks
    --only catalog`). After a quote character only lines are counted (`lines`, which the parser pass checks).
    """

    def __init__(self, quotechar: bytes = b'"') -> None:
        self._quotechar = quotechar
        self._line_ends = 0
        self._blank = 0
        self._carriage_returns = 0
        self._crlf = 0
        self._quoted = False
        self._size = 0
        self._tail = b"\n"  # the file's start behaves as if after a line end: a leading empty line is blank

    def feed(self, block: bytes | bytearray | memoryview, length: int | None = None) -> None:
        """Count the next block: `block`, or its first `length` bytes (as `hashing.hash_file_blocks` hands over its
        reused buffer: searched up to `length`, never copied, since a 4 MiB copy per block would double the memory
        and cost as much as some of the counting)."""
        data = block.tobytes() if isinstance(block, memoryview) else block
        end = len(data) if length is None else min(length, len(data))
        if not end:
            return
        self._size += end
        self._line_ends += data.count(b"\n", 0, end)
        carriage_returns = self._tail.endswith(b"\r") or data.find(b"\r", 0, end) != -1
        if carriage_returns:
            self._carriage_returns += data.count(b"\r", 0, end)
            self._crlf += (self._tail[-1:] + bytes(data[:1])).count(b"\r\n") + data.count(b"\r\n", 0, end)
        if not self._quoted and data.find(self._quotechar, 0, end) != -1:
            self._quoted = True  # records cannot be told from lines now: only the line count goes on
        if not self._quoted:
            # Blank-line ends whose look-behind reaches into the previous block, then those wholly inside this one.
            head = self._tail + bytes(data[: min(2, end)])
            self._blank += sum(1 for match in _BLANK_LINE_END.finditer(head) if match.start() >= len(self._tail))
            if (_EMPTY_LINE_CRLF if carriage_returns else _EMPTY_LINE).search(data, 0, end):
                self._blank += sum(1 for _ in _BLANK_LINE_END.finditer(data, 2, end))
        self._tail = (self._tail + bytes(data[max(0, end - 2) : end]))[-2:]

    @property
    def exact(self) -> bool:
        """Whether line counting gives the exact record count (no quote character, no bare carriage return)."""
        return not self._quoted and self._carriage_returns == self._crlf

    @property
    def lines(self) -> int:
        """The number of lines as a text stream's `readline` splits them (at LF, CR LF or a bare CR)."""
        bare_carriage_returns = self._carriage_returns - self._crlf
        unterminated = 1 if self._size and self._tail[-1:] not in (b"\n", b"\r") else 0
        return self._line_ends + bare_carriage_returns + unterminated

    @property
    def records(self) -> int | None:
        """The number of non-empty records, or `None` when only the CSV parser can tell (see `exact`)."""
        if not self.exact:
            return None
        return self.lines - self._blank


def _bounded_lines(text: io.TextIOBase, consumed: list[int] | None = None) -> Iterator[str]:
    """The lines of a text stream, each read with a length bound, so that a file without line ends is not one
    unbounded line in memory (`_LineTooLong` is raised instead). `consumed[0]`, if given, counts the characters read."""
    while line := text.readline(MAX_LINE_CHARS):
        if len(line) >= MAX_LINE_CHARS and not line.endswith(("\n", "\r")):
            raise _LineTooLong(f"a line is longer than {MAX_LINE_CHARS} characters")
        if consumed is not None:
            consumed[0] += len(line)
        yield line


class _LineTooLong(ValueError):
    pass


def _open_text(path: str | os.PathLike[str], errors: str = "strict") -> io.TextIOWrapper:
    # utf-8-sig: a byte-order mark (Excel writes one) is not part of the first column's name.
    return open(path, encoding="utf-8-sig", errors=errors, newline="")


def count_csv_records(
    path: str | os.PathLike[str], delimiter: str = ",", lines: int | None = None
) -> tuple[int | None, str | None]:
    """The number of non-empty records in a CSV file, read once through the CSV parser (streaming), and `None` with
    the reason when the file cannot be parsed to the end (a field over the parser's limit, a line too long).

    Every line is read with a length bound, so memory stays flat even in a file without line ends. Given the file's
    line count (`RecordCounter.lines`, from the hashing pass), the lines are read by C code alone (half again as
    fast) and a line cut by the bound shows as one line more than the file has.
    """
    try:
        with _open_text(path, errors="replace") as text:
            if lines is None:
                return sum(1 for record in csv.reader(_bounded_lines(text), delimiter=delimiter) if record), None
            reader = csv.reader(iter(functools.partial(text.readline, MAX_LINE_CHARS), ""), delimiter=delimiter)
            records = sum(1 for record in reader if record)
            if reader.line_num != lines:
                raise _LineTooLong(f"a line is longer than {MAX_LINE_CHARS} characters")
            return records, None
    except (csv.Error, _LineTooLong) as error:
        return None, f"row count skipped: the file cannot be parsed as CSV to its end ({error})"


# --- CSV: columns and preview -----------------------------------------------------------------------------------------

_INT = re.compile(r"[+-]?[0-9]+\Z")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z|[+-]?(?:nan|inf|infinity)\Z", re.I)
#: Types a CSV column can be inferred as, most specific first; `string` is what is left.
_TYPE_ORDER = ("bool", "int", "float", "datetime")


def _is_datetime(value: str) -> bool:
    try:
        datetime.datetime.fromisoformat(value)
    except ValueError:
        return False
    return "-" in value or ":" in value  # not a bare number, which `fromisoformat` also takes ("20240301")


_TESTS: dict[str, Callable[[str], bool]] = {
    "bool": lambda value: value.lower() in ("true", "false"),
    "int": lambda value: _INT.match(value) is not None,
    "float": lambda value: _FLOAT.match(value) is not None,
    "datetime": _is_datetime,
}


class _ColumnTypes:
    """The types each column's non-empty values so far all fit, narrowed value by value."""

    def __init__(self, count: int) -> None:
        self.possible = [set(_TYPE_ORDER) for _ in range(count)]
        self.seen = [False] * count

    def add(self, row: list[str]) -> None:
        for index, value in enumerate(row[: len(self.possible)]):
            value = value.strip()
            if not value:
                continue
            self.seen[index] = True
            possible = self.possible[index]
            for kind in list(possible):
                if not _TESTS[kind](value):
                    possible.discard(kind)

    def types(self) -> list[str]:
        return [
            next((kind for kind in _TYPE_ORDER if kind in possible), "string") if seen else "string"
            for possible, seen in zip(self.possible, self.seen)
        ]


def _column_names(header: list[str]) -> list[str]:
    """Names for a header's fields: empty ones become `column_<n>`, repeated ones get `_2`, `_3`, ... (a table's
    columns need distinct names)."""
    names: list[str] = []
    taken: set[str] = set()
    for index, field in enumerate(header, start=1):
        base = field.strip() or f"column_{index}"
        name, suffix = base, 2
        while name in taken:
            name, suffix = f"{base}_{suffix}", suffix + 1
        taken.add(name)
        names.append(name)
    return names


def _cell(value: str, kind: str) -> Cell:
    """A preview cell: the value as its column's type where that is exact (ints, finite floats, bools), else text."""
    stripped = value.strip()
    if not stripped:
        return None
    if kind == "int" and _INT.match(stripped):
        return int(stripped)
    if kind == "float" and _FLOAT.match(stripped):
        number = float(stripped)
        if math.isfinite(number):  # NaN and infinity are not JSON: shown as written
            return number
    if kind == "bool" and stripped.lower() in ("true", "false"):
        return stripped.lower() == "true"
    return _cut(value)


def _cut(text: str) -> str:
    return text if len(text) <= MAX_CELL_CHARS else text[: MAX_CELL_CHARS - 1] + "…"


def _sample_csv(
    text: io.TextIOBase, delimiter: str, sample_rows: int
) -> tuple[list[Column] | None, list[dict[str, Cell]], list[str]]:
    notes: list[str] = []
    consumed = [0]
    reader = csv.reader(_bounded_lines(text, consumed), delimiter=delimiter)
    try:
        header = next((record for record in reader if record), None)
    except (csv.Error, _LineTooLong) as error:
        return None, [], [f"no columns: the first record cannot be parsed as CSV ({error})"]
    if header is None:
        return None, [], ["the file has no header row"]
    if len(header) > MAX_COLUMNS:
        notes.append(f"only the first {MAX_COLUMNS} of {len(header)} columns are described")
        header = header[:MAX_COLUMNS]
    names = _column_names(header)
    types = _ColumnTypes(len(names))
    raw_preview: list[list[str]] = []
    ragged = 0
    sampled = 0
    try:
        for record in reader:
            if not record:
                continue
            if len(record) != len(header):
                ragged += 1
            types.add(record)
            if len(raw_preview) < PREVIEW_ROWS:
                raw_preview.append(record)
            sampled += 1
            if sampled >= sample_rows or consumed[0] >= SAMPLE_CHARS:
                break
    except (csv.Error, _LineTooLong) as error:
        notes.append(f"types come from the first {sampled} rows: the next cannot be parsed as CSV ({error})")
    if ragged:
        notes.append(f"{ragged} of the first {sampled} rows have a different number of fields than the header")
    columns = [Column(name, kind) for name, kind in zip(names, types.types())]
    shown = columns[:PREVIEW_COLUMNS]
    if len(columns) > PREVIEW_COLUMNS:
        notes.append(f"the preview shows the first {PREVIEW_COLUMNS} of {len(columns)} columns")
    preview = [
        {
            column.name: _cell(record[index], column.type) if index < len(record) else None
            for index, column in enumerate(shown)
        }
        for record in raw_preview
    ]
    return columns, preview, notes


def sample_csv(
    path: str | os.PathLike[str], delimiter: str = ",", sample_rows: int = SAMPLE_ROWS
) -> tuple[list[Column] | None, list[dict[str, Cell]], list[str]]:
    """The columns of a CSV file (names from its first non-empty record, types from up to `sample_rows` rows after
    it, within about `SAMPLE_CHARS` characters), its first rows as a preview, and notes on anything unusual, reading
    only the top of the file.

    Text that is not UTF-8 is read with the undecodable bytes replaced by U+FFFD (and a note saying so).
    """
    try:
        with _open_text(path) as text:
            columns, preview, notes = _sample_csv(text, delimiter, sample_rows)
        return columns, preview, notes
    except UnicodeDecodeError:
        pass
    with _open_text(path, errors="replace") as text:
        columns, preview, notes = _sample_csv(text, delimiter, sample_rows)
    return columns, preview, ["the file is not valid UTF-8: undecodable bytes are shown as \ufffd", *notes]


def profile_csv(
    path: str | os.PathLike[str],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    sample_rows: int = SAMPLE_ROWS,
    delimiter: str = ",",
) -> Profile:
    """A CSV file's profile: columns and preview from the first rows; its row count (records after the header) from
    the pass that hashes the file (which also fills the hash cache, so the upload does not read it again), or from
    a streaming parse when quoting makes line counting inexact; none above `max_bytes`."""
    notes: list[str] = []
    row_count = None
    size = os.path.getsize(path)
    if size <= max_bytes:
        counter = RecordCounter()
        hashing.hash_file_blocks(path, counter.feed)
        records = counter.records
        if records is None:
            records, problem = count_csv_records(path, delimiter, lines=counter.lines)
            notes += [problem] if problem else []
        row_count = max(records - 1, 0) if records is not None else None
    else:
        notes.append(f"row count skipped: the file's {size} bytes are over the catalog's limit of {max_bytes}")
    columns, preview, sample_notes = sample_csv(path, delimiter, sample_rows)
    if columns is None and row_count == 0:
        sample_notes = [note for note in sample_notes if note != "the file has no header row"] + ["the file is empty"]
    return Profile(
        "csv",
        columns=tuple(columns) if columns is not None else None,
        row_count=row_count,
        preview=tuple(preview),
        notes=tuple(notes + sample_notes),
    )


# --- HDF5 -------------------------------------------------------------------------------------------------------------


def _numpy_type(dtype: Any) -> str:
    """A column type for a numpy field type: `int`, `float`, `bool`, `string`, `datetime`, else numpy's own name
    (a sub-array field such as `float64[3]` keeps its shape)."""
    if dtype.subdtype is not None:
        base, shape = dtype.subdtype
        return f"{base.name}[{','.join(map(str, shape))}]"
    kind = dtype.kind
    if kind in "iu":
        return "int"
    if kind == "f":
        return "float"
    if kind == "b":
        return "bool"
    if kind in "SUO":  # h5py stores variable-length strings as objects
        return "string"
    if kind == "M":
        return "datetime"
    return dtype.name


def _hdf5_cell(value: Any) -> Cell:
    if isinstance(value, bytes):
        return _cut(value.decode("utf-8", errors="replace"))
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, bool | int | str):
        return _cut(value) if isinstance(value, str) else value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return _cut(str(value))


def _tree(h5: Any) -> tuple[list[TreeNode], bool, list[tuple[str, Any]]]:
    """Up to `MAX_TREE_NODES` groups and datasets (root first), whether there were more, and the tables seen."""
    import h5py

    nodes = [TreeNode("/", "group", attributes=tuple(sorted(h5.attrs))[:10])]
    tables: list[tuple[str, Any]] = []

    def visit(name: str, item: Any) -> bool | None:
        if len(nodes) >= MAX_TREE_NODES:
            return True  # stop visiting: the rest is not listed
        path = "/" + name
        attributes = tuple(sorted(item.attrs))[:10]
        if isinstance(item, h5py.Dataset):
            nodes.append(TreeNode(path, "dataset", tuple(item.shape or ()), _cut(str(item.dtype)), attributes))
            if item.dtype.names and len(item.shape or ()) == 1:
                tables.append((path, item))
        else:
            nodes.append(TreeNode(path, "group", attributes=attributes))
        return None

    truncated = h5.visititems(visit) is not None
    return nodes, truncated, tables


def profile_hdf5(path: str | os.PathLike[str], *, table: str | None = None) -> Profile:
    """An HDF5 file's profile: its tree of groups and datasets (shapes, dtypes, attribute names), and for its table,
    the dataset `table` or else its only one-dimensional compound dataset (one field per column): the columns, row
    count (the dataset's length) and first rows. Only metadata and the first rows are read."""
    try:
        import h5py
    except ImportError:
        note = "not profiled: reading HDF5 files needs h5py (pip install 'octue-dagster[hdf5]')"
        return Profile("hdf5", notes=(note,))
    try:
        with h5py.File(path, "r") as h5:
            nodes, truncated, tables = _tree(h5)
            notes: list[str] = []
            chosen = None
            if table is not None:
                item = h5.get(table)
                if isinstance(item, h5py.Dataset) and item.dtype.names and item.ndim == 1:
                    chosen = ("/" + table.lstrip("/"), item)
                else:
                    notes.append(f"{table!r} is not a one-dimensional compound dataset in this file: no table shown")
            elif len(tables) == 1:
                chosen = tables[0]
                if truncated:  # another table may be past the listed part of the tree
                    notes.append(f"{chosen[0]} is the only table in the first {MAX_TREE_NODES} groups and datasets")
            elif len(tables) > 1:
                notes.append(
                    f"{len(tables)} tables ({', '.join(name for name, _ in tables[:5])}): choose one with the asset "
                    f"metadata 'octue_dagster/hdf5_table'"
                )
            if chosen is None:
                return Profile("hdf5", tree=tuple(nodes), tree_truncated=truncated, notes=tuple(notes))
            table_path, dataset = chosen
            fields = dataset.dtype.names[:MAX_COLUMNS]
            columns = tuple(Column(field, _numpy_type(dataset.dtype.fields[field][0])) for field in fields)
            shown = fields[:PREVIEW_COLUMNS]
            rows = dataset[:PREVIEW_ROWS]
            preview = tuple({field: _hdf5_cell(row[field]) for field in shown} for row in rows)
            return Profile(
                "hdf5",
                columns=columns,
                row_count=int(dataset.shape[0]),
                preview=preview,
                tree=tuple(nodes),
                tree_truncated=truncated,
                table=table_path,
                notes=tuple(notes),
            )
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as error:
        return Profile("hdf5", notes=(f"not profiled: the file cannot be read as HDF5 ({error})",))


# --- any file ---------------------------------------------------------------------------------------------------------


def profile_file(
    path: str | os.PathLike[str],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    sample_rows: int = SAMPLE_ROWS,
    hdf5_table: str | None = None,
) -> Profile | None:
    """The profile of a local CSV/TSV (by extension) or HDF5 file (by extension or signature), or `None` for other
    files."""
    suffix = Path(path).suffix.lower()
    if suffix in CSV_DELIMITERS:
        return profile_csv(path, max_bytes=max_bytes, sample_rows=sample_rows, delimiter=CSV_DELIMITERS[suffix])
    if suffix in HDF5_EXTENSIONS or _has_hdf5_signature(path):
        return profile_hdf5(path, table=hdf5_table)
    return None


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _has_hdf5_signature(path: str | os.PathLike[str]) -> bool:
    # HDF5 puts its signature at byte 0, 512, 1024, 2048, ... (after a user block); the first two cover common files.
    with contextlib.suppress(OSError), open(path, "rb") as file:
        head = file.read(520)
        return head[:8] == _HDF5_SIGNATURE or head[512:520] == _HDF5_SIGNATURE
    return False


__all__ = [
    "DEFAULT_MAX_BYTES",
    "Column",
    "Profile",
    "RecordCounter",
    "TreeNode",
    "count_csv_records",
    "profile_csv",
    "profile_file",
    "profile_hdf5",
    "sample_csv",
]
