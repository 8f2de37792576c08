"""Konan: a self-hosted MLOps platform — registry, one-step deployment, monitoring, governance."""

__version__ = "0.1.0"
