"""What is built on the run registry (`docthink.runs.registry`, the storage): lineage, recipe
diffs, integrity checks, the search index and search, the leaderboard and its static page,
reproduction, and the read-only web UI."""
