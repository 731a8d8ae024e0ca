"""Polars pipelines: from raw provider files to a validated store, and from the store to
clean events, weighted matrices, evaluation splits and planner aggregates."""
