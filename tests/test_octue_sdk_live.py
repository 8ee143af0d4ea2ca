"""Datasets against the real Octue SDK (`octue==0.69.1`, in its own venv), both ways, on the test emulator.

The venv is built once per checkout in `.venv-octue-sdk/` at the repository's root (gitignored; `$OCTUE_SDK_VENV_DIR`
moves it, for example to a CI cache) and reused by path; if it cannot be built (no network, no venv module), these
tests are skipped and the committed SDK fixtures (test_dataset.py) still prove compatibility.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import filelock
import pytest

from octue_dagster import Datafile
from octue_dagster.core.dataset.dataset import Dataset

OCTUE_VERSION = "0.69.1"
VENV_ROOT = Path(os.environ.get("OCTUE_SDK_VENV_DIR") or Path(__file__).resolve().parents[1] / ".venv-octue-sdk")
VENV = VENV_ROOT / f"octue-{OCTUE_VERSION}"

# Octue's storage client calls google.auth.default(); the emulator needs no credentials, so anonymous ones are given.
PRELUDE = textwrap.dedent(
    """
    import json, os, sys
    from unittest import mock
    from google.auth.credentials import AnonymousCredentials
    mock.patch("google.auth.default", lambda *a, **k: (AnonymousCredentials(), "test")).start()
    from octue.resources import Datafile, Dataset
    """
)


def _venv_python() -> Path:
    return VENV / "bin" / "python"


def _sdk_works() -> bool:
    if not _venv_python().exists():
        return False
    check = [str(_venv_python()), "-c", f"import importlib.metadata as m; assert m.version('octue') == '{OCTUE_VERSION}'"]
    return subprocess.run(check, capture_output=True).returncode == 0


@pytest.fixture(scope="session")
def octue_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Python of a venv holding the real Octue SDK, built once (under a lock) and reused across runs."""
    VENV_ROOT.mkdir(parents=True, exist_ok=True)
    # pip's build folders go in pytest's basetemp, not the system's temporary directory.
    environment = {**os.environ, "TMPDIR": str(tmp_path_factory.mktemp("pip-tmp"))}
    with filelock.FileLock(str(VENV) + ".lock", timeout=900):
        if not _sdk_works():
            try:
                subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True, capture_output=True)
                subprocess.run(
                    [str(_venv_python()), "-m", "pip", "install", "-q", f"octue=={OCTUE_VERSION}"],
                    check=True,
                    capture_output=True,
                    timeout=840,
                    env=environment,
                )
            except (subprocess.SubprocessError, OSError) as error:
                pytest.skip(f"Cannot build a venv with octue=={OCTUE_VERSION} (no network?): {error}")
        if not _sdk_works():
            pytest.skip(f"octue=={OCTUE_VERSION} is not importable in {VENV}.")
    return _venv_python()


