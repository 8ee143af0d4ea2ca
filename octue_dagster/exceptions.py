"""Errors raised by octue_dagster: one root, `OctueDagsterError`, and each error also the matching builtin.

`except OctueDagsterError` catches everything the library raises on purpose; `except ValueError` still catches bad
input, `except FileNotFoundError` a missing object, and so on, so code written for builtin errors keeps working.
"""

from __future__ import annotations


class OctueDagsterError(Exception):
    """The root of every error this library raises on purpose.

    When Octue's SDK is already imported in the process, an error with an Octue counterpart (see
    `octue_dagster.octue_exceptions`) is also an instance of Octue's class, so `except octue.exceptions...` clauses in
    code ported from Octue keep catching it.
    """

    def __new__(cls, *args: object, **kwargs: object) -> OctueDagsterError:
        from octue_dagster.octue_exceptions import with_octue_counterpart

        return super().__new__(with_octue_counterpart(cls), *args, **kwargs)

    def __reduce__(self) -> tuple[object, ...]:
        # Pickle as our own class: the class that adds Octue's counterpart is made at run time.
        own = next(klass for klass in type(self).__mro__ if globals().get(klass.__name__) is klass)
        return (own, self.args, self.__dict__ or None)


class InvalidInputError(OctueDagsterError, ValueError):
    """Base class for every rejected input: labels, tags, timestamps, paths and metadata."""


class InvalidLabelError(InvalidInputError):
    """A label does not follow Octue's label rule."""


class InvalidTagError(InvalidInputError):
    """A tag name does not follow Octue's tag-name rule, or a tag value cannot be stored as JSON."""


class InvalidTimestampError(InvalidInputError):
    """A timestamp is neither a datetime nor POSIX seconds."""


class InvalidTimestampTypeError(InvalidTimestampError, TypeError):
    """A timestamp of a type that cannot be one (such as a string): also a `TypeError`, as in Octue's SDK."""


class CloudLocationNotSpecifiedError(InvalidInputError):
    """A cloud operation (upload, update_cloud_metadata, a signed URL) on a datafile with no cloud location, or the
    removal of the only location a datafile has (Octue's `CloudLocationNotSpecified`)."""


class InvalidCloudPathError(InvalidInputError):
    """A `gs://` path is malformed (no bucket, bad bucket name, bad object name)."""


class InvalidMetadataError(InvalidInputError):
    """Stored metadata (object custom metadata or a `.octue` entry) cannot be read or is too large to store."""


class CorruptMetadataFileError(InvalidMetadataError):
    """A local `.octue` file is not valid JSON or not in Octue's format. It is never overwritten."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        super().__init__(
            f"The metadata file {path!r} is corrupt ({reason}). It has not been changed. Fix it by hand, or move it "
            f"aside to let octue_dagster start a new one."
        )


class ConflictError(OctueDagsterError):
    """Another writer changed the cloud object since this datafile read it; nothing was overwritten."""


class ChecksumMismatchError(OctueDagsterError):
    """Downloaded or uploaded bytes do not match the object's crc32c; the bad copy was discarded."""


class DatafileNotFoundError(OctueDagsterError, FileNotFoundError):
    """A datafile (a local file or a `gs://` object) does not exist."""


class DatafileExistsError(OctueDagsterError, FileExistsError):
    """A datafile already exists where a new one was to be created (for example with mode `x`)."""


class CloudObjectNotFoundError(DatafileNotFoundError):
    """A `gs://` object does not exist."""


class BucketNotFoundError(OctueDagsterError, FileNotFoundError):
    """A bucket does not exist."""


class StoragePermissionError(OctueDagsterError, PermissionError):
    """The credentials in use may not perform an operation on a bucket or object."""


class StorageUnavailableError(OctueDagsterError, ConnectionError):
    """GCS did not answer successfully, even after retries (server errors, throttling, dropped or garbled answers)."""


