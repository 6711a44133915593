"""Uploaded datasets: safe archive reading, the header checks the API runs before it accepts
an upload, and the decoding into tensors that the worker runs."""
