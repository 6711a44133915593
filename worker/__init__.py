"""The Celery worker: task, training loop, datasets, metric sink."""
