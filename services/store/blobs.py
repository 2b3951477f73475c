"""File storage under ALIGND_STORAGE_URI: a local folder or any fsspec URI (s3://, gs://, memory://)."""

from __future__ import annotations

import posixpath
from typing import IO

import fsspec


class BlobStore:
    """Objects addressed by relative keys (``files/file-abc.jsonl``) under one root."""

    def __init__(self, root_uri: str):
        self.root_uri = root_uri
        self.fs, self.root = fsspec.core.url_to_fs(root_uri)
        self.is_local = "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))
        self.fs.makedirs(self.root, exist_ok=True)

    def _path(self, key: str) -> str:
        return posixpath.join(self.root, key)

    def uri(self, key: str) -> str:
        """Where `key` lives, as a local path or a protocol URI that workers can open with fsspec."""
        path = self._path(key)
        return path if self.is_local else self.fs.unstrip_protocol(path)

    def put_file(self, local_path: str, key: str) -> str:
        """Copy a local file to `key`; returns its URI."""
        self.fs.makedirs(posixpath.dirname(self._path(key)), exist_ok=True)
        self.fs.put_file(local_path, self._path(key))
        return self.uri(key)

    def open(self, key: str, mode: str = "rb") -> IO[bytes]:
        return self.fs.open(self._path(key), mode)

    def delete(self, key: str) -> None:
        if self.fs.exists(self._path(key)):
            self.fs.rm(self._path(key))
