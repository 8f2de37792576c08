"""S3ArtifactStore: artifacts in an S3-compatible bucket (AWS, MinIO, SeaweedFS, moto).

The only module in Konan that imports boto3.

Why a put spools to local disk first: the object key is the sha256 of the content, which is only
known after the last byte is read. Streaming straight into a multipart upload would need a
temporary key and a server-side copy afterwards (a second full write of the object, and one more
thing to clean up on failure). Instead a put streams into an owner-only temp file while hashing
and enforcing ``max_bytes``, checks whether the digest is already stored, and only then hands the
file to boto3's ``upload_file`` (multipart and parallel parts above ``multipart_threshold``,
failed multipart uploads aborted by s3transfer). An over-limit put therefore never touches S3.
The cost is local disk space for one object per concurrent upload in ``spool_dir``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, NoReturn, cast

import boto3
import boto3.exceptions
import botocore.exceptions
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from konan.backends.artifacts.base import (
    ArtifactStore,
    StoredArtifact,
    content_key,
    copy_hashing,
    make_private_dir,
    sha256_of_file,
    validate_sha256,
)
from konan.core.errors import (
    ArtifactIntegrityError,
    ConfigError,
    DependencyUnavailable,
    NotFound,
)

MULTIPART_THRESHOLD = 8 * 1024 * 1024
MULTIPART_CHUNKSIZE = 8 * 1024 * 1024

_MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
_AUTH_CODES = frozenset(
    {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden"}
)


class S3ArtifactStore(ArtifactStore):
    """Objects live at ``s3://bucket/<prefix>/sha256/ab/cd/<digest>``.

    ``spool_dir`` holds uploads while they are hashed and downloads while they are verified
    (default: the system temp dir). Call ``close()`` to release the client's connections.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        *,
        spool_dir: Path | None = None,
        max_attempts: int = 5,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        multipart_threshold: int = MULTIPART_THRESHOLD,
        multipart_chunksize: int = MULTIPART_CHUNKSIZE,
    ) -> None:
        if not bucket:
            raise ConfigError("S3 artifact store needs a bucket (KONAN_ARTIFACTS__URI=s3://…)")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.spool_dir = spool_dir
        # Credentials stay inside the client; messages name only the endpoint.
        self._where = endpoint_url or f"AWS S3 ({region})"
        session = boto3.session.Session(
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            region_name=region,
        )
        self._client: Any = session.client(
            "s3",
            endpoint_url=endpoint_url,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"mode": "standard", "max_attempts": max_attempts},
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
            ),
        )
        self._transfer = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=multipart_chunksize,
        )

    def __repr__(self) -> str:
        return f"S3ArtifactStore(bucket={self.bucket!r}, prefix={self.prefix!r}, at={self._where})"

    def close(self) -> None:
        self._client.close()

    def key(self, sha256: str) -> str:
        key = content_key(sha256)
        return f"{self.prefix}/{key}" if self.prefix else key

    # ---- the ArtifactStore interface ---------------------------------------------------------

    def put(self, stream: BinaryIO, *, max_bytes: int | None = None) -> StoredArtifact:
        with self._spool_file("put-") as (out, tmp):
            stored = copy_hashing(stream, out, max_bytes=max_bytes)
            out.close()
            # Identical bytes are stored once. Two concurrent puts of the same new content may
            # both upload; they write the same bytes to the same key, so the result is the same.
            if self.exists(stored.sha256):
                return stored
            key = self.key(stored.sha256)
            with self._translate(stored.sha256):
                self._client.upload_file(
                    str(tmp),
                    self.bucket,
                    key,
                    ExtraArgs={"Metadata": {"sha256": stored.sha256}},
                    Config=self._transfer,
                )
        return stored

    def open(self, sha256: str) -> BinaryIO:
        key = self.key(sha256)
        with self._translate(sha256):
            response = self._client.get_object(Bucket=self.bucket, Key=key)
        # botocore's StreamingBody is an io.IOBase with read(n)/readinto/close.
        return cast(BinaryIO, response["Body"])

    def exists(self, sha256: str) -> bool:
        try:
            self.size(sha256)
        except NotFound:
            return False
        return True

    def delete(self, sha256: str) -> None:
        key = self.key(sha256)
        with self._translate(sha256):
            # S3 DeleteObject succeeds for a missing key, so this is idempotent as is.
            self._client.delete_object(Bucket=self.bucket, Key=key)

    def size(self, sha256: str) -> int:
        key = self.key(sha256)
        with self._translate(sha256):
            response = self._client.head_object(Bucket=self.bucket, Key=key)
        return int(response["ContentLength"])

    def local_path(self, sha256: str, cache_dir: Path) -> Path:
        """Download into ``cache_dir/sha256/ab/cd/<digest>`` once, verifying the digest.

        The download goes to a temp file in ``cache_dir/tmp`` and is renamed into place only
        after its sha256 matched, so a file present in the cache is always a verified copy.
        """
        validate_sha256(sha256)
        cache_dir = Path(cache_dir).absolute()
        target = cache_dir / content_key(sha256)
        if target.is_file():
            return target
        tmp_dir = cache_dir / "tmp"
        make_private_dir(tmp_dir)
        fd, tmp_name = tempfile.mkstemp(prefix="get-", dir=tmp_dir)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, self._translate(sha256):
                self._client.download_fileobj(
                    self.bucket, self.key(sha256), out, Config=self._transfer
                )
            actual = sha256_of_file(tmp)
            if actual != sha256:
                raise ArtifactIntegrityError(
                    f"artifact {sha256} in bucket {self.bucket!r} has sha256 {actual}; "
                    "the stored object is corrupt"
                )
            make_private_dir(target.parent)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        return target

    # ---- helpers -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _spool_file(self, prefix: str) -> Iterator[tuple[BinaryIO, Path]]:
        """An owner-only (0o600) temp file, open for writing; closed and removed on exit."""
        if self.spool_dir is not None:
            make_private_dir(self.spool_dir)
        fd, name = tempfile.mkstemp(prefix=prefix, dir=self.spool_dir)
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                yield out, path
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    @contextlib.contextmanager
    def _translate(self, sha256: str) -> Iterator[None]:
        """Turn boto3/botocore failures into Konan errors that name the endpoint, never secrets."""
        try:
            yield
        except botocore.exceptions.ClientError as exc:
            self._raise_for_client_error(exc, sha256)
        except boto3.exceptions.S3UploadFailedError as exc:
            cause = exc.__context__
            if isinstance(cause, botocore.exceptions.ClientError):
                self._raise_for_client_error(cause, sha256)
            raise DependencyUnavailable(
                f"upload of artifact {sha256} to S3 at {self._where} failed"
            ) from exc
        except botocore.exceptions.NoCredentialsError:
            raise ConfigError(
                f"no S3 credentials for {self._where}: set KONAN_ARTIFACTS__S3_ACCESS_KEY_ID "
                "and KONAN_ARTIFACTS__S3_SECRET_ACCESS_KEY"
            ) from None
        except (
            botocore.exceptions.ConnectionError,
            botocore.exceptions.HTTPClientError,
        ) as exc:
            raise DependencyUnavailable(
                f"cannot reach the S3 artifact store at {self._where} ({type(exc).__name__})"
            ) from exc
        except (botocore.exceptions.BotoCoreError, boto3.exceptions.Boto3Error) as exc:
            raise DependencyUnavailable(
                f"S3 artifact store at {self._where} failed ({type(exc).__name__})"
            ) from exc

    def _raise_for_client_error(
        self, exc: botocore.exceptions.ClientError, sha256: str
    ) -> NoReturn:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        if code == "NoSuchBucket":
            raise DependencyUnavailable(
                f"bucket {self.bucket!r} does not exist at {self._where}"
            ) from None
        if code in _MISSING_CODES:
            raise NotFound(f"artifact {sha256} not found") from None
        if code in _AUTH_CODES:
            raise DependencyUnavailable(
                f"S3 at {self._where} refused access to bucket {self.bucket!r} ({code}); "
                "check the credentials and bucket policy"
            ) from None
        raise DependencyUnavailable(
            f"S3 artifact store at {self._where} answered {code or 'an error'}"
        ) from exc
