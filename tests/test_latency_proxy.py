"""The benchmark's latency proxy: it relays every byte, counts requests, and (optionally) enforces the preconditions
fake-gcs-server ignores, as GCS does."""

from __future__ import annotations

import os

import pytest
from google.api_core import exceptions
from google.cloud import storage

from octue_dagster.testing.emulator import EMULATOR_VARIABLE
from octue_dagster.testing.latency_proxy import LatencyProxy, emulator_with_latency


@pytest.mark.parametrize("separate_process", [False, True], ids=["in-process", "own-process"])
def test_large_transfers_pass_through_intact_and_every_request_is_counted(tmp_path, separate_process):
    content = os.urandom(20 * 1024 * 1024 + 7)
    with emulator_with_latency(0.001, tmp_path / "emulator.log", separate_process=separate_process) as (_, proxy):
        proxy_url = proxy.url
        assert os.environ[EMULATOR_VARIABLE] == proxy_url
        client = storage.Client()
        client.create_bucket("proxy-test")
        blob = client.bucket("proxy-test").blob("big.bin", chunk_size=8 * 1024 * 1024)
        blob.upload_from_string(content)  # resumable: the session URL names the proxy, so every chunk goes through it
        assert client.bucket("proxy-test").blob("big.bin").download_as_bytes() == content
        assert proxy.by_method["PUT"] == 3 and proxy.by_method["GET"] >= 1
        assert proxy.requests == sum(proxy.by_method.values())
    assert os.environ.get(EMULATOR_VARIABLE) != proxy_url  # restored afterwards


def test_enforced_preconditions_refuse_stale_patches_and_deletes(emulator, monkeypatch):
    with LatencyProxy(emulator.url, 0.0, enforce_preconditions=True) as proxy:
        monkeypatch.setenv(EMULATOR_VARIABLE, proxy.url)
        client = storage.Client()
        client.create_bucket("precondition-test")
        blob = client.bucket("precondition-test").blob("a b/c.txt")
        blob.upload_from_string(b"one")
        first_generation = blob.generation
        assert blob.metageneration == 1
        blob.metadata = {"k": "1"}
        blob.patch(if_metageneration_match=1)
        assert blob.metageneration == 2
        blob.metadata = {"k": "2"}
        with pytest.raises(exceptions.PreconditionFailed):
            blob.patch(if_metageneration_match=1)
        listed = list(client.list_blobs("precondition-test"))
        assert [(item.metageneration, item.metadata) for item in listed] == [(2, {"k": "1"})]

        blob.upload_from_string(b"two")  # a new generation starts again at metageneration 1
        assert client.bucket("precondition-test").get_blob("a b/c.txt").metageneration == 1
        with pytest.raises(exceptions.PreconditionFailed):
            client.bucket("precondition-test").blob("a b/c.txt").delete(if_generation_match=first_generation)
        client.bucket("precondition-test").blob("a b/c.txt").delete(if_generation_match=blob.generation)
        assert list(client.list_blobs("precondition-test")) == []
