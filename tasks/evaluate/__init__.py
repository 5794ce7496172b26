"""Stage 4, streaming evaluation: eval sets, streaming engine, metrics, report (`steps` is what the
flow calls)."""
