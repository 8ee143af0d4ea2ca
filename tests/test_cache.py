"""The download cache: every byte served is verified, a cached copy is reused only while it provably holds the
object's content, every change to a copy happens under one per-object lock, and the cache is bounded (LRU eviction
that never removes a copy in use, in this process or another) and can be cleared.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import filelock
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from octue_dagster import ChecksumMismatchError, ConflictError, Datafile
from octue_dagster.core.cache import copies as cache
from octue_dagster.core.local import hashing
from octue_dagster.core.storage import store as storage
from octue_dagster.core.storage.gcs_path import GCSPath
from octue_dagster.core.metadata.values import crc32c_base64
from octue_dagster.exceptions import InvalidInputError
from octue_dagster.testing.emulator import EMULATOR_VARIABLE

from faultproxy import Fault


def _put(client, bucket: str, name: str, content: bytes) -> str:
    """An object written straight through the client (nothing cached), and its URI."""
    client.bucket(bucket).blob(name).upload_from_string(content)
    return f"gs://{bucket}/{name}"


def _folder_files(path: GCSPath) -> list[str]:
    folder = cache.object_cache_dir(path)
    return sorted(os.listdir(folder)) if folder.exists() else []


def _proxied_client(proxy, emulator, monkeypatch):
    proxy.clear()
    monkeypatch.setenv(EMULATOR_VARIABLE, proxy.url)
    client = storage.make_client()
    monkeypatch.setenv(EMULATOR_VARIABLE, emulator.url)
    return client


def _run_child(script: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)], env=dict(os.environ), stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True,
    )


# --- every byte served is verified -------------------------------------------------------------------------------


@pytest.mark.parametrize("strip_hash", [True, False], ids=["no-x-goog-hash", "with-x-goog-hash"])
def test_a_flipped_byte_is_never_cached_or_served(client, bucket, proxy, emulator, monkeypatch, strip_hash):
    content = os.urandom(300_000)
    uri = _put(client, bucket, "flip/data.bin", content)
    faulty = _proxied_client(proxy, emulator, monkeypatch)
    fault = proxy.add(Fault("corrupt_response", "GET", r"alt=media", after_bytes=123_456,
                            strip_headers=("X-Goog-Hash",) if strip_hash else ()))
    datafile = Datafile(uri, storage_client=faulty)
    with pytest.raises(ChecksumMismatchError) as raised:
        with datafile.open("rb"):
            pass
    assert fault.fired == 1
    assert uri in str(raised.value) and str(datafile.generation) in str(raised.value)
    path = datafile.gcs_path
    assert cache.read_record(path) is None and not cache.cached_path(path).exists()
    assert _folder_files(path) == [], "nothing of the bad download may stay in the cache"

    with datafile.open("rb") as file:  # the fault has passed: the next read is exact
        assert file.read() == content
    assert datafile.hash_value == crc32c_base64(content)


def test_a_flipped_byte_is_refused_at_a_chosen_local_path_too(client, bucket, proxy, emulator, monkeypatch, tmp_path):
    uri = _put(client, bucket, "flip/chosen.bin", b"x" * 50_000)
    faulty = _proxied_client(proxy, emulator, monkeypatch)
    proxy.add(Fault("corrupt_response", "GET", r"alt=media", after_bytes=10, strip_headers=("X-Goog-Hash",)))
    target = tmp_path / "chosen.bin"
    with pytest.raises(ChecksumMismatchError, match="flip/chosen.bin"):
        Datafile(uri, local_path=target, storage_client=faulty).download()
    assert not target.exists() and os.listdir(tmp_path) == []


def test_an_object_replaced_before_its_download_is_a_conflict_and_nothing_is_cached(client, bucket):
    """Whether the server refuses the old generation (GCS: 412) or serves the new bytes anyway (fake-gcs-server),
    the reader gets `ConflictError`, and neither generation's bytes are cached under the old one."""
    uri = _put(client, bucket, "replaced/data.bin", b"1" * 5000)
    reader = Datafile(uri, storage_client=client)
    _put(client, bucket, "replaced/data.bin", b"2" * 5000)
    with pytest.raises(ConflictError, match="replaced/data.bin"):
        reader.download()
    assert cache.read_record(reader.gcs_path) is None and _folder_files(reader.gcs_path) == []


