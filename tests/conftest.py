"""Shared fixtures: one fake-gcs-server for the session, a fresh bucket and cache directory per test, and a temporary
folder of its own (in pytest's basetemp) for each test, module and the session, checked at the end.

The suite leaves nothing in the system's temporary directory: at start, `TMPDIR` and `tempfile.tempdir` point at a
fresh folder in pytest's basetemp (`system-tmp`: the run's stand-in for the system's temporary directory, private
to this run, so that other processes on the machine cannot make the check flake); each module and each test gets its
own folder there instead (also named in `$OCTUE_TEST_SCRATCH`, see scratch.py). Whatever is left in `system-tmp` at
the end was written to "the temporary directory" outside any test or module (collection, session fixtures and the
processes they start) and would have stayed in the system's: the run then fails, naming it.
"""

from __future__ import annotations

import os
import signal
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from octue_dagster.core.storage.store import Store, StoreSettings, make_client
from octue_dagster.core.cache.copies import CACHE_DIR_VARIABLE
from octue_dagster.testing.emulator import EMULATOR_VARIABLE, Emulator
from scratch import SCRATCH_VARIABLE


#: Store settings for tests that inject faults: the library's retry rules with short pauses, and a short per-request
#: timeout, so that a stalled answer counts as a timeout within a second and a fault matrix runs in seconds.
QUICK_SETTINGS = StoreSettings(
    retry_deadline_seconds=2,
    initial_retry_delay_seconds=0.02,
    maximum_retry_delay_seconds=0.2,
    connect_timeout_seconds=0.5,
    read_timeout_seconds=0.5,
)


def _restore_interrupt_signals() -> None:
    """Give SIGINT and SIGTERM their usual handling when the suite was started with them ignored (as a background job
    is: SIGINT ignored), since Dagster maps SIGTERM to SIGINT's handler, and ignored signals are inherited by every
    process a test starts, which then cannot be stopped."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


_restore_interrupt_signals()


#: The run's stand-in for the system's temporary directory (see the module docstring), set at configure time.
_RUN_TEMP: Path | None = None
#: Where the reliability tests' counts go unless the variable is set (read by reliability_summary.py).
SUMMARY_VARIABLE = "OCTUE_RELIABILITY_SUMMARY_DIR"


def _point_temp_at(folder: Path) -> None:
    os.environ["TMPDIR"] = os.environ[SCRATCH_VARIABLE] = str(folder)
    tempfile.tempdir = str(folder)


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    global _RUN_TEMP
    factory = getattr(config, "_tmp_path_factory", None)
    if factory is None or hasattr(config, "workerinput"):
        return
    basetemp = factory.getbasetemp()  # computed from the system's temporary directory, before it is replaced
    _RUN_TEMP = basetemp / "system-tmp"
    _RUN_TEMP.mkdir(mode=0o700)
    os.environ.setdefault(SUMMARY_VARIABLE, str(basetemp))
    _point_temp_at(_RUN_TEMP)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _RUN_TEMP is None or not _RUN_TEMP.is_dir():
        return
    left = sorted(path.name for path in _RUN_TEMP.iterdir())
    if left:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = (
            f"The run left {len(left)} entries in the temporary directory outside any test ({_RUN_TEMP}, standing "
            f"in for the system's): {', '.join(left[:20])}. Write under tmp_path / tmp_path_factory instead."
        )
        if reporter is not None:
            reporter.write_line(message, red=True, bold=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="module", autouse=True)
def module_temp_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The temporary directory of a module's fixtures (and the processes they start): a folder in pytest's
    basetemp."""
    yield from _temp_folder_for(tmp_path_factory.mktemp("module-tmp"))


@pytest.fixture(autouse=True)
def test_temp_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The temporary directory of one test (and of the processes it starts): a folder in pytest's basetemp."""
    yield from _temp_folder_for(tmp_path_factory.mktemp("tmp"))


def _temp_folder_for(folder: Path) -> Iterator[Path]:
    previous = tempfile.tempdir, os.environ.get("TMPDIR"), os.environ.get(SCRATCH_VARIABLE)
    _point_temp_at(folder)
    try:
        yield folder
    finally:
        tempfile.tempdir = previous[0]
        for variable, value in (("TMPDIR", previous[1]), (SCRATCH_VARIABLE, previous[2])):
            if value is None:
                os.environ.pop(variable, None)
            else:
                os.environ[variable] = value


@pytest.fixture(autouse=True)
def interrupt_signals_restored() -> Iterator[None]:
    """After each test, undo any signal that a test (or Dagster inside it) left ignored."""
    yield
    _restore_interrupt_signals()


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """A fake-gcs-server on loopback, with STORAGE_EMULATOR_HOST pointing at it for the whole session."""
    log = tmp_path_factory.mktemp("emulator") / "fake-gcs-server.log"
    server = Emulator(log_path=log).start()
    previous = os.environ.get(EMULATOR_VARIABLE)
    os.environ[EMULATOR_VARIABLE] = server.url
    yield server
    server.stop()
    if previous is None:
        os.environ.pop(EMULATOR_VARIABLE, None)
    else:
        os.environ[EMULATOR_VARIABLE] = previous


@pytest.fixture(autouse=True)
def cache_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Each test gets its own download cache, so that no test sees another's cached copies."""
    path = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv(CACHE_DIR_VARIABLE, str(path))
    return path


@pytest.fixture(scope="module")
def proxy(emulator: Emulator):
    """A fault-injecting proxy in front of the emulator (see faultproxy.py), shared by one test module."""
    from faultproxy import FaultProxy

    with FaultProxy(emulator.url) as running:
        yield running


@pytest.fixture
def enforcing_proxy(emulator: Emulator, monkeypatch: pytest.MonkeyPatch):
    """The emulator behind a proxy that enforces metageneration preconditions as GCS does (fake-gcs-server ignores
    them), with STORAGE_EMULATOR_HOST pointing at the proxy for the test: clients made in the test go through it."""
    from octue_dagster.testing.latency_proxy import LatencyProxy

    with LatencyProxy(emulator.url, 0.0, enforce_preconditions=True) as running:
        monkeypatch.setenv(EMULATOR_VARIABLE, running.url)
        yield running


@pytest.fixture
def client(emulator: Emulator):
    """A storage client for the emulator."""
    return make_client()


@pytest.fixture
def bucket(client) -> str:
    """A new, empty bucket for one test."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    Store(client).ensure_bucket(name)
    return name


class RequestLog:
    """Records every HTTP request a storage client sends, and the bytes of content it receives."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []

    def clear(self) -> None:
        self.requests.clear()

    @property
    def count(self) -> int:
        return len(self.requests)

    def downloads(self) -> list[str]:
        """Requests that fetch object content (media downloads)."""
        return [url for method, url in self.requests if method == "GET" and "alt=media" in url]


@pytest.fixture
def request_log(client, monkeypatch: pytest.MonkeyPatch) -> RequestLog:
    """Spy on `client`'s HTTP session (requests still go to the emulator)."""
    log = RequestLog()
    session = client._http
    original = session.request

    def spy(method, url, *args, **kwargs):
        log.requests.append((method.upper(), url))
        return original(method, url, *args, **kwargs)

    monkeypatch.setattr(session, "request", spy)
    return log
