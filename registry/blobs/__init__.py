"""Where a registry's bytes live: a local directory (the default) or an S3-compatible bucket.

`open_blob_store(settings)` picks the backend from ADAPT_BLOB_URL (or the config file that
`adapt init` writes). Both backends implement `BlobStore` (see `base`); a bucket is read through
a size-limited local cache (`cache`), and every read that leaves the store is checked against
the blob's sha256.
"""

from registry.blobs.base import BlobStore, open_blob_store

__all__ = ["BlobStore", "open_blob_store"]