def test_hashing_writer_hashes_exactly_what_it_writes(tmp_path):
    with open(tmp_path / "out", "wb") as file:
        writer = hashing.HashingWriter(file)
        writer.write(b"discarded")
        writer.seek(0)  # a transcoded download restarts from the beginning
        for part in (b"abc", bytearray(b"def"), memoryview(b"ghi")):
            writer.write(part)
    assert (tmp_path / "out").read_bytes() == b"abcdefghi"
    assert writer.crc32c == crc32c_base64(b"abcdefghi") and writer.bytes_written == 9


# --- a cached copy is reused only while it provably holds the content ---------------------------------------------


def test_same_size_in_place_edit_of_the_cached_copy_is_neither_served_nor_uploaded(client, bucket, request_log):
    content = b"turbine,power\nT1,100\n"
    uri = _put(client, bucket, "edit/readings.csv", content)
    first = Datafile(uri, storage_client=client)
    local = first.local_path
    generation = first.generation
    with open(local, "r+b") as file:  # any tool editing the copy in place, same size
        file.write(b"X")
    request_log.clear()

    fresh = Datafile(uri, storage_client=client)
    with fresh.open("rb") as file:
        assert file.read() == content
    assert len(request_log.downloads()) == 1, "the edited copy must be replaced by a fresh download"
    assert fresh.hash_value == crc32c_base64(content)

    with open(fresh.local_path, "r+b") as file:
        file.write(b"Y")
    fresh.labels.add("reviewed")
    fresh.upload()
    blob = client.bucket(bucket).get_blob("edit/readings.csv")
    assert blob.generation == generation, "a metadata change must not upload the edited cached bytes"
    assert blob.download_as_bytes() == content
    assert Datafile(uri, storage_client=client).labels == {"reviewed"}


def _ctime_is_fine_grained(folder) -> bool:
    """Whether two changes in a row get different ctimes (kernels before Linux 6.13 keep one value per clock tick)."""
    probe = folder / "ctime-probe"
    probe.write_bytes(b"")
    first = os.stat(probe).st_ctime_ns
    os.utime(probe, ns=(0, 0))
    return os.stat(probe).st_ctime_ns != first


