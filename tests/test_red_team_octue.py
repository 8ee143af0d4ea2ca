"""Red-team tests of the Octue drop-in surface: hostile serialised datasets and manifests, signed-URL datafiles served
by a lying server (a real HTTP server on 127.0.0.1), and signatures kept out of errors and warnings."""

from __future__ import annotations

import http.server
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from octue_dagster import Datafile, Dataset, Manifest
from octue_dagster.core.local.hashing import crc32c_base64
from octue_dagster.exceptions import (
    ChecksumMismatchError,
    DatafileExistsError,
    DatafileNotFoundError,
    InvalidInputError,
    InvalidMetadataError,
    ReadOnlyDatafileError,
    StorageUnavailableError,
    UnknownArgumentError,
)

SIGNATURE = "X-Goog-Signature=REDTEAMSECRET"
STORED_ID = "0b1e0b5e-6b7a-4b7e-9c9a-1b6b1c3c0c0c"


class _Lying(http.server.BaseHTTPRequestHandler):
    """Answers each path from `routes`: status, body, headers and an optional (false) Content-Length."""

    routes: dict[str, dict] = {}

    def _answer(self, with_body: bool) -> None:
        route = self.routes.get(self.path.split("?", 1)[0], {"status": 404, "body": b""})
        body = route["body"]
        self.send_response(route["status"])
        for key, value in route.get("headers", {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(route.get("length", len(body))))
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's name
        self._answer(False)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(True)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, dict[str, dict]]]:
    """A real HTTP server on 127.0.0.1 and the routes it serves (path -> answer)."""
    routes: dict[str, dict] = {}
    handler = type("Handler", (_Lying,), {"routes": routes})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", routes
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def _serve_file(routes: dict, path: str, content: bytes, **metadata: str) -> None:
    headers = {"x-goog-hash": f"crc32c={crc32c_base64(content)}"}
    headers.update({f"x-goog-meta-octue__{key}": value for key, value in metadata.items()})
    routes[path] = {"status": 200, "body": content, "headers": headers}


def _serve_signed_dataset(routes: dict, base: str, name: str, document: dict) -> str:
    path = f"/bucket/folder/.signed_metadata_files/{name}"
    routes[path] = {"status": 200, "body": json.dumps(document).encode()}
    return f"{base}{path}?{SIGNATURE}"


@pytest.mark.parametrize("hostile", ["../escaped", "/ABSOLUTE/escaped", "a/../../escaped", ".."])
def test_a_manifest_dataset_name_never_places_a_download_outside_the_temporary_folder(server, tmp_path, hostile):
    base, routes = server
    _serve_file(routes, "/bucket/folder/a.txt", b"payload")
    url = _serve_signed_dataset(routes, base, "m", {"files": [f"{base}/bucket/folder/a.txt?{SIGNATURE}"]})
    name = hostile.replace("/ABSOLUTE", str(tmp_path / "absolute"))
    manifest = Manifest.deserialise({"datasets": {name: url}})
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(InvalidInputError, match="paths=") as refused:
        manifest.download()
    assert repr(name) in str(refused.value) and "REDTEAMSECRET" not in str(refused.value)
    assert sorted(tmp_path.rglob("*")) == before and not (tmp_path / "absolute").exists()
    # Given a folder for it, the same dataset downloads there.
    assert manifest.download(paths={name: tmp_path / "chosen"}) == {name: str(tmp_path / "chosen")}
    assert (tmp_path / "chosen" / "a.txt").read_bytes() == b"payload"


def test_a_signed_url_datafile_keeps_its_signature_out_of_errors_and_its_text(server, tmp_path):
    base, routes = server
    _serve_file(routes, "/bucket/folder/a.txt", b"payload", id=json.dumps(STORED_ID))
    url = f"{base}/bucket/folder/a.txt?{SIGNATURE}"
    with pytest.raises(InvalidInputError, match="differs from its stored id") as swapped:
        Datafile(url, id="1b1e0b5e-6b7a-4b7e-9c9a-1b6b1c3c0c0c")
    datafile = Datafile(url)
    assert datafile.id == STORED_ID
    with pytest.raises(InvalidInputError, match="already open") as nested:
        with datafile as (_, file):
            assert file.read() == "payload"
            with datafile:
                pass
    for text in (str(swapped.value), str(nested.value), str(datafile), repr(datafile)):
        assert "REDTEAMSECRET" not in text and "a.txt" in text
    assert datafile.cloud_path == url  # the URL itself is still what the datafile reads (and serialises)


