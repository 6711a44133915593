"""Uploaded datasets: safe archive reading, decoding into tensors, and the ingest step that
the API runs for small uploads and the worker for large ones."""
