"""The README's Dagster example runs as written: it is executed against the emulator with its bucket swapped in."""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg

from octue_dagster import Datafile

README = Path(__file__).parent.parent / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_dagster_example_materializes(bucket, client):
    block = next(code for code in _python_blocks() if "DatafileIOManager" in code)
    namespace: dict = {}
    exec(compile(block.replace("my-bucket", bucket), "README.md", "exec", dont_inherit=True), namespace)
    defs: dg.Definitions = namespace["defs"]
    assets = [namespace["raw_readings"], namespace["cleaned_readings"]]
    result = dg.materialize(assets, resources=defs.resources, partition_key="2024-03-02")
    assert result.success
    stored = Datafile(f"gs://{bucket}/dagster/cleaned_readings/partition=2024-03-02/cleaned_readings.csv", storage_client=client)
    assert stored.labels == {"cleaned"}
    with stored.open() as file:
        assert file.read() == "turbine,wind_speed\nT1,7.2"
    retag = defs.get_job_def("mark_checked")
    assert retag.execute_in_process(resources=defs.resources).success
    assert "quality-checked" in Datafile(stored.cloud_path, storage_client=client).labels


def test_readme_store_and_selection_example_runs(bucket, client):
    block = next(code for code in _python_blocks() if "retag_objects(store" in code)
    raw = Datafile(f"gs://{bucket}/raw/2024-05-01.csv", storage_client=client, labels={"raw"})
    with raw.open("w") as file:
        file.write("time,speed\n")
    client.bucket(bucket).blob("raw/.octue").upload_from_string('{"dataset": {}}')  # Octue's dataset metadata object
    namespace: dict = {}
    exec(compile(block.replace("my-bucket", bucket), "README.md", "exec", dont_inherit=True), namespace)
    assert [datafile.name for datafile in namespace["raw"]] == ["2024-05-01.csv"]
    assert namespace["counts"].as_dict() == {
        "scanned": 1, "matched": 1, "changed": 1, "unchanged": 0, "skipped": 0, "failed": 0, "vanished": 0
    }
    assert Datafile(raw.cloud_path, storage_client=client).labels == {"raw", "validated"}
    assert client.bucket(bucket).blob("raw/.octue").download_as_bytes() == b'{"dataset": {}}'
