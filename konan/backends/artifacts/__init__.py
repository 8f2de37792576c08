"""Artifact storage behind one interface: a local folder or an S3 bucket, keyed by sha256.

``S3ArtifactStore`` lives in ``konan.backends.artifacts.s3`` and is not imported here, so that
importing this package never pulls in boto3.
"""

from konan.backends.artifacts.base import (
    ArtifactStore,
    StoredArtifact,
    content_key,
    validate_sha256,
)
from konan.backends.artifacts.factory import artifact_store_from_settings
from konan.backends.artifacts.local import LocalArtifactStore
from konan.core.errors import ArtifactIntegrityError

__all__ = [
    "ArtifactIntegrityError",
    "ArtifactStore",
    "LocalArtifactStore",
    "StoredArtifact",
    "artifact_store_from_settings",
    "content_key",
    "validate_sha256",
]
