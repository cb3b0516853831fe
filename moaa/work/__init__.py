"""A run's work on disk: its steps, shards, a stage-shard's work, progress, the dry-run estimate, the outcome check."""
