"""Celery worker entry: registers every domain's tasks and the periodic schedule."""
