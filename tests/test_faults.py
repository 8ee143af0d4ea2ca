"""Network faults: every Datafile operation, under every fault, either succeeds or raises a clear error, and leaves
each store (object content and metadata, local file and `.octue`, download cache) in its old or its new state.

The faults come from `faultproxy.FaultProxy`, between a storage client made for each test and the emulator. The
store keeps the library's own retry rules (google-cloud-storage's predicate), with shorter back-off so that the
matrix runs in seconds, and a short per-request timeout so that a stalled response counts as a timeout quickly.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from octue_dagster import Datafile, OctueDagsterError
from octue_dagster.core.cache import copies as cache
from octue_dagster.core.metadata import values as md
from octue_dagster.core.local.atomic import is_temporary
from octue_dagster.core.storage.gcs_path import GCSPath
from octue_dagster.core.storage.store import Store, make_client
from octue_dagster.testing.emulator import EMULATOR_VARIABLE

from conftest import QUICK_SETTINGS
from faultproxy import FaultProxy, standard_faults
from reliability_summary import save_summary

STALL_SECONDS = 1.5
OLD = bytes(range(256)) * 400  # 100 KiB: big enough that a cut in the body lands mid-content, small enough for multipart
NEW = b"new content " * 9000

_summary: dict[str, Any] = {"cases": 0, "faults_injected": 0, "outcomes": {}, "lost": 0}


@pytest.fixture(scope="module", autouse=True)
def write_summary():
    """Record what this module did (cases, faults fired, outcomes) for docs/reliability.md."""
    yield
    save_summary("faults", _summary)


@pytest.fixture
def faulty_client(proxy: FaultProxy, emulator, monkeypatch: pytest.MonkeyPatch):
    """A storage client whose requests go through the proxy, with short timeouts and quick retries."""
    proxy.clear()
    monkeypatch.setenv(EMULATOR_VARIABLE, proxy.url)
    client = make_client()
    monkeypatch.setenv(EMULATOR_VARIABLE, emulator.url)
    return Store(client, settings=QUICK_SETTINGS)


# --- the state of every store, to compare before and after -----------------------------------------------------------


def object_state(client, path: GCSPath) -> tuple | None:
    """(content, labels, tags, generation) of an object, read past the proxy; `None` if absent."""
    info = Store(client).get_object(path)
    if info is None:
        return None
    content = client.bucket(path.bucket).blob(path.name).download_as_bytes()
    stored = md.from_cloud_metadata(info.custom_metadata, str(path))
    return content, stored.labels, json.dumps(stored.tags, sort_keys=True), info.generation


def local_state(path: Path) -> tuple | None:
    """(content, `.octue` entry) of a local file; `None` if neither exists."""
    content = path.read_bytes() if path.exists() else None
    octue = path.parent / ".octue"
    entry = json.loads(octue.read_text()).get("datafiles", {}).get(path.name) if octue.exists() else None
    if content is None and entry is None:
        return None
    return content, json.dumps(entry, sort_keys=True)


def without_generation(state: tuple | None) -> tuple | None:
    return None if state is None else state[:3]


@dataclasses.dataclass
class World:
    """The bucket, folder and paths one case works on."""

    client: Any
    bucket: str
    folder: Path
    source: GCSPath
    other: GCSPath
    local: Path

    def put(self, path: GCSPath, content: bytes, labels: set[str]) -> None:
        metadata = md.to_cloud_metadata("1c4b0b36-6a49-4b6a-9d55-1b0f5f4a0a11", None, labels, {})
        blob = self.client.bucket(path.bucket).blob(path.name)
        blob.metadata = metadata
        blob.upload_from_string(content)

    def snapshot(self) -> dict[str, Any]:
        return {
            "source": object_state(self.client, self.source),
            "other": object_state(self.client, self.other),
            "local": local_state(self.local),
        }


@dataclasses.dataclass(frozen=True)
class Operation:
    """One Datafile operation: how to set up the old state, what to do, and which request the fault targets."""

    name: str
    prepare: Callable[[World], None]
    act: Callable[[World, Any], None]
    method: str
    path: str


def _prepare_source(world: World) -> None:
    world.put(world.source, OLD, {"old"})


def _prepare_local(world: World) -> None:
    _prepare_source(world)
    world.local.write_bytes(NEW)
    local = Datafile(world.local, labels={"new"})
    local.update_metadata()


def _instantiate(world: World, store) -> None:
    datafile = Datafile(str(world.source), store=store)
    assert datafile.labels == {"old"}


def _read(world: World, store) -> None:
    with Datafile(str(world.source), store=store).open("rb") as file:
        assert file.read() == OLD


def _write(world: World, store) -> None:
    datafile = Datafile(str(world.source), store=store)
    datafile.labels.add("new")
    with datafile.open("wb") as file:
        file.write(NEW)


def _append(world: World, store) -> None:
    datafile = Datafile(str(world.source), store=store)
    datafile.labels.add("new")
    with datafile.open("ab") as file:
        file.write(NEW)


def _update_metadata(world: World, store) -> None:
    datafile = Datafile(str(world.source), store=store)
    datafile.labels.add("new")
    datafile.update_metadata()


def _upload(world: World, store) -> None:
    Datafile(world.local, store=store).upload(str(world.other))


def _download(world: World, store) -> None:
    Datafile(str(world.source), store=store).download(world.local)


def _copy(world: World, store) -> None:
    Datafile(str(world.source), store=store).upload(str(world.other))


OPERATIONS = [
    Operation("instantiate", _prepare_source, _instantiate, "GET", r"/storage/v1/b/[^/]+/o/source"),
    Operation("read", _prepare_source, _read, "GET", r"alt=media"),
    Operation("write", _prepare_source, _write, "POST", r"/upload/"),
    Operation("append", _prepare_source, _append, "POST", r"/upload/"),
    Operation("update_metadata", _prepare_source, _update_metadata, "PATCH", r"/o/source"),
    Operation("upload", _prepare_local, _upload, "POST", r"/upload/"),
    Operation("download", _prepare_source, _download, "GET", r"alt=media"),
    Operation("copy", _prepare_source, _copy, "POST", r"rewriteTo"),
]

FAULTS = standard_faults(STALL_SECONDS)


def expected_after(operation: str, world: World, before: dict[str, Any]) -> dict[str, Any]:
    """The new state each operation should produce, from the old one (generations left out)."""
    old = {key: without_generation(value) if key != "local" else value for key, value in before.items()}
    new = dict(old)
    labels = frozenset({"old", "new"})
    if operation == "write":
        new["source"] = (NEW, labels, "{}")
    elif operation == "append":
        new["source"] = (OLD + NEW, labels, "{}")
    elif operation == "update_metadata":
        new["source"] = (OLD, labels, "{}")
    elif operation == "upload":
        new["other"] = (NEW, frozenset({"new"}), "{}")
    elif operation == "copy":
        new["other"] = (OLD, frozenset({"old"}), "{}")
    elif operation == "download":
        new["local"] = (OLD, "null")
    return new


def assert_no_temporaries(*folders: Path) -> None:
    for folder in folders:
        leftovers = [path for path in folder.rglob("*") if is_temporary(path) or path.name.startswith(".record-")]
        assert leftovers == [], f"temporary files left behind: {leftovers}"


def assert_cache_consistent(path: GCSPath, known: dict[int, bytes]) -> None:
    """A cache record may only name a generation whose content the cached file really holds."""
    generation = cache.read_cached_generation(path)
    if generation is not None:
        assert generation in known, f"cache claims generation {generation}, which never existed"
        assert cache.cached_path(path).read_bytes() == known[generation]


def is_clear(error: BaseException) -> bool:
    """The library's own errors (and rejected inputs) name the object and what to do; anything else is a leak."""
    return isinstance(error, (OctueDagsterError, ValueError)) and len(str(error)) > 20


