"""`Manifest`: named datasets in Octue's JSON format, read from and written to GCS."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from octue_dagster.core.dataset.dataset import Dataset
from octue_dagster.core.dataset.manifest import Manifest
from octue_dagster.exceptions import InvalidInputError
from test_dataset import FIXTURES, make_local_dataset, put_sdk_dataset


def put_sdk_manifest(client, bucket: str) -> str:
    """Store the SDK's manifest fixture in `bucket`, pointing at the SDK's dataset fixture stored there too."""
    put_sdk_dataset(client, bucket)
    fixture = json.loads((FIXTURES / "cloud_manifest.json").read_text())
    content = fixture["content"].replace(f"gs://{fixture['bucket']}/", f"gs://{bucket}/")
    client.bucket(bucket).blob(fixture["name"]).upload_from_string(content)
    return f"gs://{bucket}/{fixture['name']}"


def test_reads_a_manifest_written_by_octue_sdk(client, bucket):
    expected = json.loads((FIXTURES / "expected_dataset.json").read_text())["manifest"]
    manifest = Manifest.from_cloud(put_sdk_manifest(client, bucket), storage_client=client)
    assert manifest.id == expected["id"]
    wind_farm = manifest.get_dataset("wind_farm")
    assert wind_farm.id == expected["datasets"]["wind_farm"]["id"]
    assert sorted(f.name for f in wind_farm.files) == expected["datasets"]["wind_farm"]["files"]
    selected = manifest.get_dataset("selected")
    assert sorted(f.name for f in selected.files) == expected["datasets"]["selected"]["files"]
    # The serialised dataset's own id, name and labels are kept (Octue's SDK replaces them for cloud datasets).
    assert (selected.id, selected.name, set(selected.labels)) == (
        "d5e6f7a8-0000-4000-8000-0000000000e2",
        "selected",
        {"subset"},
    )
    assert manifest.all_datasets_are_in_cloud
    with pytest.raises(InvalidInputError, match="wind_farm"):
        manifest.get_dataset("missing")


def test_manifest_round_trips_through_the_cloud_in_octue_format(client, bucket, tmp_path):
    local = make_local_dataset(tmp_path / "farm", count=2, name="farm")
    local.upload(f"gs://{bucket}/farm")
    chosen = Dataset(f"gs://{bucket}/farm", files=[f"gs://{bucket}/farm/turbine-0.csv"], name="one", storage_client=client)
    manifest = Manifest(datasets={"farm": f"gs://{bucket}/farm", "one": chosen}, name="m", storage_client=client)
    manifest.to_cloud(f"gs://{bucket}/m.json")

    stored = json.loads(client.bucket(bucket).blob("m.json").download_as_bytes())
    assert stored["datasets"]["farm"] == f"gs://{bucket}/farm"
    assert stored["datasets"]["one"]["files"] == [f"gs://{bucket}/farm/turbine-0.csv"]
    assert stored["id"] == manifest.id and stored["name"] == "m"

    read = Manifest.from_cloud(f"gs://{bucket}/m.json", storage_client=client)
    assert read.get_dataset("farm").id == local.id
    assert [f.name for f in read.get_dataset("one").files] == ["turbine-0.csv"]
    assert read.get_dataset("one").name == "one"

    paths = read.download({"farm": tmp_path / "down"}, download_all=False)
    assert paths == {"farm": str(tmp_path / "down")}
    assert (Path(paths["farm"]) / "turbine-0.csv").read_text() == "time,speed\n0,0\n"


def test_bad_manifests_raise_specific_errors(tmp_path):
    with pytest.raises(InvalidInputError, match="mapping"):
        Manifest(datasets=["a"])  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="non-empty"):
        Manifest(datasets={"": str(tmp_path)})
    with pytest.raises(InvalidInputError, match="Cannot make a Dataset"):
        Manifest(datasets={"a": 3})  # type: ignore[dict-item]
