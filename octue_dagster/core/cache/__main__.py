"""`python -m octue_dagster.core.cache {info,clear,evict}`."""

import sys

from octue_dagster.core.cache.copies import main

sys.exit(main())
