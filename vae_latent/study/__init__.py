"""A sweep's runs collected from disk, compared across tiers, and the report written."""
