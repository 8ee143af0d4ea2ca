"""The Dagster UI shows a datafile's metadata: the webserver's GraphQL API returns it with proper types, and the asset
page and its Checks tab render it (checked in headless Chromium's DOM, and kept as screenshots).

A real `dg dev` in example_dg_project/ (webserver and daemon, as `make dev` runs it) runs in a subprocess on a free
loopback port, with its own DAGSTER_HOME, against the emulator; it is always stopped, with every process it started,
when the test ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from example_project import demo
from example_project.definitions import build_definitions
from example_project.partitions import daily_partitions
from example_project.readings import COLUMNS
from octue_dagster import Datafile
from octue_dagster.core.storage.store import Store
from octue_dagster.core.storage.gcs_path import parse_gcs_path

ROOT = Path(__file__).resolve().parents[1]
DG_PROJECT = ROOT / "example_dg_project"
#: Set to 1 to copy the screenshots to docs/asset-page.png and docs/asset-checks.png (for the README).
UPDATE_SCREENSHOT_VARIABLE = "OCTUE_DAGSTER_UPDATE_SCREENSHOT"
SERVER_TIMEOUT_SECONDS = 90
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
    "--virtual-time-budget=15000",
]

MATERIALIZATION_QUERY = """
query ($path: [String!]!) {
  assetOrError(assetKey: {path: $path}) {
    __typename
    ... on Asset {
      assetMaterializations(limit: 1) {
        runId
        tags { key value }
        metadataEntries {
          __typename
          label
          ... on PathMetadataEntry { path }
          ... on TextMetadataEntry { text }
          ... on JsonMetadataEntry { jsonString }
          ... on TimestampMetadataEntry { timestamp }
          ... on IntMetadataEntry { intValue intRepr }
          ... on UrlMetadataEntry { url }
        }
      }
    }
  }
}
"""

CHECKS_QUERY = """
query ($path: [String!]!) {
  assetNodeOrError(assetKey: {path: $path}) {
    __typename
    ... on AssetNode {
      assetChecksOrError {
        __typename
        ... on AssetChecks {
          checks {
            name
            executionForLatestMaterialization {
              status
              evaluation {
                success
                description
                metadataEntries { __typename label ... on TextMetadataEntry { text } }
              }
            }
          }
        }
      }
    }
  }
}
"""

CATALOG_QUERY = """
query ($path: [String!]!) {
  assetOrError(assetKey: {path: $path}) {
    ... on Asset {
      assetMaterializations(limit: 1) {
        partition
        metadataEntries {
          label
          ... on TableSchemaMetadataEntry { schema { columns { name type } } }
          ... on IntMetadataEntry { intValue intRepr }
          ... on TableMetadataEntry { table { records } }
          ... on JsonMetadataEntry { jsonString }
        }
      }
    }
  }
}
"""
#: The screenshot's window (a later flag overrides CHROMIUM_FLAGS'): tall enough for the columns and the preview.
SCREENSHOT_WINDOW = "--window-size=1400,1700"
#: The Checks tab's screenshot: its list of checks and the selected check's latest evaluation fit in less.
CHECKS_SCREENSHOT_WINDOW = "--window-size=1400,900"

LOCATION_QUERY = """
query {
  workspaceOrError {
    __typename
    ... on Workspace { locationEntries { name loadStatus locationOrLoadError { __typename } } }
  }
}
"""


def _find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def chromium() -> str:
    """The Chromium binary, installed with apt-get (Debian's `chromium`) when missing and running as root."""
    found = _find_chromium()
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("Chromium is not installed and cannot be installed here (needs root and apt-get).")
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    result = subprocess.run(install, env=environment, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:  # maybe the package lists are missing or stale
        subprocess.run(["apt-get", "update"], env=environment, capture_output=True, timeout=300)
        result = subprocess.run(install, env=environment, capture_output=True, text=True, timeout=900)
    found = _find_chromium()
    if not found:
        pytest.skip(f"Chromium could not be installed with apt-get: {result.stderr.strip()[-500:]}")
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop_process_group(process: subprocess.Popen) -> None:
    """Stop a process started with `start_new_session=True` and everything it started (its process group)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
    # The group may outlive its leader (e.g. the webserver's code server); make sure nothing of it is left.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


def _graphql(url: str, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        body = json.load(response)
    assert "errors" not in body, body
    return body["data"]


def _wait_until_loaded(url: str, process: subprocess.Popen, log: Path) -> None:
    """Wait until the webserver answers and has loaded the example's code location."""
    deadline = time.monotonic() + SERVER_TIMEOUT_SECONDS
    while True:
        if process.poll() is not None:
            pytest.fail(f"dg dev exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(urllib.error.URLError, ConnectionError, OSError, TimeoutError):
            entries = _graphql(url, LOCATION_QUERY)["workspaceOrError"]["locationEntries"]
            if entries and all(entry["loadStatus"] == "LOADED" for entry in entries):
                assert [entry["locationOrLoadError"]["__typename"] for entry in entries] == ["RepositoryLocation"], entries
                return
        if time.monotonic() > deadline:
            pytest.fail(f"dg dev did not load the workspace in {SERVER_TIMEOUT_SECONDS} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.25)


@pytest.fixture
def dagster_home(tmp_path: Path) -> Path:
    """A fresh DAGSTER_HOME, without telemetry or the first-visit "join the community" dialog (it hides the page)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\nnux:\n  enabled: false\n")
    return home


@contextlib.contextmanager
def dg_dev(emulator_url: str, bucket: str, dagster_home: Path, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen, Path]]:
    """`dg dev` in example_dg_project/ (what `make dev` runs) for `bucket`; yields its URL, process and log file, and
    stops its whole process group afterwards."""
    port = _free_port()
    log = tmp_path / "webserver.log"
    environment = {
        **os.environ,
        # What `make dev` puts on the path: this checkout (octue_dagster, example_project) and the dg project.
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(DG_PROJECT / "src")]),
        "TMPDIR": str(tmp_path),
        "DAGSTER_HOME": str(dagster_home),
        "STORAGE_EMULATOR_HOST": emulator_url,
        "OCTUE_DAGSTER_BUCKET": bucket,
    }
    with open(log, "wb") as output:
        process = subprocess.Popen(
            # What `make dev` runs: dg validates the project's defs.yaml files, then starts the webserver and daemon.
            [str(Path(sys.executable).with_name("dg")), "dev", "--host", "127.0.0.1", "--port", str(port)],
            cwd=DG_PROJECT,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield f"http://127.0.0.1:{port}", process, log
    finally:
        _stop_process_group(process)


@pytest.fixture
def webserver(emulator, bucket: str, dagster_home: Path, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen, Path]]:
    """`dg dev` in example_dg_project/ for the test's bucket; yields its URL, process and log file."""
    with dg_dev(emulator.url, bucket, dagster_home, tmp_path) as running:
        yield running


def _chromium(binary: str, arguments: list[str], profile: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run headless Chromium once, killing its whole process tree if it hangs."""
    process = subprocess.Popen(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *arguments],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop_process_group(process)
        pytest.fail(f"Chromium did not finish within {timeout} s: {arguments}")
    finally:
        _stop_process_group(process)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", header[16:24])


def test_asset_page_shows_datafile_metadata(
    chromium: str, webserver, bucket: str, dagster_home: Path, tmp_path: Path, monkeypatch
) -> None:
    url, process, log = webserver
    monkeypatch.setenv("OCTUE_DAGSTER_BUCKET", bucket)

    # Materialize the summary (and what it needs) into the webserver's instance while the webserver starts.
    demo.seed(bucket)
    definitions = build_definitions(bucket)
    job = definitions.resolve_implicit_global_asset_job_def()
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        for day in daily_partitions.get_partition_keys():
            keys = [dg.AssetKey("raw_readings"), dg.AssetKey("cleaned_readings"), dg.AssetKey("turbine_files")]
            assert job.execute_in_process(partition_key=day, asset_selection=keys, instance=instance).success
        keys = [dg.AssetKey("site_metadata"), dg.AssetKey("turbine_summary")]
        summary_run = job.execute_in_process(asset_selection=keys, instance=instance)
        assert summary_run.success

    uri = f"gs://{bucket}/dagster/turbine_summary/=/turbine_summary.h5"
    stored = Datafile.from_object_info(Store.default().require_object(parse_gcs_path(uri)))
    _wait_until_loaded(url, process, log)
    locations = _graphql(url, LOCATION_QUERY)["workspaceOrError"]["locationEntries"]
    assert [entry["name"] for entry in locations] == ["example_dg_project"]  # the dg project's, as `make dev` serves

    # The latest materialization as the UI fetches it: every value with its own metadata type.
    asset = _graphql(url, MATERIALIZATION_QUERY, {"path": ["turbine_summary"]})["assetOrError"]
    assert asset["__typename"] == "Asset"
    (materialization,) = asset["assetMaterializations"]
    assert materialization["runId"] == summary_run.run_id
    entries = {entry["label"]: entry for entry in materialization["metadataEntries"]}
    assert entries["dagster/uri"]["__typename"] == "PathMetadataEntry" and entries["dagster/uri"]["path"] == uri
    assert entries["crc32c"]["__typename"] == "TextMetadataEntry" and entries["crc32c"]["text"] == stored.hash_value
    assert entries["labels"]["__typename"] == "JsonMetadataEntry"
    assert json.loads(entries["labels"]["jsonString"]) == sorted(stored.labels) == ["statistics", "turbine-summary"]
    assert entries["tags"]["__typename"] == "JsonMetadataEntry"
    assert json.loads(entries["tags"]["jsonString"]) == dict(stored.tags)
    assert entries["timestamp"]["__typename"] == "TimestampMetadataEntry"
    assert entries["timestamp"]["timestamp"] == stored.posix_timestamp
    assert entries["datafile_id"]["text"] == stored.id
    assert entries["size_bytes"]["__typename"] == "IntMetadataEntry"
    assert int(entries["size_bytes"]["intRepr"]) == stored.size_bytes
    assert entries["console_url"]["__typename"] == "UrlMetadataEntry"
    # GCS generations exceed GraphQL's 32-bit Int, so they are recorded as text that API clients can read whole.
    assert entries["generation"]["__typename"] == "TextMetadataEntry"
    assert entries["generation"]["text"] == str(stored.generation)
    tags = {tag["key"]: tag["value"] for tag in materialization["tags"]}
    assert tags["dagster/data_version"] == stored.hash_value

    # The asset's Checks tab: both stored-object checks ran after the materialization and passed, with the
    # generation as text (it exceeds GraphQL's Int).
    node = _graphql(url, CHECKS_QUERY, {"path": ["turbine_summary"]})["assetNodeOrError"]
    checks = {check["name"]: check for check in node["assetChecksOrError"]["checks"]}
    assert set(checks) == {"stored_object_intact", "required_labels_and_tags"}
    for check in checks.values():
        execution = check["executionForLatestMaterialization"]
        assert execution["status"] == "SUCCEEDED" and execution["evaluation"]["success"], check
    evaluation = checks["stored_object_intact"]["executionForLatestMaterialization"]["evaluation"]
    intact = {entry["label"]: entry for entry in evaluation["metadataEntries"]}
    assert intact["current_generation"]["text"] == intact["recorded_generation"]["text"] == str(stored.generation)
    dom = _chromium(chromium, ["--dump-dom", f"{url}/assets/turbine_summary?view=checks"], tmp_path / "chromium-checks")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "stored_object_intact" in dom.stdout and "required_labels_and_tags" in dom.stdout

    # The asset page's events view, rendered: the metadata is in the DOM, and a screenshot shows it.
    page = f"{url}/assets/turbine_summary?view=events"
    dom = _chromium(chromium, ["--dump-dom", page], tmp_path / "chromium-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    for text in (uri, stored.hash_value, stored.id, "turbine-summary", "Mar 4, 2024"):
        assert text in dom.stdout, f"{text!r} is not on the asset page"

    # The catalog: a CSV asset's column schema, row count and preview as the API gives them and the overview shows
    # them (with its schema-change check's result); this page is the screenshot.
    day = daily_partitions.get_partition_keys()[-1]
    asset = _graphql(url, CATALOG_QUERY, {"path": ["cleaned_readings"]})["assetOrError"]
    (materialization,) = asset["assetMaterializations"]
    assert materialization["partition"] == day
    entries = {entry["label"]: entry for entry in materialization["metadataEntries"]}
    columns = entries["dagster/column_schema"]["schema"]["columns"]
    assert [column["name"] for column in columns] == list(COLUMNS)
    assert {column["name"]: column["type"] for column in columns}["power_kw"] == "float"
    row_count = int(entries["dagster/row_count"]["intRepr"])
    assert row_count == json.loads(entries["tags"]["jsonString"])["rows"] > 0
    records = [json.loads(record) for record in entries["preview"]["table"]["records"]]
    assert len(records) == 10 and records[0]["timestamp"].startswith(day)
    page = f"{url}/assets/cleaned_readings"
    dom = _chromium(chromium, ["--dump-dom", page], tmp_path / "chromium-catalog-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    for text in ("Columns", *COLUMNS, "Row count", str(row_count), "preview", "Latest check results", "Checks"):
        assert text in dom.stdout, f"{text!r} is not on the cleaned_readings overview"

    screenshot = tmp_path / "asset-page.png"
    shot = _chromium(chromium, [f"--screenshot={screenshot}", SCREENSHOT_WINDOW, page], tmp_path / "chromium-shot")
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert _png_size(screenshot) == (1400, 1700)
    assert screenshot.stat().st_size > 50_000  # a rendered page, not a blank one (which is about 5 kB)

    # The same asset's Checks tab, at the link the overview's "Checks" tab points to, with the stored-object check
    # opened: every check by name with its latest status, and the opened one's evaluation. The second screenshot.
    assert 'href="/assets/cleaned_readings?view=checks"' in dom.stdout
    checks_page = f"{url}/assets/cleaned_readings?view=checks&checkDetail=stored_object_intact"
    dom = _chromium(chromium, ["--dump-dom", checks_page], tmp_path / "chromium-checks-tab-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    for text in ("Checks (3)", "stored_object_intact", "required_labels_and_tags", "column_schema_change", "Passed"):
        assert text in dom.stdout, f"{text!r} is not on the cleaned_readings Checks tab"
    assert dom.stdout.count("Succeeded") == 3  # each check's latest execution, in the list
    for text in ("Latest execution", "partitions_checked", "partitions_failed"):  # the opened check's evaluation
        assert text in dom.stdout, f"{text!r} is not in stored_object_intact's latest execution"
    checks_screenshot = tmp_path / "asset-checks.png"
    shot = _chromium(
        chromium, [f"--screenshot={checks_screenshot}", CHECKS_SCREENSHOT_WINDOW, checks_page], tmp_path / "chromium-checks-shot"
    )
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert _png_size(checks_screenshot) == (1400, 900)
    assert checks_screenshot.stat().st_size > 30_000  # a rendered page, not a blank one (which is about 5 kB)

    if os.environ.get(UPDATE_SCREENSHOT_VARIABLE) == "1":
        shutil.copyfile(screenshot, ROOT / "docs" / "asset-page.png")
        shutil.copyfile(checks_screenshot, ROOT / "docs" / "asset-checks.png")
