"""The two busiest requests, listing and creating jobs, handed straight to their route functions.

A pure ASGI layer inside the guards: it skips FastAPI's route matching, exception middleware, exit stacks and
dependency solving, which together cost about a third of a job-list request's CPU. Nothing else changes:

- the functions called are the routes' own (services/api/routes/jobs.py), and what they raise is answered by the
  app's own exception handlers, as FastAPI's exception middleware would;
- a create is taken here only when FastAPI would have accepted its input unchanged: the caller's key already in
  the key cache, ``Content-Type: application/json``, a body that JobCreate validates, an Idempotency-Key within
  its limit. Any other request (no or unknown key, another content type, bad JSON or fields, HEAD, a trailing
  slash, SQLite, whose key cache is off) goes on to FastAPI, its body replayed, and gets exactly the answer it
  got before: the same 401, 400 or 405 in the same order.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.api.auth import cached_caller
from services.api.errors import ApiError
from services.api.routes.jobs import IDEMPOTENCY_KEY_MAX, create_job, list_jobs
from services.api.schemas import JobCreate

JOBS_PATH = "/v1/fine_tuning/jobs"


class HotJobRoutes:
    """GET and POST on /v1/fine_tuning/jobs without FastAPI's per-request machinery (see the module docstring)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != JOBS_PATH or scope.get("root_path"):
            await self.app(scope, receive, send)
        elif scope["method"] == "GET":
            request = Request(scope, receive, send)
            await _answer(request, lambda: list_jobs(request), send)
        elif scope["method"] == "POST":
            await self._create(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _create(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        context = scope["app"].state.alignd
        headers = request.headers
        try:
            caller = cached_caller(request, context.keys, context.settings.admin_key)
        except ApiError:
            caller = None  # no or a malformed key: FastAPI's dependency answers it
        if (caller is None or headers.get("content-type") != "application/json"
                or "content-length" not in headers):
            await self.app(scope, receive, send)
            return
        try:
            body = await request.body()
        except HTTPException as error:  # the body size guard's 413, as FastAPI re-raises it
            await _respond(request, error, send)
            return
        except Exception:  # as FastAPI answers a body it could not read
            await _respond(request, HTTPException(400, "There was an error parsing the body"), send)
            return
        idempotency_key = headers.get("idempotency-key")
        fields = _validated(body)
        if fields is None or (idempotency_key is not None and len(idempotency_key) > IDEMPOTENCY_KEY_MAX):
            await self.app(scope, _replay(body, receive), send)
            return
        await _answer(request, lambda: create_job(fields, request, caller[0], idempotency_key), send)


def _validated(body: bytes) -> JobCreate | None:
    """The body as FastAPI would pass it (json.loads, then the model), or None where FastAPI would refuse it."""
    if not body:
        return None
    try:
        return JobCreate.model_validate(json.loads(body))
    except Exception:  # bad JSON, invalid fields, nesting too deep to parse (RecursionError): FastAPI's answer
        return None


def _replay(body: bytes, receive: Receive) -> Receive:
    """`receive` for the ordinary path after the body was read here: the body once, then the real channel."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _answer(request: Request, handler: Callable[[], Awaitable[Response]], send: Send) -> None:
    try:
        response = await handler()
    except Exception as error:
        await _respond(request, error, send)
        return
    await response(request.scope, request.receive, send)


async def _respond(request: Request, error: Exception, send: Send) -> None:
    """Answer `error` with the app's handler for its class, as Starlette's exception middleware looks it up;
    without one it propagates (the guard's 500)."""
    handlers = request.scope["app"].exception_handlers
    for kind in type(error).__mro__:
        if kind in handlers and kind is not Exception:
            response = await handlers[kind](request, error)
            await response(request.scope, request.receive, send)
            return
    raise error
