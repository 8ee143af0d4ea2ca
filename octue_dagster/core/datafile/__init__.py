"""`Datafile`: one file, local, in GCS or both, with `open()`, its Octue metadata and the upload decision."""
