"""Fail fast, clean up: an unreachable or silent endpoint fails within the configured retry deadline with
`StorageUnavailableError` naming it (transient failures still being retried), the deadline is a `StoreSettings` field
and an environment variable, and the emulator runner stops its fake-gcs-server on SIGTERM and SIGINT.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from octue_dagster.core.storage import store as storage
from octue_dagster.core.storage.gcs_path import GCSPath
from octue_dagster.core.storage.store import RETRY_DEADLINE_VARIABLE, Store, StoreSettings
from octue_dagster.exceptions import InvalidInputError, StorageUnavailableError
from octue_dagster.testing.emulator import EMULATOR_VARIABLE, REAL_GCS_VARIABLE

SHORT = StoreSettings(retry_deadline_seconds=1.0, initial_retry_delay_seconds=0.05, maximum_retry_delay_seconds=0.2,
                      connect_timeout_seconds=0.5, read_timeout_seconds=0.5)
#: An upper bound, not a speed target: the deadline plus one attempt's timeouts, with room for a loaded machine.
BOUND_SECONDS = SHORT.retry_deadline_seconds + SHORT.connect_timeout_seconds + SHORT.read_timeout_seconds + 8


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _store_at(url: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Store, list[str]]:
    """A store whose client talks to `url`, and the list of requests it sends."""
    monkeypatch.setenv(EMULATOR_VARIABLE, url)
    client = storage.make_client()
    sent: list[str] = []
    original = client._http.request

    def spy(*args, **kwargs):
        sent.append(kwargs.get("url") or args[1])
        return original(*args, **kwargs)

    monkeypatch.setattr(client._http, "request", spy)
    return Store(client, settings=SHORT), sent


def test_an_unreachable_endpoint_fails_within_the_deadline_naming_it(monkeypatch):
    url = f"http://127.0.0.1:{_closed_port()}"
    store, sent = _store_at(url, monkeypatch)
    started = time.monotonic()
    with pytest.raises(StorageUnavailableError) as raised:
        store.get_object(GCSPath("some-bucket", "readings.csv"))
    elapsed = time.monotonic() - started
    assert url in str(raised.value) and "1 s retry deadline" in str(raised.value)
    assert "gs://some-bucket/readings.csv" in str(raised.value)
    assert len(sent) >= 2, "a refused connection is transient: it must have been retried"
    assert elapsed < BOUND_SECONDS


def test_an_endpoint_that_never_answers_fails_within_the_deadline(monkeypatch):
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept_and_say_nothing():
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except (TimeoutError, OSError):
                continue

    thread = threading.Thread(target=accept_and_say_nothing, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        store, sent = _store_at(url, monkeypatch)
        started = time.monotonic()
        with pytest.raises(StorageUnavailableError) as raised:
            store.get_object(GCSPath("some-bucket", "readings.csv"))
        assert time.monotonic() - started < BOUND_SECONDS
        assert url in str(raised.value) and len(sent) >= 2
    finally:
        stop.set()
        thread.join(timeout=5)
        for connection in accepted:
            connection.close()
        listener.close()


def test_the_deadline_is_a_setting_and_an_environment_variable(monkeypatch):
    monkeypatch.delenv(RETRY_DEADLINE_VARIABLE, raising=False)
    assert StoreSettings().retry_deadline_seconds == 30.0  # the documented default, well under a minute
    assert StoreSettings().retry.timeout == 30.0  # what the client is given
    monkeypatch.setenv(RETRY_DEADLINE_VARIABLE, "7.5")
    assert StoreSettings().retry_deadline_seconds == 7.5
    assert StoreSettings(retry_deadline_seconds=3).retry_deadline_seconds == 3
    for bad in ("soon", "0", "-4", "inf", "nan"):
        monkeypatch.setenv(RETRY_DEADLINE_VARIABLE, bad)
        with pytest.raises(InvalidInputError, match=RETRY_DEADLINE_VARIABLE):
            StoreSettings()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/storage/v1/b", timeout=2):
            return True
    except (urllib.error.URLError, ConnectionError, OSError):
        return False


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_the_emulator_runner_stops_its_server_when_signalled(signum):
    env = {key: value for key, value in os.environ.items() if key not in (EMULATOR_VARIABLE, REAL_GCS_VARIABLE)}
    child_command = "import os, time; print(os.environ['STORAGE_EMULATOR_HOST'], flush=True); time.sleep(120)"
    runner = subprocess.Popen(
        [sys.executable, "-m", "octue_dagster.testing.emulator", "--", sys.executable, "-c", child_command],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True,
    )
    try:
        url = runner.stdout.readline().strip()  # printed by the command, once the emulator answers
        assert url.startswith("http://127.0.0.1:") and _answers(url)
        runner.send_signal(signum)
        assert runner.wait(timeout=60) != 0
        assert not _answers(url), "fake-gcs-server is still running after its runner was stopped"
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
