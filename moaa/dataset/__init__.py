"""Data set versions: files, manifest, card, run report, Hub publishing."""