@pytest.mark.parametrize("fault_name", list(FAULTS))
@pytest.mark.parametrize("operation", OPERATIONS, ids=[operation.name for operation in OPERATIONS])
def test_operation_under_fault(operation, fault_name, proxy, faulty_client, client, bucket, tmp_path, cache_dir):
    world = World(client, bucket, tmp_path / "user", GCSPath(bucket, "source"), GCSPath(bucket, "other"),
                  tmp_path / "user" / "data.bin")
    world.folder.mkdir()
    operation.prepare(world)
    before = world.snapshot()
    expected_old = {key: without_generation(value) if key != "local" else value for key, value in before.items()}
    expected_new = expected_after(operation.name, world, before)

    fault = FAULTS[fault_name](operation.method, operation.path)
    if fault is not None:
        proxy.add(fault)
    error: BaseException | None = None
    try:
        operation.act(world, faulty_client)
    except Exception as raised:  # the outcome is judged below, whatever it is
        error = raised

    after = world.snapshot()
    comparable = {key: without_generation(value) if key != "local" else value for key, value in after.items()}
    fired = fault.fired if fault is not None else 0
    outcome = "succeeded" if error is None else f"raised {type(error).__name__}"
    _summary["cases"] += 1
    _summary["faults_injected"] += fired
    _summary["outcomes"].setdefault(operation.name, {})[fault_name] = {"outcome": outcome, "fired": fired}

    # Each store is in its old state or its new one, never a mix, and a success means the new state everywhere.
    for store in comparable:
        assert comparable[store] in (expected_old[store], expected_new[store]), f"{store} is mixed: {after[store]}"
    if error is None:
        assert comparable == expected_new
    else:
        assert is_clear(error), f"unclear error: {type(error).__module__}.{type(error).__name__}: {error}"
    if fault is not None and fault_name != "http-503-always":
        assert fired >= 1, "the fault never fired: the test did not test anything"

    assert_no_temporaries(world.folder, cache_dir)
    known = {}
    for key in ("source",):
        for state in (before[key], after[key]):
            if state is not None:
                known[state[3]] = state[0]
    assert_cache_consistent(world.source, known)
    if comparable != expected_new and comparable != expected_old:
        _summary["lost"] += 1
