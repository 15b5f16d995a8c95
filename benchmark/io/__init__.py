"""The bottom layer: files written atomically, hashes, JSON-safe values, the download cache and the
job environment. Nothing here knows about recipes, models or runs."""
