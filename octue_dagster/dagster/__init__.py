"""The Dagster integration: the I/O manager, resources, sensors, observable sources and jobs, over the core."""
