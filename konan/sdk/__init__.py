"""The Python SDK: an HTTP client over the REST API. Imports nothing server-side."""

from konan.sdk.client import Client

__all__ = ["Client"]
