"""Crashes: a process killed with SIGKILL in the middle of an upload, a download, a local write or a `.octue` update
leaves every store in its old state, and the next run recovers without help (stale temporaries swept, cache
record consistent, no lock left held).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from octue_dagster import Datafile
from octue_dagster.core.storage.store import Store
from octue_dagster.core.cache import copies as cache
from octue_dagster.core.local import hashing
from octue_dagster.core.local.atomic import is_temporary, sweep_stale_temporaries
from octue_dagster.core.storage.gcs_path import GCSPath
from octue_dagster.testing.emulator import EMULATOR_VARIABLE

from faultproxy import Fault, FaultProxy
from reliability_summary import save_summary

BIG = 64 * 1024 * 1024
_summary: dict[str, Any] = {"kills": 0, "recovered": 0, "lost": 0}


@pytest.fixture(scope="module", autouse=True)
def write_summary():
    yield
    save_summary("crashes", _summary)


def start(script: str, **env: str) -> subprocess.Popen:
    """Run `script` in a fresh interpreter with the test's environment plus `env`."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        text=True,
    )


def kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    _summary["kills"] += 1


def wait_for_line(process: subprocess.Popen, expected: str) -> None:
    line = process.stdout.readline().strip()
    assert line == expected, f"child said {line!r}"


def temporaries(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if is_temporary(path)]


def big_file(path: Path) -> Path:
    with open(path, "wb") as file:
        for block in range(BIG // (1024 * 1024)):
            file.write(bytes([block % 251]) * (1024 * 1024))
    return path


def test_kill_during_local_write_keeps_old_file_and_next_write_sweeps(tmp_path):
    target = tmp_path / "notes.txt"
    with Datafile(target, labels={"old"}).open("w") as file:
        file.write("old")
    before_octue = (tmp_path / ".octue").read_text()
    child = start(
        f"""
        import time
        from octue_dagster import Datafile
        with Datafile({str(target)!r}, labels={{"new"}}).open("w") as file:
            file.write("new, half written")
            file.flush()
            print("ready", flush=True)
            time.sleep(60)
        """
    )
    wait_for_line(child, "ready")
    kill(child)
    assert target.read_text() == "old"
    assert (tmp_path / ".octue").read_text() == before_octue
    assert len(temporaries(tmp_path)) == 1  # the crash's leftover, hidden, removed by the next writer
    with Datafile(target).open("w") as file:
        file.write("next run")
    assert temporaries(tmp_path) == []
    assert Datafile(target).labels == {"old"} and target.read_text() == "next run"
    _summary["recovered"] += 1


def test_kill_during_octue_update_keeps_old_octue_and_releases_lock(tmp_path):
    target = tmp_path / "data.txt"
    target.write_text("x")
    Datafile(target, labels={"old"}).update_metadata()
    before_octue = (tmp_path / ".octue").read_text()
    child = start(
        f"""
        import os, time
        from octue_dagster import Datafile
        replace = os.replace
        def slow_replace(source, destination):
            if str(destination).endswith(".octue"):  # the new .octue is written, not yet renamed: die here
                print("ready", flush=True)
                time.sleep(60)
            replace(source, destination)
        os.replace = slow_replace
        datafile = Datafile({str(target)!r})  # stored labels win over given ones (Octue's rule): set, then save
        datafile.labels = {{"new"}}
        datafile.update_metadata()
        """
    )
    wait_for_line(child, "ready")
    kill(child)
    assert (tmp_path / ".octue").read_text() == before_octue
    leftovers = temporaries(tmp_path)
    assert len(leftovers) == 1
    assert sweep_stale_temporaries(tmp_path) == leftovers
    started = time.monotonic()
    datafile = Datafile(target)
    datafile.labels.add("next")
    datafile.update_metadata()  # the dead process's lock is gone with it: no wait
    assert time.monotonic() - started < 5
    assert Datafile(target).labels == {"old", "next"}
    _summary["recovered"] += 1


def test_kill_mid_upload_of_64_mib_keeps_old_object_and_next_run_uploads(tmp_path, client, bucket, emulator):
    folder = tmp_path / "user"
    folder.mkdir()
    source = big_file(tmp_path / "source.bin")
    uri = f"gs://{bucket}/big.bin"
    with FaultProxy(emulator.url) as proxy:
        fault = proxy.add(Fault("hold_request", "PUT|POST", r"/upload/", after_bytes=8 * 1024 * 1024))
        child = start(
            f"""
            import shutil
            from octue_dagster import Datafile
            datafile = Datafile({uri!r}, local_path={str(folder / "big.bin")!r})
            with datafile.open("wb") as file:
                shutil.copyfileobj(open({str(source)!r}, "rb"), file)
            """,
            **{EMULATOR_VARIABLE: proxy.url},
        )
        assert fault.reached.wait(60), "the upload never started"
        kill(child)
    assert Store(client).get_object(GCSPath(bucket, "big.bin")) is None
    assert not (folder / "big.bin").exists()
    assert len(temporaries(folder)) == 1

    datafile = Datafile(uri, local_path=folder / "big.bin", storage_client=client)
    with datafile.open("wb") as file, open(source, "rb") as original:
        while block := original.read(8 * 1024 * 1024):
            file.write(block)
    assert temporaries(folder) == []
    info = Store(client).get_object(GCSPath(bucket, "big.bin"))
    assert info.size == BIG and info.crc32c == hashing.hash_file(source)
    _summary["recovered"] += 1


def test_kill_mid_download_keeps_no_partial_file_and_next_run_downloads(tmp_path, client, bucket, emulator):
    source = big_file(tmp_path / "source.bin")
    Datafile(source, storage_client=client).upload(f"gs://{bucket}/big.bin")
    uri = f"gs://{bucket}/big.bin"
    path = GCSPath(bucket, "big.bin")
    with FaultProxy(emulator.url) as proxy:
        fault = proxy.add(Fault("hold_response", "GET", r"alt=media", after_bytes=8 * 1024 * 1024))
        child = start(
            f"""
            from octue_dagster import Datafile
            Datafile({uri!r}).download()
            """,
            **{EMULATOR_VARIABLE: proxy.url},
        )
        assert fault.reached.wait(60), "the download never started"
        kill(child)
    folder = cache.object_cache_dir(path)
    assert cache.read_cached_generation(path) is None
    assert not cache.cached_path(path).exists()
    assert len(temporaries(folder)) == 1

    datafile = Datafile(uri, storage_client=client)
    local = Path(datafile.download())
    assert temporaries(folder) == []
    assert hashing.hash_file(local) == hashing.hash_file(source)
    assert cache.read_cached_generation(path) == datafile.generation
    _summary["recovered"] += 1
