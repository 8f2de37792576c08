"""The task queue: the Celery app built from settings, and the context tasks run in."""
