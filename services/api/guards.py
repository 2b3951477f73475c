"""Pure ASGI guards around the app: a size limit on request bodies and a 500 that keeps the connection open.

Pure ASGI (not Starlette's BaseHTTPMiddleware) so they cost a function call per request, not a task.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.api.errors import error_response

log = logging.getLogger(__name__)

# Job, pipeline and key requests are a few KB; a larger JSON body is a mistake (a dataset pasted into
# `metadata`) that would otherwise be read and parsed whole before validation refuses it.
MAX_JSON_BODY_BYTES = 1024 * 1024
# Uploads stream to storage under their own limit (ALIGND_MAX_UPLOAD_BYTES, services/api/uploads.py).
UNLIMITED_PATHS = ("/v1/files",)
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def install_guards(app: FastAPI) -> None:
    """The guard is added last, so it is the outer one and also answers for a failure in the size limit."""
    app.add_middleware(BodySizeLimit)
    app.add_middleware(UnexpectedErrorGuard)


def _too_large(limit: int) -> HTTPException:
    return HTTPException(413, f"The request body is larger than {limit // 1024} KiB; request bodies are JSON "
                              "objects of a few KB (files go to POST /v1/files)")


class BodySizeLimit:
    """413 for a request body over `limit` bytes: at once from Content-Length, or while a chunked body arrives."""

    def __init__(self, app: ASGIApp, limit: int = MAX_JSON_BODY_BYTES):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS or scope["path"].startswith(
                UNLIMITED_PATHS):
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                error = _too_large(self.limit)
                await error_response(413, error.detail, code="request_too_large")(scope, receive, send)
                return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise _too_large(self.limit)  # rendered by the app's HTTPException handler
            return message

        await self.app(scope, counting_receive, send)


class UnexpectedErrorGuard:
    """Answers an unhandled exception with the JSON 500 and does not re-raise it.

    Starlette's outermost middleware re-raises after answering, and uvicorn then closes the keep-alive
    connection, so a client's next request on it (the openai SDK reuses connections) failed with a
    connection error. A failure after the response started still propagates: nothing else can be sent."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            if started:
                raise
            log.exception("unhandled error in %s %s", scope["method"], scope["path"])
            await error_response(500, "Internal server error; the details are in the server log",
                                 code="internal_error")(scope, receive, send)