@pytest.mark.parametrize("entry", ["LOCAL", "file:///etc/passwd", "gs://some-private-bucket/secret.txt"])
def test_a_signed_dataset_document_cannot_name_local_files_or_other_storage(server, tmp_path, entry):
    base, routes = server
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    entry = str(secret) if entry == "LOCAL" else entry
    url = _serve_signed_dataset(routes, base, "hostile", {"files": [entry]})
    with pytest.raises(InvalidMetadataError, match="http") as refused:
        Dataset(url)
    assert "REDTEAMSECRET" not in str(refused.value)
    assert secret.read_text() == "private"


@pytest.mark.parametrize(
    "paths", [["/bucket/folder/a.txt", "/bucket/other/a.txt"], ["/bucket/folder/sub", "/bucket/folder/sub/x"]],
    ids=["same-name", "file-and-folder"],
)
def test_signed_dataset_files_that_collide_in_the_download_folder_are_refused_before_anything_is_written(
    server, tmp_path, paths
):
    base, routes = server
    for number, path in enumerate(paths):
        _serve_file(routes, path, f"content {number}".encode())
    url = _serve_signed_dataset(routes, base, "colliding", {"files": [f"{base}{path}?{SIGNATURE}" for path in paths]})
    dataset = Dataset(url)
    with pytest.raises(InvalidInputError, match="same place|both be downloaded") as refused:
        dataset.download(tmp_path / "target")
    assert "REDTEAMSECRET" not in str(refused.value)
    assert not (tmp_path / "target").exists()


def test_a_cloud_dataset_holding_an_object_and_a_folder_of_the_same_name_is_refused_on_download(
    client, bucket, tmp_path
):
    for name in ("ds/sub", "ds/sub/x", "ds/plain.txt"):
        client.bucket(bucket).blob(name).upload_from_string(name.encode())
    dataset = Dataset(f"gs://{bucket}/ds", storage_client=client)
    existing = tmp_path / "target" / "plain.txt"
    existing.parent.mkdir()
    existing.write_text("mine")
    with pytest.raises(InvalidInputError, match=r"same place.*\['sub'\]"):
        dataset.download(tmp_path / "target")
    assert existing.read_text() == "mine" and sorted(p.name for p in existing.parent.iterdir()) == ["plain.txt"]


def test_a_signed_url_answer_cut_short_is_a_library_error_and_leaves_nothing(server, tmp_path):
    base, routes = server
    _serve_file(routes, "/bucket/folder/short.bin", b"12345")
    routes["/bucket/folder/short.bin"]["length"] = 50  # says 50 bytes, sends 5 and closes
    datafile = Datafile(f"{base}/bucket/folder/short.bin?{SIGNATURE}")
    with pytest.raises(StorageUnavailableError, match="nothing was kept") as broken:
        datafile.download(tmp_path / "copy.bin")
    assert isinstance(broken.value, ConnectionError) and "REDTEAMSECRET" not in str(broken.value)
    assert list(tmp_path.iterdir()) == []


def test_a_file_name_too_long_for_the_download_folder_is_refused_before_anything_is_fetched(server, tmp_path):
    base, routes = server
    long_name = "L" * 300
    _serve_file(routes, f"/bucket/folder/{long_name}", b"payload")
    _serve_file(routes, "/bucket/folder/short.txt", b"short")
    files = [f"{base}/bucket/folder/{name}?{SIGNATURE}" for name in (long_name, "short.txt")]
    url = _serve_signed_dataset(routes, base, "long", {"files": files})
    with pytest.raises(InvalidInputError, match="over this file system's limit") as refused:
        Dataset(url).download(tmp_path / "target")
    assert "REDTEAMSECRET" not in str(refused.value)
    assert not (tmp_path / "target").exists()


def test_content_is_checked_against_the_crc32c_the_datafile_reports_not_the_one_sent_with_it(server, tmp_path):
    base, routes = server
    # The HEAD (where the id, tags and hash_value come from) describes "old"; then the GET sends "newer", with its
    # own hash (the object was replaced in between, or the server lies).
    _serve_file(routes, "/bucket/folder/m.txt", b"newer")
    head_hash = crc32c_base64(b"old")
    routes["/bucket/folder/m.txt"]["headers"]["x-goog-hash"] = f"crc32c={head_hash}"
    datafile = Datafile(f"{base}/bucket/folder/m.txt?{SIGNATURE}")
    assert datafile.hash_value == head_hash
    routes["/bucket/folder/m.txt"]["headers"]["x-goog-hash"] = f"crc32c={crc32c_base64(b'newer')}"
    with pytest.raises(ChecksumMismatchError, match=re.escape(head_hash)) as refused:
        datafile.download(tmp_path / "m.txt")
    assert "REDTEAMSECRET" not in str(refused.value)
    assert list(tmp_path.iterdir()) == []


