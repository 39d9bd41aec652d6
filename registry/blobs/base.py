"""The interface the registry uses for blob bytes, and the choice of backend from a URL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from registry.errors import MissingDependency, UsageError

if TYPE_CHECKING:
    from registry.config import Settings

TEAM_EXTRA = "adapt[team]"


@runtime_checkable
class BlobStore(Protocol):
    """Content-addressed bytes named by their sha256 (64 lowercase hex characters)."""

    @property
    def root(self) -> Path:
        """The local directory this store writes: the store itself, or a bucket's cache."""
        ...

    def describe(self) -> str:
        """Where the blobs live, safe to print (no credentials)."""
        ...

    def path(self, sha256: str) -> Path:
        """A local file holding the blob's bytes (a bucket's blob is fetched and verified)."""
        ...

    def has(self, sha256: str) -> bool: ...

    def size(self, sha256: str) -> int: ...

    def put_file(self, src: str | Path, expected_sha256: str | None = None) -> tuple[str, int]:
        """Store the bytes of `src`; return (sha256, size). IntegrityError if they do not hash
        to `expected_sha256`, or if they changed while being stored."""
        ...

    def copy_out(self, sha256: str, dest: str | Path, verify: bool = True) -> None:
        """Write the blob to `dest` atomically, checking its hash on the way."""
        ...

    def verify(self, sha256: str) -> str | None:
        """The actual sha256 of the stored bytes if it differs from the name, else None."""
        ...

    def __iter__(self) -> Iterator[str]: ...

    def temp_files(self) -> list[Path]:
        """Leftover temp files of interrupted writes in the local directory."""
        ...

    def remove(self, sha256: str) -> None: ...


def is_remote_url(url: str | None) -> bool:
    return bool(url) and str(url).startswith("s3://")


def check_blob_url(url: str) -> str:
    """`url` if it names a backend adapt knows (s3://bucket[/prefix] or a local path)."""
    if url.startswith("s3://"):
        bucket = url[len("s3://"):].split("/", 1)[0]
        if not bucket:
            raise UsageError(f"blob store URL {url!r} names no bucket", "use s3://bucket/prefix")
        if "@" in bucket or ":" in bucket:
            raise UsageError("a blob store URL must not carry credentials",
                             "set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or a profile)")
        return url
    if "://" in url and not url.startswith("file://"):
        raise UsageError(f"unknown blob store URL {url!r}",
                         "use s3://bucket/prefix or a local directory")
    return url


def open_blob_store(settings: Settings) -> BlobStore:
    """The blob store `settings` name: a local directory, or an S3-compatible bucket."""
    url = settings.blob_url
    if not url:
        from registry.store import BlobStore as LocalBlobStore

        return LocalBlobStore(settings.blob_dir)
    check_blob_url(url)
    if url.startswith("s3://"):
        try:
            import boto3  # noqa: F401
        except ImportError:
            raise MissingDependency("boto3", "use an S3 blob store (ADAPT_BLOB_URL=s3://...)",
                                    install=TEAM_EXTRA) from None
        from registry.blobs.cache import BlobCache
        from registry.blobs.s3 import S3BlobStore

        cache = BlobCache(settings.cache_dir / "blobs", settings.cache_max_bytes)
        return S3BlobStore.from_url(url, cache)
    from registry.store import BlobStore as LocalBlobStore

    return LocalBlobStore(Path(url.removeprefix("file://")).expanduser())