class MissingCredentialsError(OctueDagsterError):
    """No Google Cloud credentials were found and no storage emulator is configured."""


class MissingDependencyError(OctueDagsterError, ImportError):
    """An optional dependency (such as h5py) is needed for this operation."""


class InvalidFilterError(InvalidInputError):
    """A filter such as `name__ends_with=".csv"` names no valid action, or cannot be applied to the items' values."""


class UnexpectedNumberOfResultsError(OctueDagsterError, LookupError):
    """`one(...)` found no item, or more than one, satisfying its filters."""


class BrokenSequenceError(OctueDagsterError):
    """`order_by(..., check_start_value=..., check_constant_increment=...)` found a gap or a wrong start."""


class ReadOnlyDatafileError(OctueDagsterError, PermissionError):
    """A datafile is read-only (for example an asset's input, which belongs to the upstream asset) and was opened
    for writing or asked to change its stored content or metadata; nothing was changed."""


class UnsupportedTypeError(OctueDagsterError, TypeError):
    """A value or annotation of a type the library cannot handle there (for example an asset returning a `str` to
    `DatafileIOManager`); the message names the type and what to use instead."""


class ForeignObjectError(ConflictError):
    """An object the I/O manager did not write is where it would store an output; it was left as it was."""


class MetadataFileBusyError(OctueDagsterError, TimeoutError):
    """Another process held the lock on a `.octue` file for too long; the file was not changed."""


class StorageRequestError(OctueDagsterError, ValueError):
    """GCS refused a request as malformed or impossible (400 Bad Request and other 4xx answers the library has no
    more specific error for), such as a read of a requester-pays bucket without a billing project."""


class OctueCompatibilityWarning(OctueDagsterError, UserWarning):
    """Something behaved as Octue's SDK defines it where a user of this library's earlier releases may expect
    otherwise (metadata given to `Datafile(...)` that stored metadata overrides; metadata changed inside a reading
    `open()` block, which is not saved)."""


class InvalidSerialisationError(InvalidInputError, TypeError):
    """`Dataset.deserialise` / `Manifest.deserialise` was given something that is not a serialisation of one (not a
    dict, not JSON, or with fields the class does not take; Octue's SDK raises a `TypeError` there)."""


class ReadOnlyDatasetError(OctueDagsterError, PermissionError):
    """A dataset read from a signed URL was asked to change its stored metadata or files, or to be uploaded; a signed
    URL only reads. Download it (`dataset.download("folder")`) and make a `Dataset` of that folder to change it."""


class UnsafeFolderError(OctueDagsterError, PermissionError):
    """A folder the library keeps private files in (a working folder, the download cache, its locks) is not private
    to the current user: another user owns it, it is open to other users, or it is a symbolic link. Nothing was read,
    written or deleted through it; the message names the folder and the fix."""


class FolderNotWritableError(OctueDagsterError, PermissionError):
    """A folder the library must write in (the download cache, a datafile's folder) is read-only; the message names
    the folder and the setting that chooses another."""


class InsufficientSpaceError(OctueDagsterError, OSError):
    """A disk is full (or a file size limit was reached): the message names the folder and the bytes needed. Nothing
    half-written was left behind; once there is room, the same call works."""


class StaleMaterializationError(ConflictError):
    """The object stored for an asset (partition) is not the version Dagster's latest materialization recorded (it
    was replaced outside that materialization); nothing was read. The message names both versions and the fix."""


class PartitionBusyError(OctueDagsterError, TimeoutError):
    """Another run held the store lock of an asset partition for too long; nothing was stored."""


class LocalFileChangedError(OctueDagsterError, OSError):
    """A local file kept changing in place (truncated or rewritten) while it was being read to hash it; no hash was
    recorded. Hash it again once whatever writes it has finished."""


class UnknownArgumentError(InvalidInputError, TypeError):
    """A keyword argument no parameter takes (such as `Datafile(path, lables=[...])`, which would otherwise be kept
    for `open()` and silently unused); the message names the parameters there are."""
