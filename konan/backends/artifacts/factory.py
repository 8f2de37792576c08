"""Turn settings into an ArtifactStore; only composition roots (server, worker, CLI) call this."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from konan.backends.artifacts.base import ArtifactStore
from konan.backends.artifacts.local import LocalArtifactStore
from konan.core.errors import ConfigError
from konan.core.settings import Settings

URI_SETTING = "KONAN_ARTIFACTS__URI"


def artifact_store_from_settings(settings: Settings) -> ArtifactStore:
    """Choose the adapter by the scheme of ``settings.artifacts_uri``.

    * ``s3://bucket/prefix`` → S3ArtifactStore (endpoint, region and keys from ``artifacts.s3_*``;
      uploads are spooled under ``data_dir/tmp/artifacts``)
    * ``file:///abs/path`` or a plain path → LocalArtifactStore
    * anything else → ConfigError naming KONAN_ARTIFACTS__URI
    """
    uri = settings.artifacts_uri
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()

    # No scheme, or a one-letter "scheme" that is really a Windows drive letter: a plain path.
    if scheme == "" or len(scheme) == 1:
        return LocalArtifactStore(Path(uri).expanduser())

    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(
                f"{URI_SETTING}={uri!r}: a file:// URI must name a local absolute path "
                "(file:///path/to/artifacts)"
            )
        if not parts.path:
            raise ConfigError(f"{URI_SETTING}={uri!r}: the file:// URI has no path")
        return LocalArtifactStore(Path(unquote(parts.path)))

    if scheme == "s3":
        if not parts.netloc:
            raise ConfigError(f"{URI_SETTING}={uri!r}: expected s3://bucket[/prefix]")
        # Deferred so that boto3 is imported only when S3 is configured.
        from konan.backends.artifacts.s3 import S3ArtifactStore

        s3 = settings.artifacts
        secret = s3.s3_secret_access_key
        return S3ArtifactStore(
            bucket=parts.netloc,
            prefix=unquote(parts.path).strip("/"),
            endpoint_url=s3.s3_endpoint_url,
            region=s3.s3_region,
            access_key_id=s3.s3_access_key_id,
            secret_access_key=secret.get_secret_value() if secret is not None else None,
            spool_dir=settings.data_dir.resolve() / "tmp" / "artifacts",
        )

    raise ConfigError(
        f"{URI_SETTING}={uri!r}: unsupported scheme {parts.scheme!r}; "
        "use a folder path, file:///path or s3://bucket/prefix"
    )
