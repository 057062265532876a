"""Media blobs in an S3-compatible bucket with presigned URLs (aioboto3)."""

from omninudge_adapters.s3.blobs import PART_SIZE, S3BlobStore, open_s3_blob_store

__all__ = ["PART_SIZE", "S3BlobStore", "open_s3_blob_store"]
