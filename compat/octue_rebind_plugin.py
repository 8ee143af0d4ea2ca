"""A pytest plugin, loaded with `-p octue_rebind_plugin` by `run_octue_tests.py` inside the compat venv, that makes
Octue's own resource tests run against octue_dagster's classes on fake-gcs-server.

Before any test module is imported it binds the three names `Datafile`, `Dataset` and `Manifest` to ours, wherever
Octue's tests (and the modules they import from) look them up: `octue.resources` and its `datafile`, `dataset` and
`manifest` modules. Nothing else of Octue is changed. `OCTUE_COMPAT_REBIND=0` leaves Octue's classes in place (the
control run: Octue's SDK against the same emulator).

Octue's tests start an emulator of their own (gcp-storage-emulator) from `unittest.TestResult.startTestRun`, which
pytest never calls; the runner starts fake-gcs-server instead and passes it in `STORAGE_EMULATOR_HOST`. The emulator
needs no credentials, so `google.auth.default` returns anonymous ones (Octue's storage client calls it).
"""

from __future__ import annotations

import os
from unittest import mock

TEST_BUCKET_NAME = "octue-sdk-python-test-bucket"


def _anonymous_credentials():
    """Anonymous credentials that, like a developer's machine off Google Cloud, cannot be refreshed through a metadata
    server: Octue's signed-URL generation then takes the path its own CI takes (`Blob.generate_signed_url`, which
    Octue's tests mock)."""
    from google.auth import exceptions
    from google.auth.credentials import AnonymousCredentials

    class OffGoogleCloudCredentials(AnonymousCredentials):
        def refresh(self, request):
            raise exceptions.RefreshError("No metadata server: not running on Google Cloud.")

    return mock.patch("google.auth.default", lambda *args, **kwargs: (OffGoogleCloudCredentials(), "test-project"))


def _rebind() -> None:
    import octue.resources
    import octue.resources.datafile
    import octue.resources.dataset
    import octue.resources.manifest

    from octue_dagster import Datafile, Dataset, Manifest

    for module in (octue.resources, octue.resources.datafile, octue.resources.dataset, octue.resources.manifest):
        for name, ours in (("Datafile", Datafile), ("Dataset", Dataset), ("Manifest", Manifest)):
            if hasattr(module, name):
                setattr(module, name, ours)


def _create_test_bucket() -> None:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project="test-project", credentials=AnonymousCredentials())
    if client.lookup_bucket(TEST_BUCKET_NAME) is None:
        client.create_bucket(TEST_BUCKET_NAME)


def pytest_configure(config) -> None:
    if not os.environ.get("STORAGE_EMULATOR_HOST"):
        raise RuntimeError("STORAGE_EMULATOR_HOST is not set: run these tests through compat/run_octue_tests.py.")
    _anonymous_credentials().start()
    _create_test_bucket()
    if os.environ.get("OCTUE_COMPAT_REBIND", "1") != "0":
        _rebind()


def pytest_report_header(config) -> str:
    rebound = os.environ.get("OCTUE_COMPAT_REBIND", "1") != "0"
    return f"octue-compat: Datafile/Dataset/Manifest are {'octue_dagster' if rebound else 'Octue'}'s"
