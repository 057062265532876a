"""Media blobs in a local directory with HMAC-signed URLs served by the server."""

from omninudge_adapters.localfs.blobs import BlobStream, LocalFsBlobStore, content_type_for_key

__all__ = ["BlobStream", "LocalFsBlobStore", "content_type_for_key"]
