"""One contract for every ArtifactStore adapter: a real folder, and S3 (moto) on loopback."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

import pytest

from konan.backends.artifacts import (
    ArtifactIntegrityError,
    ArtifactStore,
    LocalArtifactStore,
    artifact_store_from_settings,
)
from konan.backends.artifacts.base import CHUNK_SIZE
from konan.backends.artifacts.s3 import S3ArtifactStore
from konan.core.errors import (
    ConfigError,
    DependencyUnavailable,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
)
from konan.core.settings import Settings
from tests.conftest import ACCESS_KEY, SECRET_KEY

MiB = 1024 * 1024
PREFIX = "team-a/models"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def key_of(digest: str) -> str:
    return f"sha256/{digest[:2]}/{digest[2:4]}/{digest}"


class RecordingStream(io.RawIOBase):
    """A binary stream that records how much each read asked for and how much was consumed."""

    def __init__(self, data: bytes) -> None:
        self._buf = io.BytesIO(data)
        self.requests: list[int] = []
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        self.requests.append(-1 if size is None else size)
        chunk = self._buf.read(size)
        self.consumed += len(chunk)
        return chunk


def list_files(root: Path) -> list[str]:
    if not root.exists():
        return []
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def s3_leftovers(admin: Any, bucket: str, spool_dir: Path) -> list[str]:
    keys: list[str] = []
    for page in admin.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys.extend(obj["Key"] for obj in page.get("Contents", []))
    uploads = admin.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    keys.extend(f"multipart-upload:{u['Key']}" for u in uploads)
    keys.extend(f"spool:{name}" for name in list_files(spool_dir))
    return sorted(k.removeprefix(f"{PREFIX}/") for k in keys)


# ---- the adapters under one harness -------------------------------------------------------------


@dataclass
class Harness:
    kind: str
    store: ArtifactStore
    leftovers: Callable[[], list[str]]
    """Every stored object (key relative to the root/prefix) and every temp file left behind."""


@pytest.fixture(params=["local", "s3"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    if request.param == "local":
        root = tmp_path / "artifacts"
        with LocalArtifactStore(root) as local:
            yield Harness("local", local, lambda: list_files(root))
        return
    endpoint: str = request.getfixturevalue("s3_endpoint")
    admin: Any = request.getfixturevalue("s3_admin")
    name: str = request.getfixturevalue("bucket")
    spool = tmp_path / "spool"
    with S3ArtifactStore(
        bucket=name,
        prefix=PREFIX,
        endpoint_url=endpoint,
        region="us-east-1",
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
        spool_dir=spool,
    ) as s3:
        yield Harness("s3", s3, lambda: s3_leftovers(admin, name, spool))


# ---- the contract -------------------------------------------------------------------------------


def test_put_returns_digest_and_size_and_open_gives_the_bytes_back(harness: Harness) -> None:
    data = b"model weights \x00\x01\x02" * 1000
    stored = harness.store.put(io.BytesIO(data))

    assert stored.sha256 == sha(data)
    assert stored.size == len(data)
    assert harness.store.exists(stored.sha256)
    assert harness.store.size(stored.sha256) == len(data)
    with harness.store.open(stored.sha256) as fh:
        assert fh.read() == data
    assert harness.leftovers() == [key_of(stored.sha256)]


def test_empty_stream_is_stored_as_the_empty_digest(harness: Harness) -> None:
    stored = harness.store.put(io.BytesIO(b""))

    assert stored.sha256 == sha(b"")
    assert stored.size == 0
    with harness.store.open(stored.sha256) as fh:
        assert fh.read() == b""


def test_identical_bytes_are_stored_once(harness: Harness) -> None:
    data = os.urandom(100_000)
    first = harness.store.put(io.BytesIO(data))
    second = harness.store.put(io.BytesIO(data))
    other = harness.store.put(io.BytesIO(data + b"!"))

    assert first == second
    assert other.sha256 != first.sha256
    assert harness.leftovers() == sorted([key_of(first.sha256), key_of(other.sha256)])


def test_object_larger_than_one_multipart_part_round_trips(harness: Harness) -> None:
    data = os.urandom(9 * MiB)
    stored = harness.store.put(io.BytesIO(data))

    assert stored.sha256 == sha(data)
    assert harness.store.size(stored.sha256) == 9 * MiB
    with harness.store.open(stored.sha256) as fh:
        assert hashlib.sha256(fh.read()).hexdigest() == stored.sha256
    assert harness.leftovers() == [key_of(stored.sha256)]


def test_put_reads_the_stream_in_bounded_chunks(harness: Harness) -> None:
    data = os.urandom(3 * MiB + 17)
    stream = RecordingStream(data)
    stored = harness.store.put(cast(BinaryIO, stream))

    assert stored.sha256 == sha(data)
    assert stream.requests, "the stream was never read"
    assert all(0 < n <= CHUNK_SIZE for n in stream.requests), stream.requests


def test_put_over_the_limit_raises_and_leaves_nothing_behind(harness: Harness) -> None:
    limit = 1_000_000
    data = os.urandom(4 * MiB)
    stream = RecordingStream(data)

    with pytest.raises(PayloadTooLarge) as info:
        harness.store.put(cast(BinaryIO, stream), max_bytes=limit)

    assert info.value.code == "payload_too_large"
    assert stream.consumed < len(data), "an oversized stream should not be drained"
    assert stream.consumed <= limit + CHUNK_SIZE
    assert not harness.store.exists(sha(data))
    assert not harness.store.exists(sha(data[:limit]))
    assert harness.leftovers() == []


def test_put_of_exactly_the_limit_is_accepted(harness: Harness) -> None:
    data = os.urandom(1000)
    stored = harness.store.put(io.BytesIO(data), max_bytes=1000)

    assert stored.size == 1000
    assert harness.store.exists(stored.sha256)


def test_missing_digest_is_not_found(harness: Harness, tmp_path: Path) -> None:
    missing = sha(b"never stored")

    assert harness.store.exists(missing) is False
    with pytest.raises(NotFound):
        harness.store.open(missing)
    with pytest.raises(NotFound):
        harness.store.size(missing)
    with pytest.raises(NotFound):
        harness.store.local_path(missing, tmp_path / "cache")
    assert list_files(tmp_path / "cache") == []


BAD_DIGESTS = [
    "../x",
    "../" + "a" * 61,
    "/etc/passwd",
    "A" * 64,
    sha(b"x").upper(),
    "a" * 63,
    "a" * 65,
    "g" * 64,
    "",
    "ab/cd/" + "a" * 58,
]


@pytest.mark.parametrize("bad", BAD_DIGESTS)
@pytest.mark.parametrize("method", ["open", "exists", "delete", "size", "local_path"])
def test_invalid_digest_is_rejected_before_touching_storage(
    harness: Harness, tmp_path: Path, method: str, bad: str
) -> None:
    call: Callable[..., object] = getattr(harness.store, method)
    args: tuple[object, ...] = (bad, tmp_path / "cache") if method == "local_path" else (bad,)

    with pytest.raises(InvalidInput) as info:
        call(*args)

    assert info.value.code == "invalid_input"
    assert not (tmp_path / "cache").exists()


def test_delete_is_idempotent(harness: Harness) -> None:
    stored = harness.store.put(io.BytesIO(b"to be deleted"))

    harness.store.delete(stored.sha256)
    harness.store.delete(stored.sha256)

    assert not harness.store.exists(stored.sha256)
    with pytest.raises(NotFound):
        harness.store.open(stored.sha256)
    assert harness.leftovers() == []


def test_local_path_is_a_file_whose_bytes_hash_to_the_digest(
    harness: Harness, tmp_path: Path
) -> None:
    data = os.urandom(2 * MiB + 3)
    stored = harness.store.put(io.BytesIO(data))

    path = harness.store.local_path(stored.sha256, tmp_path / "cache")

    assert path.is_file()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == stored.sha256
    assert harness.store.local_path(stored.sha256, tmp_path / "cache") == path


# ---- adapter specifics --------------------------------------------------------------------------


def test_local_store_keeps_files_and_folders_owner_only(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    store = LocalArtifactStore(root)
    stored = store.put(io.BytesIO(b"secret model"))
    path = store.local_path(stored.sha256, tmp_path / "unused")

    assert path == root / key_of(stored.sha256)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # root/tmp, root/sha256/ab/cd, root/sha256/ab, root/sha256 and root itself
    for directory in [root / "tmp", *(root / p for p in path.relative_to(root).parents)]:
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    assert list_files(root / "tmp") == []


def test_s3_large_object_is_uploaded_in_multipart_parts(
    s3_admin: Any, bucket: str, s3_endpoint: str, tmp_path: Path
) -> None:
    with S3ArtifactStore(
        bucket, PREFIX, s3_endpoint, "us-east-1", ACCESS_KEY, SECRET_KEY, spool_dir=tmp_path
    ) as store:
        stored = store.put(io.BytesIO(os.urandom(9 * MiB)))

    head = s3_admin.head_object(Bucket=bucket, Key=f"{PREFIX}/{key_of(stored.sha256)}")
    # A multipart upload's ETag is "<md5 of part md5s>-<number of parts>".
    assert head["ETag"].strip('"').endswith("-2")
    assert head["ContentLength"] == 9 * MiB


def test_s3_local_path_downloads_once_into_the_cache(
    s3_admin: Any, bucket: str, s3_endpoint: str, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    with S3ArtifactStore(
        bucket, PREFIX, s3_endpoint, "us-east-1", ACCESS_KEY, SECRET_KEY, spool_dir=tmp_path
    ) as store:
        stored = store.put(io.BytesIO(b"cached weights"))
        first = store.local_path(stored.sha256, cache)
        # With the object gone from S3, only a cached copy can satisfy the second call.
        s3_admin.delete_object(Bucket=bucket, Key=f"{PREFIX}/{key_of(stored.sha256)}")
        second = store.local_path(stored.sha256, cache)

    assert first == second == cache / key_of(stored.sha256)
    assert second.read_bytes() == b"cached weights"
    assert list_files(cache) == [key_of(stored.sha256)]


def test_s3_local_path_refuses_an_object_that_does_not_match_its_digest(
    s3_admin: Any, bucket: str, s3_endpoint: str, tmp_path: Path
) -> None:
    claimed = sha(b"the real bytes")
    s3_admin.put_object(Bucket=bucket, Key=f"{PREFIX}/{key_of(claimed)}", Body=b"tampered")
    cache = tmp_path / "cache"

    with (
        S3ArtifactStore(
            bucket, PREFIX, s3_endpoint, "us-east-1", ACCESS_KEY, SECRET_KEY, spool_dir=tmp_path
        ) as store,
        pytest.raises(ArtifactIntegrityError),
    ):
        store.local_path(claimed, cache)

    assert list_files(cache) == []


def test_s3_unreachable_endpoint_is_dependency_unavailable_naming_the_endpoint(
    tmp_path: Path,
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"  # nothing listens there any more

    with S3ArtifactStore(
        "konan",
        "",
        endpoint,
        "us-east-1",
        ACCESS_KEY,
        SECRET_KEY,
        spool_dir=tmp_path / "spool",
        max_attempts=1,
        connect_timeout=2,
    ) as store:
        with pytest.raises(DependencyUnavailable) as on_put:
            store.put(io.BytesIO(b"data"))
        with pytest.raises(DependencyUnavailable) as on_open:
            store.open(sha(b"data"))

    for info in (on_put, on_open):
        message = str(info.value)
        assert endpoint in message
        assert SECRET_KEY not in message
        assert ACCESS_KEY not in message
    assert list_files(tmp_path / "spool") == []


# ---- choosing the adapter from settings ---------------------------------------------------------


def make_settings(tmp_path: Path, **artifacts: Any) -> Settings:
    return Settings(data_dir=tmp_path / "data", artifacts=artifacts)


def test_factory_defaults_to_a_folder_under_the_data_dir(tmp_path: Path) -> None:
    store = artifact_store_from_settings(make_settings(tmp_path))

    assert isinstance(store, LocalArtifactStore)
    assert store.root == (tmp_path / "data").resolve() / "artifacts"


@pytest.mark.parametrize("form", ["plain", "file-uri"])
def test_factory_builds_a_local_store_from_a_path_or_file_uri(tmp_path: Path, form: str) -> None:
    folder = tmp_path / "my artifacts"
    uri = str(folder) if form == "plain" else folder.as_uri()

    store = artifact_store_from_settings(make_settings(tmp_path, uri=uri))
    stored = store.put(io.BytesIO(b"hello"))

    assert isinstance(store, LocalArtifactStore)
    assert store.root == folder
    assert (folder / key_of(stored.sha256)).read_bytes() == b"hello"


def test_factory_builds_an_s3_store_that_writes_under_the_prefix(
    tmp_path: Path, s3_admin: Any, bucket: str, s3_endpoint: str
) -> None:
    settings = make_settings(
        tmp_path,
        uri=f"s3://{bucket}/{PREFIX}/",
        s3_endpoint_url=s3_endpoint,
        s3_access_key_id=ACCESS_KEY,
        s3_secret_access_key=SECRET_KEY,
    )

    with artifact_store_from_settings(settings) as store:
        assert isinstance(store, S3ArtifactStore)
        stored = store.put(io.BytesIO(b"via settings"))

    body = s3_admin.get_object(Bucket=bucket, Key=f"{PREFIX}/{key_of(stored.sha256)}")["Body"]
    with body:
        assert body.read() == b"via settings"


@pytest.mark.parametrize("uri", ["ftp://host/artifacts", "gs://bucket/prefix", "s3://"])
def test_factory_refuses_an_unusable_uri_naming_the_setting(tmp_path: Path, uri: str) -> None:
    with pytest.raises(ConfigError) as info:
        artifact_store_from_settings(make_settings(tmp_path, uri=uri))

    assert "KONAN_ARTIFACTS__URI" in str(info.value)
