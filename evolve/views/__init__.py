"""Views of a run: its history, lineage pictures, TensorBoard (offline and live), the Parquet table."""