def test_a_dataset_path_with_a_nul_character_is_a_library_error(tmp_path):
    hostile = str(tmp_path / "a\x00b")
    for make in (
        lambda: Dataset(hostile),
        lambda: Dataset.deserialise({"path": hostile}),
        lambda: Manifest.deserialise({"datasets": {"a": hostile}}),
    ):
        with pytest.raises(InvalidInputError, match="NUL"):
            make()


def test_update_dataset_paths_changes_nothing_unless_every_new_path_is_valid(server, tmp_path):
    base, routes = server
    first, second = tmp_path / "first", tmp_path / "second"
    for folder in (first, second):
        folder.mkdir()
        (folder / "f.txt").write_text("x")
    manifest = Manifest({"first": str(first), "second": str(second)})
    answers = iter([str(tmp_path / "moved"), "bad\x00path"])
    with pytest.raises(InvalidInputError, match="NUL"):
        manifest.update_dataset_paths(lambda dataset: next(answers))

    def failing(dataset):
        if dataset.name == "second":
            raise RuntimeError("the generator failed")
        return str(tmp_path / "moved")

    with pytest.raises(RuntimeError):
        manifest.update_dataset_paths(failing)
    assert [dataset.path for dataset in manifest.datasets.values()] == [str(first), str(second)]


def test_manifest_download_paths_naming_no_dataset_or_not_a_mapping_are_refused(server, tmp_path):
    base, routes = server
    _serve_file(routes, "/bucket/folder/a.txt", b"payload")
    url = _serve_signed_dataset(routes, base, "m", {"files": [f"{base}/bucket/folder/a.txt?{SIGNATURE}"]})
    manifest = Manifest.deserialise({"datasets": {"training": url}})
    with pytest.raises(InvalidInputError, match=r"'trainnig'.*\['training'\]"):
        manifest.download(paths={"trainnig": tmp_path / "t"}, download_all=False)
    with pytest.raises(InvalidInputError, match="mapping"):
        manifest.download(paths=[str(tmp_path / "t")])  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "document",
    [{"dataset": [1]}, {"dataset": {"files": 5}}, {"dataset": {"files": ["LOCAL"]}}, {"dataset": {"files": [7]}}],
    ids=["entry-not-object", "files-not-list", "files-local-path", "files-not-strings"],
)
def test_a_hostile_dataset_metadata_object_in_the_bucket_is_a_metadata_error_and_names_no_local_file(
    client, bucket, tmp_path, document
):
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    text = json.dumps(document).replace("LOCAL", str(secret))
    client.bucket(bucket).blob("ds/.octue").upload_from_string(text.encode())
    with pytest.raises(InvalidMetadataError, match=r"ds/\.octue"):
        Dataset(f"gs://{bucket}/ds", storage_client=client)
    assert client.bucket(bucket).blob("ds/.octue").download_as_bytes() == text.encode()  # left as it was


def test_a_misspelt_datafile_keyword_is_refused_not_silently_dropped(client, bucket, tmp_path):
    client.bucket(bucket).blob("x.txt").upload_from_string(b"original")
    with pytest.raises(UnknownArgumentError, match=r"'lables'.*labels") as misspelt:
        Datafile(f"gs://{bucket}/x.txt", storage_client=client, lables=["raw"])
    assert isinstance(misspelt.value, TypeError)
    datafile = Datafile(f"gs://{bucket}/x.txt", storage_client=client, encoding="utf-8", newline="")
    with pytest.raises(UnknownArgumentError, match="'bogus'"):
        datafile.open("w", bogus=1)
    with datafile as (_, file):  # open()'s own keywords are still passed on
        assert file.encoding == "utf-8" and file.read() == "original"
    assert client.bucket(bucket).blob("x.txt").download_as_bytes() == b"original"


def test_every_write_path_of_a_signed_url_datafile_is_refused_as_read_only(server, tmp_path):
    base, routes = server
    _serve_file(routes, "/bucket/folder/a.txt", b"payload")
    url = f"{base}/bucket/folder/a.txt?{SIGNATURE}"
    datafile = Datafile(url)
    attempts = {
        "cloud_path setter": lambda: setattr(datafile, "cloud_path", "gs://another-bucket/a.txt"),
        "upload": lambda: datafile.upload("gs://another-bucket/a.txt"),
        "update_metadata": datafile.update_metadata,
        "update_cloud_metadata": datafile.update_cloud_metadata,
        **{f"open({mode!r})": (lambda mode=mode: datafile.open(mode)) for mode in ("w", "w+b", "a", "r+", "x", "rw")},
        "with mode='w'": lambda: Datafile(url, mode="w").__enter__(),
    }
    for what, attempt in attempts.items():
        with pytest.raises(ReadOnlyDatafileError) as refused:
            attempt()
        assert isinstance(refused.value, PermissionError), what
        assert "REDTEAMSECRET" not in str(refused.value), what
    assert datafile.cloud_path == url


