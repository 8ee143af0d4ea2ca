"""Talking to Google Cloud Storage: `gs://` paths, the `Store` (the only code that sends requests), the bounded
concurrent runners many-object work goes through, and V4 signed URLs."""
