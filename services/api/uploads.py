"""Stream a multipart upload to a temporary file with a size limit, hashing it on the way.

Starlette's form parser would spool the whole body before the handler sees it; parsing the stream
here lets an oversized upload stop at the limit with 413.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field

from fastapi import Request
from python_multipart.multipart import MultipartParser, parse_options_header

from services.api.errors import ApiError

MAX_FIELD_BYTES = 64 * 1024


@dataclass
class Upload:
    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    path: str | None = None  # temporary file holding the uploaded bytes; the caller removes it
    size: int = 0
    sha256: str = ""

    def discard(self) -> None:
        if self.path and os.path.exists(self.path):
            os.unlink(self.path)


class _Receiver:
    def __init__(self, upload: Upload, max_bytes: int, temp_dir: str | None):
        self.upload, self.max_bytes, self.temp_dir = upload, max_bytes, temp_dir
        self.header_name, self.header_value, self.headers = b"", b"", {}
        self.field_name: str | None = None
        self.field_value = bytearray()
        self.file = None
        self.hasher = None

    def on_part_begin(self) -> None:
        self.headers, self.field_name, self.field_value, self.file = {}, None, bytearray(), None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.headers[self.header_name.lower()] = self.header_value
        self.header_name, self.header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.headers.get(b"content-disposition", b""))
        self.field_name = options.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" in options:
            if self.upload.path is not None:
                raise ApiError(400, "Send exactly one file per upload", param="file", code="too_many_files")
            self.upload.filename = options[b"filename"].decode("utf-8", "replace")
            descriptor, self.upload.path = tempfile.mkstemp(prefix="alignd-upload-", suffix=".jsonl",
                                                            dir=self.temp_dir)
            self.file = os.fdopen(descriptor, "wb")
            self.hasher = hashlib.sha256()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self.file is None:
            self.field_value += chunk
            if len(self.field_value) > MAX_FIELD_BYTES:
                raise ApiError(400, f"Form field '{self.field_name}' is too long", param=self.field_name)
            return
        self.upload.size += len(chunk)
        if self.upload.size > self.max_bytes:
            raise ApiError(413, f"File is larger than the limit of {self.max_bytes} bytes", param="file",
                           code="file_too_large")
        self.file.write(chunk)
        self.hasher.update(chunk)

    def on_part_end(self) -> None:
        if self.file is not None:
            self.file.close()
            self.upload.sha256 = self.hasher.hexdigest()
            self.file = None
        elif self.field_name:
            self.upload.fields[self.field_name] = self.field_value.decode("utf-8", "replace")

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


async def receive_upload(request: Request, max_bytes: int, temp_dir: str | None = None) -> Upload:
    """Parse a multipart/form-data body; raises ApiError (400, 413) and leaves no temporary file behind."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in options:
        raise ApiError(400, "Upload files as multipart/form-data with a 'file' part", param="file",
                       code="invalid_content_type")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes + MAX_FIELD_BYTES:
        raise ApiError(413, f"File is larger than the limit of {max_bytes} bytes", param="file",
                       code="file_too_large")
    upload = Upload()
    receiver = _Receiver(upload, max_bytes, temp_dir)
    callbacks = {name: getattr(receiver, name) for name in (
        "on_part_begin", "on_header_field", "on_header_value", "on_header_end", "on_headers_finished",
        "on_part_data", "on_part_end")}
    parser = MultipartParser(options[b"boundary"], callbacks)
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except ApiError:
        receiver.close()
        upload.discard()
        raise
    except Exception as error:  # malformed multipart framing
        receiver.close()
        upload.discard()
        raise ApiError(400, f"Malformed multipart body: {error}", param="file", code="invalid_multipart") from None
    return upload