def test_edit_that_restores_the_mtime_is_still_caught(client, bucket, tmp_path):
    if not _ctime_is_fine_grained(tmp_path):
        pytest.skip("coarse ctimes: an edit in the same clock tick as the recording is indistinguishable by identity")
    content = b"0123456789" * 100
    uri = _put(client, bucket, "edit/mtime.bin", content)
    local = Datafile(uri, storage_client=client).local_path
    before = os.stat(local)
    with open(local, "r+b") as file:
        file.write(b"9")
    os.utime(local, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(local).st_size == before.st_size and os.stat(local).st_mtime_ns == before.st_mtime_ns
    with Datafile(uri, storage_client=client).open("rb") as file:
        assert file.read() == content


def test_a_touched_but_unchanged_copy_is_rehashed_and_reused(client, bucket, request_log):
    uri = _put(client, bucket, "edit/touched.txt", b"unchanged")
    local = Datafile(uri, storage_client=client).local_path
    os.utime(local)  # identity changes, content does not
    request_log.clear()
    with Datafile(uri, storage_client=client).open() as file:
        assert file.read() == "unchanged"
    assert request_log.downloads() == []
    record = cache.read_record(GCSPath(bucket, "edit/touched.txt"))
    assert record is not None and record.mtime_ns == os.stat(local).st_mtime_ns, "the copy is recorded afresh"


def test_a_copy_replaced_by_another_file_is_downloaded_again(client, bucket, tmp_path):
    uri = _put(client, bucket, "edit/replaced.txt", b"original")
    local = Datafile(uri, storage_client=client).local_path
    stat = os.stat(local)
    impostor = tmp_path / "impostor"
    impostor.write_bytes(b"IMPOSTOR")
    os.utime(impostor, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.replace(impostor, local)
    with Datafile(uri, storage_client=client).open("rb") as file:
        assert file.read() == b"original"


def test_record_names_the_verified_content_and_the_files_identity(client, bucket):
    uri = _put(client, bucket, "record/data.txt", b"recorded")
    datafile = Datafile(uri, storage_client=client)
    stat = os.stat(datafile.local_path)
    record = cache.read_record(datafile.gcs_path)
    assert (record.generation, record.crc32c, record.size) == (datafile.generation, crc32c_base64(b"recorded"), 8)
    assert (record.device, record.inode, record.mtime_ns, record.ctime_ns) == (
        stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns)
    assert stat.st_mtime_ns <= datafile.object_info.updated.timestamp() * 1e9 + 1000, "mtime: at most the object's update time"


# --- one lock for every change to a copy --------------------------------------------------------------------------


def test_writer_committing_generation_2_waits_for_a_reader_downloading_generation_1(client, bucket, monkeypatch):
    """The bad order from the issue, forced: the reader has generation 1's bytes in hand (not yet in place) when a
    writer commits generation 2. The writer must wait for the object's lock, so the cache ends with generation 2's
    bytes under generation 2's record, and a fresh process reads generation 2."""
    uri = _put(client, bucket, "race/data.txt", b"generation-1")
    reader, writer = Datafile(uri, storage_client=client), Datafile(uri, storage_client=client)
    path = reader.gcs_path
    reader_has_bytes, writer_wants_lock = threading.Event(), threading.Event()
    writer_thread: list[threading.Thread] = []

    original_install = cache.install

    def install_after_the_writer(*args, **kwargs):
        if threading.current_thread() is not writer_thread[0]:
            reader_has_bytes.set()
            assert writer_wants_lock.wait(60), "the writer never asked for the object's lock"
        return original_install(*args, **kwargs)

    original_lock = cache.object_lock

    def watched_lock(*args, **kwargs):
        if writer_thread and threading.current_thread() is writer_thread[0]:
            writer_wants_lock.set()
        return original_lock(*args, **kwargs)

    monkeypatch.setattr(cache, "install", install_after_the_writer)
    monkeypatch.setattr(cache, "object_lock", watched_lock)

    def write() -> None:
        assert reader_has_bytes.wait(60)
        with writer.open("w") as file:
            file.write("generation-2")

    writer_thread.append(threading.Thread(target=write))
    writer_thread[0].start()
    reader.download()
    writer_thread[0].join(60)
    assert not writer_thread[0].is_alive()

    current = client.bucket(bucket).get_blob("race/data.txt")
    assert writer.generation == current.generation != reader.generation
    record = cache.read_record(path)
    assert record.generation == current.generation and record.crc32c == current.crc32c
    assert cache.cached_path(path).read_bytes() == b"generation-2"
    child = _run_child(f"""
        from octue_dagster import Datafile
        datafile = Datafile({uri!r})
        with datafile.open() as file:
            print(datafile.generation, file.read())
        """)
    output, _ = child.communicate(timeout=120)
    assert output.split() == [str(current.generation), "generation-2"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(min_size=1, max_size=200), st.text(min_size=1, max_size=200), st.sampled_from(["b-one", "b-two"]))
def test_distinct_objects_never_share_a_folder_or_a_lock(first, second, other_bucket):
    assume(first != second)
    a, b, c = GCSPath("b-one", first), GCSPath("b-one", second), GCSPath(other_bucket, first)
    folders = {cache.object_cache_dir(path) for path in (a, b)}
    locks = {cache.object_lock(path).lock_file for path in (a, b)}
    assert len(folders) == 2 and len(locks) == 2
    assert (cache.object_cache_dir(c) == cache.object_cache_dir(a)) == (other_bucket == "b-one")
    assert cache.object_lock(a).lock_file == cache.object_lock(GCSPath("b-one", first)).lock_file


def test_a_cached_copy_is_opened_under_the_objects_lock(client, bucket, monkeypatch):
    """Between verifying a copy and opening it, a writer could install the next generation at the same path; so the
    reader opens it before letting go of the object's lock (a stress run once caught a reader served generation
    k+1's bytes as generation k when the open came after)."""
    from octue_dagster.core.datafile import opener

    uri = _put(client, bucket, "locked/data.txt", b"read under the lock")
    datafile = Datafile(uri, storage_client=client)
    copy = cache.cached_path(datafile.gcs_path)
    opened_under_lock: list[bool] = []

    def spying_open(file, mode="r", *args, **kwargs):
        if os.fspath(file) == os.fspath(copy):
            try:
                with cache.object_lock(datafile.gcs_path, timeout=0):
                    opened_under_lock.append(False)
            except filelock.Timeout:
                opened_under_lock.append(True)
        return open(file, mode, *args, **kwargs)

    monkeypatch.setattr(opener, "open", spying_open, raising=False)
    for _ in range(2):  # once downloading, once reusing the copy
        with datafile.open("rb") as file:
            assert file.read() == b"read under the lock"
    assert opened_under_lock == [True, True]


# --- a bounded cache ----------------------------------------------------------------------------------------------


def test_size_limit_setting_and_variable(monkeypatch):
    monkeypatch.delenv(cache.MAX_BYTES_VARIABLE, raising=False)
    assert cache.max_bytes() == cache.DEFAULT_MAX_BYTES == 10 * 2**30
    for text, expected in [("1048576", 2**20), ("500MB", 500 * 10**6), ("2 GiB", 2 * 2**30), ("unlimited", None)]:
        monkeypatch.setenv(cache.MAX_BYTES_VARIABLE, text)
        assert cache.max_bytes() == expected
    monkeypatch.setenv(cache.MAX_BYTES_VARIABLE, "lots")
    with pytest.raises(InvalidInputError, match=cache.MAX_BYTES_VARIABLE):
        cache.max_bytes()
    try:
        cache.configure(max_bytes="1KiB")
        assert cache.max_bytes() == 1024, "the setting overrides the environment"
        with pytest.raises(InvalidInputError, match="max_bytes"):
            cache.configure(max_bytes=-1)
    finally:
        cache.configure()


def test_least_recently_used_copies_are_evicted_to_fit_the_limit(client, bucket, monkeypatch):
    uris = [_put(client, bucket, f"lru/{index}.bin", bytes([index]) * 1000) for index in range(4)]
    monkeypatch.setenv(cache.MAX_BYTES_VARIABLE, "2800")
    for uri in uris[:2]:
        Datafile(uri, storage_client=client).download()
    Datafile(uris[0], storage_client=client).local_path  # 0 is now more recently used than 1
    Datafile(uris[2], storage_client=client).download()  # 3 copies > 2800 bytes: the least recently used (1) goes
    present = [cache.read_record(GCSPath(bucket, f"lru/{index}.bin")) is not None for index in range(4)]
    assert present == [True, False, True, False]
    assert cache.usage_bytes() <= 2800 * cache.LOW_WATER_FRACTION
    assert cache._read_usage() == cache.usage_bytes(), "the shared estimate counts exactly what a scan finds"
    assert not cache.cached_path(GCSPath(bucket, "lru/1.bin")).exists()
    with Datafile(uris[1], storage_client=client).open("rb") as file:  # an evicted copy is simply downloaded again
        assert file.read() == bytes([1]) * 1000


def test_a_copy_open_in_another_process_is_never_evicted_nor_cleared(client, bucket, monkeypatch):
    held_uri = _put(client, bucket, "held/data.bin", b"h" * 5000)
    child = _run_child(f"""
        import sys
        from octue_dagster import Datafile
        with Datafile({held_uri!r}).open("rb") as file:
            print("open", flush=True)
            sys.stdin.readline()
            print(len(file.read()), flush=True)
        """)
    try:
        assert child.stdout.readline().strip() == "open"
        held = GCSPath(bucket, "held/data.bin")
        monkeypatch.setenv(cache.MAX_BYTES_VARIABLE, "1000")
        other = _put(client, bucket, "held/other.bin", b"o" * 800)
        Datafile(other, storage_client=client).download()
        assert cache.read_record(held) is not None, "eviction removed a copy another process has open"

        report = cache.clear()
        assert report.kept_in_use == 1 and cache.read_record(held) is not None
        assert cache.read_record(GCSPath(bucket, "held/other.bin")) is None
        output, _ = child.communicate("done\n", timeout=60)
        assert output.split() == ["5000"]
    finally:
        if child.poll() is None:
            child.kill()
    assert cache.clear().removed == 1 and cache.usage_bytes() == 0, "once closed, the copy can go"


def test_a_copy_open_in_this_process_is_kept(client, bucket):
    uri = _put(client, bucket, "held/here.txt", b"here")
    datafile = Datafile(uri, storage_client=client)
    with datafile.open() as file:
        assert cache.clear().kept_in_use == 1
        assert file.read() == "here"
    assert cache.clear().removed == 1 and not cache.cached_path(datafile.gcs_path).exists()


def test_clear_from_the_command_line(client, bucket, cache_dir):
    uri = _put(client, bucket, "cli/data.txt", b"to be cleared")
    Datafile(uri, storage_client=client).download()
    result = subprocess.run([sys.executable, "-m", "octue_dagster.core.cache", "clear"], capture_output=True,
                            text=True, env=dict(os.environ), timeout=120)
    assert result.returncode == 0, result.stderr
    assert "removed 1 copies" in result.stdout
    assert cache.usage_bytes() == 0 and not cache.cached_path(GCSPath(bucket, "cli/data.txt")).exists()


def test_a_garbled_size_estimate_is_rebuilt_from_the_files(client, bucket, monkeypatch):
    uri = _put(client, bucket, "usage/a.bin", b"a" * 3000)
    Datafile(uri, storage_client=client).download()
    (cache.cache_root() / "usage.json").write_text("{garbled")
    monkeypatch.setenv(cache.MAX_BYTES_VARIABLE, "1000")
    Datafile(_put(client, bucket, "usage/b.bin", b"b" * 500), storage_client=client).download()
    assert cache.read_record(GCSPath(bucket, "usage/a.bin")) is None
    assert cache.read_record(GCSPath(bucket, "usage/b.bin")) is not None


# --- all of it at once, across processes ------------------------------------------------------------------------

_STRESS_SIZE = 20_000


def _run_role(name: str, uri: str, rounds: int, barrier, results) -> None:
    """Run a stress role, sending its result, or the error that stopped it, to the test (which then fails fast)."""
    try:
        results.put(globals()[name](uri, rounds, barrier))
    except BaseException as error:
        results.put(("error", f"{name}: {type(error).__name__}: {error}", 0))
        raise


def _stress_reader(uri: str, rounds: int, barrier):
    from octue_dagster import ConflictError, Datafile
    from octue_dagster.core.local.hashing import crc32c_base64

    seen, conflicts = [], 0
    barrier.wait()
    for _ in range(rounds):
        datafile = Datafile(uri)
        try:
            with datafile.open("rb") as file:
                data = file.read()
        except ConflictError:  # replaced between instantiation and download: nothing served
            conflicts += 1
            continue
        consistent = data == bytes(data[:1]) * _STRESS_SIZE and crc32c_base64(data) == datafile.hash_value
        seen.append((datafile.generation, data[0], consistent))
    return ("reader", seen, conflicts)


def _stress_writer(uri: str, rounds: int, barrier):
    from octue_dagster import Datafile

    written = []
    barrier.wait()
    for value in range(1, rounds + 1):
        datafile = Datafile(uri)
        with datafile.open("wb") as file:
            file.write(bytes([value]) * _STRESS_SIZE)
        written.append((datafile.generation, value))
    return ("writer", written, 0)


def _stress_evictor(uri: str, rounds: int, barrier):
    from octue_dagster.core.cache import copies as cache

    barrier.wait()
    return ("evictor", sum(cache.clear().removed for _ in range(rounds)), 0)


def test_readers_writer_and_evictor_in_separate_processes_never_mix_generations(client, bucket):
    """Three processes read one object in a loop while another commits new generations of the same size through
    the cache and another clears the cache: every read is one generation's exact bytes, labelled as that generation."""
    import multiprocessing

    uri = _put(client, bucket, "stress/data.bin", bytes([0]) * _STRESS_SIZE)
    initial = client.bucket(bucket).get_blob("stress/data.bin").generation
    context = multiprocessing.get_context("spawn")
    roles = [(_stress_reader, 20)] * 3 + [(_stress_writer, 10), (_stress_evictor, 60)]
    barrier, results = context.Barrier(len(roles)), context.Queue()
    processes = [
        context.Process(target=_run_role, args=(role.__name__, uri, rounds, barrier, results)) for role, rounds in roles
    ]
    for process in processes:
        process.start()
    collected = [results.get(timeout=300) for _ in processes]
    assert not [message for kind, message, _ in collected if kind == "error"]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    content_of = {initial: 0} | dict(next(found for kind, found, _ in collected if kind == "writer"))
    reads = [read for kind, found, _ in collected if kind == "reader" for read in found]
    assert reads, "no reader managed a read"
    for generation, first_byte, consistent in reads:
        assert consistent, f"a read of generation {generation} was not one generation's bytes"
        assert content_of[generation] == first_byte, f"generation {generation} was served another's bytes"
    final = Datafile(uri, storage_client=client)
    with final.open("rb") as file:
        assert file.read() == bytes([content_of[final.generation]]) * _STRESS_SIZE