@pytest.mark.parametrize("with_cloud_path", [True, False])
def test_deserialising_a_datafile_never_overwrites_a_local_file_it_names(
    client, bucket, tmp_path, monkeypatch, with_cloud_path
):
    monkeypatch.chdir(tmp_path)
    client.bucket(bucket).blob("payload.txt").upload_from_string(b"attacker's content")
    mine = tmp_path / "important.txt"
    mine.write_text("mine")
    serialised = {"path": f"gs://{bucket}/payload.txt", "local_path": str(mine)}
    if with_cloud_path:
        serialised["cloud_path"] = f"gs://{bucket}/payload.txt"
    datafile = Datafile.deserialise(serialised)
    assert mine.read_text() == "mine"
    assert datafile.cloud_path == f"gs://{bucket}/payload.txt" and datafile.local_path != str(mine)
    with datafile.open() as file:
        assert file.read() == "attacker's content"


def test_deserialising_a_datafile_never_uploads_a_local_file_it_names(client, bucket, tmp_path):
    secret = tmp_path / "id_rsa"
    secret.write_text("private key")
    serialised = {"path": str(secret), "local_path": str(secret), "cloud_path": f"gs://{bucket}/exfiltrated"}
    with pytest.raises(InvalidInputError, match="cloud_path=") as refused:
        Datafile.deserialise(serialised)
    assert "id_rsa" in str(refused.value)
    assert client.bucket(bucket).get_blob("exfiltrated") is None
    # A local file that already is the object's copy is linked to it, with nothing sent.
    client.bucket(bucket).blob("exfiltrated").upload_from_string(b"private key")
    generation = client.bucket(bucket).get_blob("exfiltrated").generation
    datafile = Datafile.deserialise(serialised)
    assert datafile.cloud_path == f"gs://{bucket}/exfiltrated" and datafile.local_path == str(secret)
    assert client.bucket(bucket).get_blob("exfiltrated").generation == generation


def test_a_signed_dataset_cannot_send_us_to_another_host(server, tmp_path):
    base, routes = server
    other_routes: dict[str, dict] = {}
    handler = type("Other", (_Lying,), {"routes": other_routes})
    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    requested = []
    handler.do_HEAD = lambda self: (requested.append(self.path), _Lying.do_HEAD(self))  # type: ignore[method-assign]
    handler.do_GET = lambda self: (requested.append(self.path), _Lying.do_GET(self))  # type: ignore[method-assign]
    thread = threading.Thread(target=other.serve_forever, daemon=True)
    thread.start()
    try:
        _serve_file(other_routes, "/internal/admin", b"internal")
        foreign = f"http://127.0.0.1:{other.server_address[1]}/internal/admin"
        url = _serve_signed_dataset(routes, base, "ssrf", {"files": [foreign]})
        with pytest.raises(InvalidMetadataError, match="host"):
            Dataset(url)
        assert requested == []
    finally:
        other.shutdown()
        other.server_close()
        thread.join(timeout=10)


def test_downloading_onto_a_folder_or_under_a_file_is_a_library_error_before_any_transfer(
    server, client, bucket, tmp_path
):
    base, routes = server
    _serve_file(routes, "/bucket/folder/a.txt", b"payload")
    client.bucket(bucket).blob("x.txt").upload_from_string(b"original")
    folder, file = tmp_path / "folder", tmp_path / "file"
    folder.mkdir()
    file.write_text("mine")
    for make in (lambda: Datafile(f"{base}/bucket/folder/a.txt?{SIGNATURE}"), lambda: Datafile(f"gs://{bucket}/x.txt")):
        datafile = make()
        for target in (folder, file / "under.txt"):
            with pytest.raises(DatafileExistsError, match="a folder|a file") as refused:
                datafile.download(target)
            assert isinstance(refused.value, FileExistsError) and "REDTEAMSECRET" not in str(refused.value)
        assert Path(datafile.download(tmp_path / "right.txt")).read_bytes() in (b"payload", b"original")
    assert list(folder.iterdir()) == [] and file.read_text() == "mine"


