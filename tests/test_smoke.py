from octue_dagster import Datafile


def test_cloud_datafile_round_trip(bucket, client):
    datafile = Datafile(f"gs://{bucket}/smoke.txt", storage_client=client, labels={"smoke"})
    with datafile.open("w") as file:
        file.write("This is some cleaned data.")
    again = Datafile(f"gs://{bucket}/smoke.txt", storage_client=client)
    assert again.hash_value == "BE0c5A=="
    assert again.labels == {"smoke"}
