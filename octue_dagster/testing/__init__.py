"""Helpers for tests and demos: a GCS emulator (fake-gcs-server) run on loopback."""