def run_sdk(octue_python: Path, emulator, script: str, tmp_path: Path) -> dict:
    """Run a script under the real SDK against the test emulator and return the JSON it prints last."""
    environment = {
        **{key: value for key, value in os.environ.items() if not key.startswith("PYTHON")},
        "STORAGE_EMULATOR_HOST": emulator.url,
        "GOOGLE_CLOUD_PROJECT": "test",
    }
    completed = subprocess.run(
        [str(octue_python), "-c", PRELUDE + textwrap.dedent(script)],
        capture_output=True,
        text=True,
        env=environment,
        cwd=tmp_path,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_octue_sdk_reads_a_dataset_we_uploaded(octue_python, emulator, client, bucket, tmp_path):
    folder = tmp_path / "farm"
    (folder / "met").mkdir(parents=True)
    for relative, labels, tags, timestamp in [
        ("t1.csv", {"raw"}, {"turbine": "T1", "cluster": 0}, datetime.datetime(2024, 5, 1, 12, tzinfo=datetime.UTC)),
        ("t2.csv", {"raw", "suspect"}, {"turbine": "T2", "cluster": 1}, None),
        ("met/mast.csv", {"met-mast"}, {"height_m": 80.5, "nested": {"a": [1, 2]}}, None),
    ]:
        (folder / relative).write_text(f"data of {relative}\n")
        Datafile(folder / relative, labels=labels, tags=tags, timestamp=timestamp).update_metadata()
    ours = Dataset(folder, name="farm-day", labels={"wind", "day"}, tags={"site": "north_sea"}, storage_client=client)
    ours.upload(f"gs://{bucket}/farm")

    seen = run_sdk(
        octue_python,
        emulator,
        f"""
        dataset = Dataset(path="gs://{bucket}/farm")
        prefix = "gs://{bucket}/farm/"
        print(json.dumps({{
            "id": dataset.id, "name": dataset.name, "labels": sorted(map(str, dataset.labels)),
            "tags": dict(dataset.tags), "hash_value": dataset.hash_value,
            "files": {{
                f.cloud_path[len(prefix):]: {{
                    "id": f.id, "labels": sorted(map(str, f.labels)), "tags": dict(f.tags),
                    "timestamp": f.timestamp.isoformat() if f.timestamp else None, "hash_value": f.hash_value,
                }} for f in dataset.files
            }},
            "raw": sorted(f.name for f in dataset.files.filter(labels__contains="raw", tags__cluster__gt=0)),
        }}))
        """,
        tmp_path,
    )
    assert (seen["id"], seen["name"], seen["labels"], seen["tags"]) == (
        ours.id,
        "farm-day",
        ["day", "wind"],
        {"site": "north_sea"},
    )
    assert seen["hash_value"] == ours.hash_value
    expected_files = {
        str(ours.relative_path(f)): {
            "id": f.id,
            "labels": sorted(f.labels),
            "tags": dict(f.tags),
            "timestamp": f.timestamp.isoformat() if f.timestamp else None,
            "hash_value": f.hash_value,
        }
        for f in ours.files
    }
    assert seen["files"] == expected_files
    assert seen["raw"] == ["t2.csv"]


def test_we_read_a_dataset_the_octue_sdk_uploaded(octue_python, emulator, client, bucket, tmp_path, request_log):
    written = run_sdk(
        octue_python,
        emulator,
        f"""
        import datetime
        os.makedirs("sdk/deep")
        for relative, labels, tags in [("a.csv", {{"raw"}}, {{"n": 1}}), ("deep/b.h5", {{"cleaned"}}, {{"n": 2}})]:
            with Datafile(path="sdk/" + relative, labels=labels, tags=tags, mode="w",
                          timestamp=datetime.datetime(2024, 1, 2, 3, 4, 5)) as (datafile, f):
                f.write(relative)
        dataset = Dataset(path="sdk", name="from-sdk", labels={{"sdk"}}, tags={{"tool": "octue"}})
        dataset.upload("gs://{bucket}/from-sdk")
        print(json.dumps({{"id": dataset.id, "files": {{f.name: f.id for f in dataset.files}},
                          "hash_value": dataset.hash_value}}))
        """,
        tmp_path,
    )
    request_log.clear()
    ours = Dataset(f"gs://{bucket}/from-sdk", storage_client=client)
    assert request_log.count == 2  # one listing page and the .octue object
    assert (ours.id, ours.name, set(ours.labels), dict(ours.tags)) == (written["id"], "from-sdk", {"sdk"}, {"tool": "octue"})
    assert {f.name: f.id for f in ours.files} == written["files"]
    assert ours.hash_value == written["hash_value"]
    assert ours.files.one(labels__contains="cleaned", tags__n__gte=2).name == "b.h5"
    # The SDK was given a naive datetime: it stays naive, as the SDK itself reads it.
    timestamp = ours.files.one(name="a.csv").timestamp
    assert timestamp == datetime.datetime(2024, 1, 2, 3, 4, 5) and timestamp.tzinfo is None
    with ours.files.one(name="a.csv").open() as file:
        assert file.read() == "a.csv"


def test_octue_sdk_reads_a_dataset_asset_stored_by_the_io_manager(octue_python, emulator, client, bucket, tmp_path):
    from dagster import asset, materialize
    from dagster_gcp import GCSResource

    from octue_dagster.dagster.io_manager import DatafileIOManager

    @asset
    def farm_day() -> Dataset:
        folder = tmp_path / "farm"
        folder.mkdir()
        for turbine in ("T1", "T2"):
            (folder / f"{turbine}.csv").write_text(f"t,v\n0,{turbine}\n")
            Datafile(folder / f"{turbine}.csv", labels={"raw"}, tags={"turbine": turbine}).update_metadata()
        return Dataset(folder, name="farm-day", labels={"wind"}, tags={"site": "north_sea"})

    io_manager = DatafileIOManager(bucket=bucket, prefix="dagster", gcs=GCSResource())
    assert materialize([farm_day], resources={"io_manager": io_manager}).success
    ours = Dataset(f"gs://{bucket}/dagster/farm_day/=", storage_client=client)

    seen = run_sdk(
        octue_python,
        emulator,
        f"""
        dataset = Dataset(path="gs://{bucket}/dagster/farm_day/=")
        print(json.dumps({{
            "id": dataset.id, "name": dataset.name, "labels": sorted(map(str, dataset.labels)),
            "tags": dict(dataset.tags), "files": {{f.name: [f.id, dict(f.tags)] for f in dataset.files}},
        }}))
        """,
        tmp_path,
    )
    assert (seen["id"], seen["name"], seen["labels"], seen["tags"]) == (
        ours.id,
        "farm-day",
        ["wind"],
        {"site": "north_sea"},
    )
    assert seen["files"] == {f.name: [f.id, dict(f.tags)] for f in ours.files}
    assert set(seen["files"]) == {"T1.csv", "T2.csv"}


def test_octue_sdk_reads_a_manifest_we_wrote_and_we_read_its_manifests(octue_python, emulator, client, bucket, tmp_path):
    from octue_dagster import Manifest

    folder = tmp_path / "farm"
    folder.mkdir()
    (folder / "a.csv").write_text("a\n")
    dataset = Dataset(folder, name="farm", labels={"wind"}, storage_client=client)
    dataset.upload(f"gs://{bucket}/farm")
    Manifest(datasets={"farm": dataset}, name="ours", storage_client=client).to_cloud(f"gs://{bucket}/ours.json")

    seen = run_sdk(
        octue_python,
        emulator,
        f"""
        from octue.resources import Manifest
        manifest = Manifest.from_cloud("gs://{bucket}/ours.json")
        farm = manifest.get_dataset("farm")
        Manifest(datasets={{"again": "gs://{bucket}/farm"}}, id="{'0' * 8}-0000-4000-8000-{'0' * 12}").to_cloud(
            "gs://{bucket}/theirs.json"
        )
        print(json.dumps({{"id": farm.id, "name": farm.name, "files": sorted(f.name for f in farm.files)}}))
        """,
        tmp_path,
    )
    assert seen == {"id": dataset.id, "name": "farm", "files": ["a.csv"]}
    theirs = Manifest.from_cloud(f"gs://{bucket}/theirs.json", storage_client=client)
    assert theirs.id == "00000000-0000-4000-8000-000000000000"
    assert theirs.get_dataset("again").id == dataset.id and len(theirs.get_dataset("again")) == 1
