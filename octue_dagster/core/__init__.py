"""The Dagster-free core: Datafiles, their Octue metadata, local files and caches, and the GCS store.

Nothing under `octue_dagster.core` imports Dagster, so scripts and workers that only move files start quickly and
the core can be used without Dagster installed.
"""
