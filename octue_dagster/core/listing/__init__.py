"""Many objects under a prefix: filtered listings, bulk re-tagging and the prefix sensor's bounded cursor."""