def test_a_signed_dataset_file_name_with_a_nul_character_is_refused_on_download(server, tmp_path):
    base, routes = server
    _serve_file(routes, "/bucket/folder/a%00b.txt", b"payload")
    url = _serve_signed_dataset(routes, base, "nul", {"files": [f"{base}/bucket/folder/a%00b.txt?{SIGNATURE}"]})
    with pytest.raises(InvalidInputError, match="NUL"):
        Dataset(url).download(tmp_path / "target")
    assert not (tmp_path / "target").exists()


def test_a_signed_url_redirecting_to_another_host_is_not_followed(server, tmp_path):
    base, routes = server
    requested = []
    handler = type("Other", (_Lying,), {"routes": {}})
    handler.do_HEAD = lambda self: (requested.append(self.path), _Lying.do_HEAD(self))  # type: ignore[method-assign]
    handler.do_GET = lambda self: (requested.append(self.path), _Lying.do_GET(self))  # type: ignore[method-assign]
    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=other.serve_forever, daemon=True)
    thread.start()
    try:
        elsewhere = f"http://127.0.0.1:{other.server_address[1]}/internal/admin"
        routes["/bucket/folder/a.txt"] = {"status": 302, "body": b"", "headers": {"Location": elsewhere}}
        routes["/bucket/folder/.signed_metadata_files/moved"] = routes["/bucket/folder/a.txt"]
        routes["/bucket/folder/b.txt"] = {"status": 302, "body": b"", "headers": {"Location": "/bucket/folder/c.txt"}}
        _serve_file(routes, "/bucket/folder/c.txt", b"same host")
        datafile = Datafile(f"{base}/bucket/folder/a.txt?{SIGNATURE}")
        with pytest.raises(DatafileNotFoundError, match="redirect") as refused:
            datafile.download(tmp_path / "a.txt")
        assert "REDTEAMSECRET" not in str(refused.value)
        assert len(Dataset(f"{base}/bucket/folder/.signed_metadata_files/moved?{SIGNATURE}").files) == 0
        assert requested == [] and list(tmp_path.iterdir()) == []
        # A redirect on the same host is followed (and the content checked).
        same = Datafile(f"{base}/bucket/folder/b.txt?{SIGNATURE}")
        assert Path(same.download(tmp_path / "b.txt")).read_bytes() == b"same host"
    finally:
        other.shutdown()
        other.server_close()
        thread.join(timeout=10)


@pytest.mark.parametrize("second", ["same", "nested"])
def test_manifest_download_refuses_two_datasets_sharing_a_folder(server, tmp_path, second):
    base, routes = server
    _serve_file(routes, "/bucket/one/data.csv", b"one")
    _serve_file(routes, "/bucket/two/data.csv", b"two")
    documents = {}
    for name in ("one", "two"):
        path = f"/bucket/{name}/.signed_metadata_files/d"
        routes[path] = {"status": 200, "body": json.dumps({"files": [f"{base}/bucket/{name}/data.csv"]}).encode()}
        documents[name] = f"{base}{path}?{SIGNATURE}"
    manifest = Manifest.deserialise({"datasets": documents})
    folder = tmp_path / "out"
    paths = {"one": folder, "two": folder if second == "same" else folder / "inner"}
    with pytest.raises(InvalidInputError, match="same folder|inside"):
        manifest.download(paths=paths)
    assert not folder.exists()


def test_a_garbled_last_modified_header_does_not_break_reading_a_signed_url(server, tmp_path):
    base, routes = server
    _serve_file(routes, "/bucket/folder/a.txt", b"payload")
    routes["/bucket/folder/a.txt"]["headers"]["Last-Modified"] = "Mon, 99 Foo 2020 25:61:61 GMT"
    datafile = Datafile(f"{base}/bucket/folder/a.txt?{SIGNATURE}")
    assert datafile.last_modified is None
    assert Path(datafile.download(tmp_path / "a.txt")).read_bytes() == b"payload"


def test_deserialising_a_url_datafile_never_overwrites_a_local_file_it_names(server, tmp_path):
    base, routes = server
    _serve_file(routes, "/bucket/folder/payload.txt", b"attacker's content")
    mine = tmp_path / "important.txt"
    mine.write_text("mine")
    datafile = Datafile.deserialise({"path": f"{base}/bucket/folder/payload.txt?{SIGNATURE}", "local_path": str(mine)})
    assert mine.read_text() == "mine" and datafile.local_path != str(mine)
    with datafile.open() as file:
        assert file.read() == "attacker's content"
