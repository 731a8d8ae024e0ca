"""Jobs: ingest, demo data, training with evaluation and MLflow registry, promotion gate,
batch recommendations, planner reports, and the ``recsys`` command line."""
