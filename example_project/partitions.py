"""The example's partitioning: one partition per day, for a few days in March 2024."""

import dagster as dg

#: 2024-03-01 to 2024-03-03 (the end date is exclusive).
daily_partitions = dg.DailyPartitionsDefinition(start_date="2024-03-01", end_date="2024-03-04")
