"""The example pipeline as a `dg` project: Python assets, and everything else declared in `defs.yaml`."""
