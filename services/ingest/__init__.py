"""Ingest workers: Celery tasks that keep the index in step with the object store."""
