"""moaa's benchmarks: engine efficiency, scale, resume, variant cost and the embedded local model.

Usage: make bench [ARGS="--quick"]   (or: python -m benchmarks [--quick] [--only NAME ...])

Every benchmark but `local` runs against moaa's OpenAI-compatible test server started as a
subprocess with a fixed latency and no model, so the figures measure moaa, not a model. Each
prints rows of a table (figure, value, its ceiling or target, the ratio) and all of them are
written to `bench_results/bench-<timestamp>.json`. Targets are reported, never asserted.
See benchmarks/README.md for what each figure means and how to run on a Dask or Ray cluster.
"""
