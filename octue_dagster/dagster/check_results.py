"""The result an asset check reports: what one check found over every partition, as Dagster shows it.

A `Tally` gathers one check's findings as they complete (in any order), keeping the counts and, in bounded memory,
the first failing partitions by key; `result` makes the `AssetCheckResult`: passed or not, a description naming the
URIs and versions (the first few problems, and how many more), and metadata (per-partition counts and a `failures`
table, or for an unpartitioned asset the recorded and current versions). Generations are text, never ints: they are
64-bit, and GraphQL's Int is 32-bit.
"""

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetKey,
    MetadataValue,
    TableColumn,
    TableRecord,
    TableSchema,
)

from octue_dagster.dagster.object_findings import Finding
from octue_dagster.dagster.recorded_objects import RecordedAsset

#: The check that the stored object is still the generation and crc32c Dagster recorded, with its owner mark.
INTACT_CHECK = "stored_object_intact"
#: The check that the stored object carries the required labels and tags.
METADATA_CHECK = "required_labels_and_tags"
#: At most this many failing partitions (the first by key) are listed in a result's `failures` table and
#: `failed_partitions`; the counts cover all.
TABLE_ROWS = 200
#: At most this many problems are spelled out in a result's description.
DESCRIBED_PROBLEMS = 5

_FAILURES_SCHEMA = TableSchema(
    columns=[
        TableColumn("partition", "string"),
        TableColumn("uri", "string", description="The stored object (or dataset folder)"),
        TableColumn("problem", "string"),
    ]
)


class Tally:
    """One check's findings over every partition: counts, the first failures in full, and the result to report."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.checked = 0
        self.failed = 0
        #: Of the failed, those only unconfirmed (a warning, not an error).
        self.unconfirmed = 0
        self.failures: list[tuple[RecordedAsset, list[str]]] = []
        self.single: Finding | None = None

    def problems(self, finding: Finding) -> list[str]:
        return finding.intact_problems if self.name == INTACT_CHECK else finding.metadata_problems

    def add(self, finding: Finding) -> None:
        self.checked += 1
        self.single = finding if self.checked == 1 else None
        problems = self.problems(finding)
        if not problems and finding.unconfirmed:
            problems = [finding.unconfirmed]
            self.unconfirmed += 1
        if problems:
            self.failed += 1
            self.failures.append((finding.recorded, problems))
            if len(self.failures) >= 2 * TABLE_ROWS:
                # Findings arrive in completion order: keep the first partitions by key, in bounded memory.
                self._keep_first()

    def _keep_first(self) -> None:
        self.failures.sort(key=lambda failure: str(failure[0].partition))
        del self.failures[TABLE_ROWS:]

    def result(self, key: AssetKey, *, partitioned: bool, in_run: bool = False) -> AssetCheckResult:
        if self.checked == 0:
            return AssetCheckResult(
                asset_key=key,
                check_name=self.name,
                passed=False,
                severity=AssetCheckSeverity.WARN,
                description=f"{key.to_user_string()} has no materialization yet, so there is no stored object to "
                "check.",
            )
        metadata: dict[str, MetadataValue] = {}
        if partitioned:
            metadata["partitions_checked"] = MetadataValue.int(self.checked)
            metadata["partitions_failed"] = MetadataValue.int(self.failed)
        if self.failures:
            self._keep_first()
            metadata["failures"] = MetadataValue.table(
                [
                    TableRecord({"partition": recorded.partition or "", "uri": recorded.uri or "", "problem": problem})
                    for recorded, problems in self.failures
                    for problem in problems
                ][:TABLE_ROWS],
                schema=_FAILURES_SCHEMA,
            )
        if partitioned and self.failures:
            metadata["failed_partitions"] = MetadataValue.json(
                [str(recorded.partition) for recorded, _ in self.failures]
            )
        if self.single is not None and not partitioned:
            metadata.update(_object_metadata(self.single))
        description = self._description(partitioned, "partitions of this run" if in_run else "materialized partitions")
        single = self.single
        if single is not None and single.recorded.files_not_recorded and not single.unconfirmed:
            description += (
                f" The materialization listed {len(single.recorded.files)} files of the dataset; the other "
                f"{single.recorded.files_not_recorded} were confirmed through its digest of every file's path and "
                f"crc32c (their content, not their generations)."
            )
        return AssetCheckResult(
            asset_key=key,
            check_name=self.name,
            passed=self.failed == 0,
            # Only what could not be confirmed (a large dataset's folder no longer matching its digest): a warning.
            severity=AssetCheckSeverity.WARN if self.failed == self.unconfirmed else AssetCheckSeverity.ERROR,
            description=description,
            metadata=metadata,
        )

    def _objects_of(self, partitions: str) -> str:
        """"the objects of all 4 materialized partitions", or, for one, "the object of the only materialized
        partition" (a description people read in the Checks tab)."""
        if self.checked == 1:
            return f"the object of the only {partitions.replace('partitions', 'partition', 1)}"
        return f"the objects of all {self.checked} {partitions}"

    def _description(self, partitioned: bool, partitions: str) -> str:
        if self.failed == 0:
            objects = self._objects_of(partitions) if partitioned else "the stored object"
            if self.name == INTACT_CHECK:
                verb = "are" if partitioned and self.checked != 1 else "is"
                return (
                    f"{objects[0].upper()}{objects[1:]} {verb} as the latest materialization recorded (checked from "
                    f"metadata; nothing downloaded)."
                )
            return f"The required labels and tags are present on {objects}."
        problems = [
            f"partition {recorded.partition!r}: {problem}" if partitioned else problem
            for recorded, problems in self.failures
            for problem in problems
        ]
        shown = " ".join(problems[:DESCRIBED_PROBLEMS])
        more = len(problems) - DESCRIBED_PROBLEMS
        if partitioned:
            shown = f"{self.failed} of {self.checked} {partitions} failed. {shown}"
        return shown + (f" ... and {more} more problem(s) (see the failures table)." if more > 0 else "")


def _object_metadata(finding: Finding) -> dict[str, MetadataValue]:
    """The versions of an unpartitioned asset's object, as recorded and as they are now. Generations are text:
    they are 64-bit, and GraphQL's Int is 32-bit."""
    recorded = finding.recorded
    metadata: dict[str, MetadataValue] = {}
    if recorded.uri is not None:
        metadata["uri"] = MetadataValue.path(recorded.uri)
    if recorded.run_id is not None:
        metadata["materialization_run_id"] = MetadataValue.text(recorded.run_id)
    if recorded.kind == "dataset":
        metadata["files_checked"] = MetadataValue.int(len(finding.files))
        if recorded.files_not_recorded:
            # The record's table lists the first files only; the others are compared through its digest.
            metadata["files_not_recorded"] = MetadataValue.int(recorded.files_not_recorded)
        return metadata
    if len(finding.files) == 1:
        (file,) = finding.files
        metadata["recorded_generation"] = MetadataValue.text(str(file.recorded.generation or ""))
        metadata["recorded_crc32c"] = MetadataValue.text(file.recorded.crc32c or "")
        current = file.current
        metadata["current_generation"] = MetadataValue.text(str(current.generation) if current else "(deleted)")
        metadata["current_crc32c"] = MetadataValue.text(current.crc32c if current else "(deleted)")
        if current is not None:
            metadata["current_metageneration"] = MetadataValue.text(str(current.metageneration))
    return metadata


__all__ = ["DESCRIBED_PROBLEMS", "INTACT_CHECK", "METADATA_CHECK", "TABLE_ROWS", "Tally"]
