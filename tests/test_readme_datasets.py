"""The README's Datasets example runs as written against the emulator (its bucket swapped in, a key for signing)."""

from __future__ import annotations

import datetime
import json
import re
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from octue_dagster import Datafile, Dataset, Manifest

README = Path(__file__).parent.parent / "README.md"


def _datasets_block() -> str:
    section = README.read_text().split("## Datasets and manifests", 1)[1]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


def test_readme_datasets_example_runs(client, bucket, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # The cloud dataset the example reads: ten turbines, labelled raw, on the first of May.
    seed = tmp_path / "seed"
    seed.mkdir()
    for index in range(1, 11):
        path = seed / f"T{index:02d}.csv"
        path.write_text(f"time,speed\n0,{index}\n")
        Datafile(path, labels={"raw"}, tags={"turbine": f"T{index:02d}"},
                 timestamp=datetime.datetime(2024, 5, 1, index, tzinfo=datetime.timezone.utc)).update_metadata()
    Dataset(seed, name="wind-farm-2024-05-01", labels={"wind"}, storage_client=client).upload(
        f"gs://{bucket}/wind-farm/2024-05-01"
    )
    results = tmp_path / "results" / "2024-05-01"
    results.mkdir(parents=True)
    (results / "summary.csv").write_text("turbine,mean\nT07,7\n")
    # Signing needs a service-account key: a generated one, as GOOGLE_APPLICATION_CREDENTIALS would name.
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    key_file = tmp_path / "key.json"
    key_file.write_text(json.dumps({
        "type": "service_account", "project_id": "test", "private_key_id": "1", "private_key": pem.decode(),
        "client_email": "readme@test.iam.gserviceaccount.com", "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    }))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))

    namespace: dict = {}
    code = _datasets_block().replace("my-bucket", bucket)
    exec(compile(code, "README.md", "exec", dont_inherit=True), namespace)

    assert namespace["farm"].name == "wind-farm-2024-05-01" and len(namespace["farm"]) == 10
    assert len(namespace["raw"]) == 10 and namespace["t7"].name == "T07.csv"
    assert [file.name for file in namespace["day"]] == [f"T{index:02d}.csv" for index in range(1, 11)]
    assert (tmp_path / "data" / "2024-05-01" / "T03.csv").read_text() == "time,speed\n0,3\n"
    cleaned = Dataset(f"gs://{bucket}/cleaned/2024-05-01", storage_client=client)
    assert cleaned.name == "wind-farm-day" and [file.name for file in cleaned.files] == ["summary.csv"]
    manifest = Manifest.from_cloud(f"gs://{bucket}/manifests/2024-05-01.json", storage_client=client)
    assert set(manifest.datasets) == {"raw", "cleaned"}
    assert "/wind-farm/2024-05-01/.signed_metadata_files/" in namespace["url"]
