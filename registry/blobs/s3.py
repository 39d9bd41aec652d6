"""Blobs in an S3-compatible bucket (AWS S3, R2, GCS's S3 API, MinIO, SeaweedFS, rclone).

`s3://bucket/prefix` names the place; the endpoint, region and credentials come from the usual
AWS variables and files (AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_PROFILE, ...) and
are never stored or printed by adapt. Objects are `prefix/ab/cdef...`, named by sha256.

Integrity: an upload sends Content-MD5 (which every S3 server checks) and the SHA-256 checksum
header (checked where the server supports it), both computed from the bytes adapt hashed, so the
stored object is exactly what was hashed; a multipart upload is checked by its ETag. Every read
hashes the bytes it gets before anyone uses them: a corrupted object is refused.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from registry.blobs.cache import BlobCache
from registry.errors import IntegrityError, NotFound, RegistryUnavailable
from registry.hashing import CHUNK

MULTIPART_THRESHOLD = 64 * 1024**2
MULTIPART_CHUNK = 16 * 1024**2
_MAX_PARTS = 10_000
_HINT = ("check ADAPT_BLOB_URL, AWS_ENDPOINT_URL and the AWS credentials, and that the "
         "object store is reachable")
T = TypeVar("T")


def parse_s3_url(url: str) -> tuple[str, str]:
    """(bucket, prefix) of `s3://bucket/prefix`; the prefix is '' or ends with '/'."""
    rest = url[len("s3://"):]
    bucket, _, prefix = rest.partition("/")
    prefix = prefix.strip("/")
    return bucket, (prefix + "/" if prefix else "")


def make_client() -> Any:
    """A boto3 S3 client from the usual AWS configuration, with retries and backoff."""
    import boto3
    from botocore.config import Config

    custom_endpoint = bool(os.environ.get("AWS_ENDPOINT_URL_S3")
                           or os.environ.get("AWS_ENDPOINT_URL"))
    config = Config(
        # a custom endpoint (MinIO, SeaweedFS, a LAN server) rarely has per-bucket DNS names
        s3={"addressing_style": "path" if custom_endpoint else "auto"},
        retries={"max_attempts": int(os.environ.get("ADAPT_S3_MAX_ATTEMPTS", "5")),
                 "mode": "standard"},
        connect_timeout=10, read_timeout=120,
        # adapt sends its own SHA-256 and MD5; no streaming trailers that some servers refuse
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        max_pool_connections=32,
    )
    return boto3.session.Session().client("s3", config=config)


class S3BlobStore:
    """Content-addressed blobs in a bucket, read through a local `BlobCache`."""

    def __init__(self, bucket: str, prefix: str, cache: BlobCache,
                 client: Any | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.cache = cache
        self._client = client
        self._sizes: dict[str, int] = {}

    @classmethod
    def from_url(cls, url: str, cache: BlobCache, client: Any | None = None) -> S3BlobStore:
        bucket, prefix = parse_s3_url(url)
        return cls(bucket, prefix, cache, client)

    @property
    def client(self) -> Any:
        if self._client is None:
            with self._remote("connect"):
                self._client = make_client()
        return self._client

    @property
    def root(self) -> Path:
        return self.cache.root

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def key(self, sha256: str) -> str:
        return f"{self.prefix}{sha256[:2]}/{sha256[2:]}"

    # -- errors --------------------------------------------------------------------------------
    @contextmanager
    def _remote(self, action: str) -> Iterator[None]:
        """Turn the client's errors into one typed line (exit 9), credentials never shown."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as error:
            info = error.response.get("Error", {})
            code = str(info.get("Code", "error"))
            message = str(info.get("Message") or "").splitlines()[0:1]
            reason = f"{action}: {code}" + (f" ({message[0][:120]})" if message else "")
            raise RegistryUnavailable(self.describe(), reason, _HINT) from None
        except BotoCoreError as error:
            text = str(error).strip().splitlines()
            reason = f"{action}: {text[0][:200] if text else type(error).__name__}"
            raise RegistryUnavailable(self.describe(), reason, _HINT) from None

    def _call(self, action: str, fn: Callable[..., T], **kwargs: Any) -> T:
        with self._remote(action):
            return fn(**kwargs)

    def _head(self, sha256: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        with self._remote(f"look up blob {sha256[:12]}"):
            try:
                head: dict[str, Any] = self.client.head_object(Bucket=self.bucket,
                                                               Key=self.key(sha256))
            except ClientError as error:
                status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if status == 404 or error.response.get("Error", {}).get("Code") in (
                        "404", "NoSuchKey", "NotFound"):
                    return None
                raise
        return head

    # -- the interface -------------------------------------------------------------------------
    def has(self, sha256: str) -> bool:
        head = self._head(sha256)
        if head is not None:
            self._sizes[sha256] = int(head["ContentLength"])
        return head is not None

    def size(self, sha256: str) -> int:
        if sha256 not in self._sizes:
            head = self._head(sha256)
            if head is None:
                raise NotFound("blob", sha256[:16], "run `adapt fsck`")
            self._sizes[sha256] = int(head["ContentLength"])
        return self._sizes[sha256]

    def put_file(self, src: str | Path, expected_sha256: str | None = None) -> tuple[str, int]:
        """Upload `src` unless the bucket holds its bytes already; return (sha256, size)."""
        sums = _hash_for_upload(Path(src))
        if expected_sha256 is not None and sums.sha256 != expected_sha256:
            raise IntegrityError(str(src), expected_sha256, sums.sha256)
        head = self._head(sums.sha256)
        # content-addressed: the same name is the same bytes, unless a server that writes in
        # place kept a cut upload (then its size is wrong and it is sent again)
        if head is not None and int(head["ContentLength"]) == sums.size:
            self._sizes[sums.sha256] = sums.size
            return sums.sha256, sums.size
        key = self.key(sums.sha256)
        if sums.size <= MULTIPART_THRESHOLD:
            self._put_single(src, key, sums)
        else:
            self._put_multipart(src, key, sums)
        self._sizes[sums.sha256] = sums.size
        return sums.sha256, sums.size

    def _put_single(self, src: str | Path, key: str, sums: _UploadSums) -> None:
        from botocore.exceptions import ClientError

        with self._remote(f"upload blob {sums.sha256[:12]}"), open(src, "rb") as body:
            try:
                self.client.put_object(
                    Bucket=self.bucket, Key=key, Body=body, ContentLength=sums.size,
                    ContentMD5=base64.b64encode(sums.md5).decode(),
                    ChecksumSHA256=base64.b64encode(bytes.fromhex(sums.sha256)).decode())
            except ClientError as error:
                code = error.response.get("Error", {}).get("Code")
                if code in ("BadDigest", "InvalidDigest", "XAmzContentChecksumMismatch"):
                    # the file changed between hashing and sending: nothing was stored
                    raise IntegrityError(str(src), sums.sha256, "bytes changed while uploading"
                                         ) from None
                raise

    def _put_multipart(self, src: str | Path, key: str, sums: _UploadSums) -> None:
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(multipart_threshold=MULTIPART_THRESHOLD,
                                multipart_chunksize=MULTIPART_CHUNK, max_concurrency=8)
        with self._remote(f"upload blob {sums.sha256[:12]}"):
            # each part's MD5 is checked by the ETag below: no extra SHA-256 pass per part
            self.client.upload_file(str(src), self.bucket, key, Config=config)
        head = self._head(sums.sha256)
        etag = str((head or {}).get("ETag", "")).strip('"')
        wrong = head is None or int(head["ContentLength"]) != sums.size
        if not wrong and "-" in etag and sums.multipart_etag is not None:
            wrong = etag != sums.multipart_etag
        if wrong:  # the file changed while it was sent: never leave wrong bytes under the name
            self._call("remove a bad upload", self.client.delete_object, Bucket=self.bucket,
                       Key=key)
            raise IntegrityError(str(src), sums.sha256, "bytes changed while uploading")

    def path(self, sha256: str) -> Path:
        """The blob's bytes in the local cache, fetched (and verified) when not there yet."""
        cached = self.cache.get(sha256)
        if cached is not None:
            return cached
        return self._fetch(sha256)

    def _fetch(self, sha256: str) -> Path:
        tmp = self.cache.new_temp()
        try:
            actual = self._download(sha256, tmp)
            if actual != sha256:
                raise IntegrityError(f"blob {sha256[:12]} in {self.describe()}", sha256, actual)
            return self.cache.admit(tmp, sha256)
        finally:
            tmp.unlink(missing_ok=True)

    def _download(self, sha256: str, dest: Path | None) -> str:
        """Stream the object (to `dest`, if given) and return the sha256 of what arrived."""
        from botocore.exceptions import ClientError

        h = hashlib.sha256()
        with self._remote(f"download blob {sha256[:12]}"):
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=self.key(sha256))
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    raise IntegrityError(f"blob {sha256[:12]}", sha256, "missing blob") from None
                raise
            body = response["Body"]
            out = open(dest, "wb") if dest is not None else None
            try:
                while chunk := body.read(CHUNK):
                    h.update(chunk)
                    if out is not None:
                        out.write(chunk)
            finally:
                if out is not None:
                    out.close()
                body.close()
        return h.hexdigest()

    def copy_out(self, sha256: str, dest: str | Path, verify: bool = True) -> None:
        """Write the blob to `dest` atomically from the cache, hash checked on the way (a
        cached copy that was edited is fetched again)."""
        cached = self.cache.get(sha256)
        if cached is not None:
            actual = _copy_hashed(cached, Path(dest), sha256 if verify else None)
            if not verify or actual == sha256:
                return
            self.cache.evict(sha256)
        # just fetched and hashed on arrival: copied without hashing it a second time
        _copy_hashed(self._fetch(sha256), Path(dest), None, hash_it=False)

    def verify(self, sha256: str) -> str | None:
        """Hash the object as the bucket serves it (not the cache)."""
        actual = self._download(sha256, None)
        return None if actual == sha256 else actual

    def __iter__(self) -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        with self._remote("list blobs"):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for obj in page.get("Contents", []):
                    rest = obj["Key"][len(self.prefix):]
                    sha = rest.replace("/", "", 1)
                    if len(rest) == 65 and rest[2] == "/" and _is_hex(sha):
                        self._sizes[sha] = int(obj["Size"])
                        yield sha

    def temp_files(self) -> list[Path]:
        return self.cache.temp_files()

    def remove(self, sha256: str) -> None:
        self._call(f"remove blob {sha256[:12]}", self.client.delete_object,
                   Bucket=self.bucket, Key=self.key(sha256))
        self._sizes.pop(sha256, None)
        self.cache.evict(sha256)

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (for `adapt init` and tests)."""
        from botocore.exceptions import ClientError

        with self._remote("open the bucket"):
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except ClientError:
                self.client.create_bucket(Bucket=self.bucket)


class _UploadSums:
    def __init__(self, sha256: str, md5: bytes, size: int, multipart_etag: str | None) -> None:
        self.sha256 = sha256
        self.md5 = md5
        self.size = size
        self.multipart_etag = multipart_etag


def _hash_for_upload(src: Path) -> _UploadSums:
    """sha256 and the MD5 the server will check (of the whole file, or the multipart ETag), in
    one read of the file; the MD5s run in a second thread (hashlib releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    multipart = src.stat().st_size > MULTIPART_THRESHOLD
    sha, md5 = hashlib.sha256(), hashlib.md5()
    parts = _PartMD5s()

    def md5_update(chunk: bytes) -> None:
        if multipart:
            parts.update(chunk)
        else:
            md5.update(chunk)

    size = 0
    read = 16 * CHUNK
    with open(src, "rb") as f, ThreadPoolExecutor(1) as pool:
        pending = None
        while chunk := f.read(read):
            if pending is not None:
                pending.result()
            pending = pool.submit(md5_update, chunk)
            sha.update(chunk)
            size += len(chunk)
        if pending is not None:
            pending.result()
    etag = parts.etag() if multipart else None
    return _UploadSums(sha.hexdigest(), md5.digest(), size, etag)


class _PartMD5s:
    """The MD5 of each MULTIPART_CHUNK-sized part, and the ETag S3 makes of them."""

    def __init__(self) -> None:
        self.digests: list[bytes] = []
        self.part = hashlib.md5()
        self.filled = 0

    def update(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view:  # a read need not end on a part boundary
            take = view[:MULTIPART_CHUNK - self.filled]
            self.part.update(take)
            self.filled += len(take)
            view = view[len(take):]
            if self.filled == MULTIPART_CHUNK:
                self.digests.append(self.part.digest())
                self.part, self.filled = hashlib.md5(), 0

    def etag(self) -> str | None:
        digests = self.digests + ([self.part.digest()] if self.filled else [])
        if len(digests) > _MAX_PARTS:  # s3transfer would choose bigger parts
            return None
        return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"


def _copy_hashed(src: Path, dest: Path, expected: str | None, hash_it: bool = True) -> str:
    """Copy `src` to `dest` through a temp file; return the sha256 of the bytes (when
    `hash_it`). `dest` is replaced only when they hash to `expected` (or it is None)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".tmp-{os.getpid()}-{dest.name}"
    h = hashlib.sha256()
    try:
        if not hash_it:
            shutil.copyfile(src, tmp)
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
            return ""
        with open(src, "rb") as f, open(tmp, "wb") as out:
            while chunk := f.read(CHUNK):
                h.update(chunk)
                out.write(chunk)
        digest = h.hexdigest()
        if expected is not None and digest != expected:
            tmp.unlink()
            return digest
        os.chmod(tmp, 0o644)  # the cache entry is read-only; the copy is the user's
        os.replace(tmp, dest)
        return digest
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _is_hex(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)

