"""One error shape for every failure: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 405: "invalid_request_error", 409: "conflict_error",
               413: "invalid_request_error", 422: "invalid_request_error", 500: "server_error",
               503: "service_unavailable"}


class ApiError(Exception):
    """An error a handler raises on purpose; becomes the JSON error body with `status`."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type or ERROR_TYPES.get(status, "invalid_request_error")


def not_found(kind: str, identifier: str, param: str | None = None) -> ApiError:
    return ApiError(404, f"No {kind} with id '{identifier}'", param=param, code=f"{kind}_not_found")


def bad_request(message: str, param: str | None = None, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


def error_response(status: int, message: str, *, param: str | None = None, code: str | None = None,
                   type: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": type or ERROR_TYPES.get(status, "invalid_request_error"),
                      "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def _location(loc: tuple) -> str | None:
    """`stages[0].epochs`: list positions as the request writes them, as every other error's param does."""
    path = ""
    for part in loc:
        if part in ("body", "query", "path", "header"):
            continue
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path or None


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, error: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
        return error_response(error.status, error.message, param=error.param, code=error.code, type=error.type,
                              headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        param = _location(tuple(first.get("loc", ())))
        kind = first.get("type", "")
        if kind == "extra_forbidden":
            message = f"{param}: unknown field"
        elif kind == "json_invalid":
            message, param = "The request body is not valid JSON", None
        elif tuple(first.get("loc", ())) == ("body",) and kind == "missing":
            message, param = "The request body is empty: send a JSON object (Content-Type: application/json)", None
        elif tuple(first.get("loc", ())) == ("body",) and kind in ("model_attributes_type", "dict_type"):
            # A form-encoded or plain-text body reaches validation as a string.
            message, param = "The request body must be a JSON object (Content-Type: application/json)", None
        else:
            message = f"{param}: {first.get('msg', 'invalid value')}" if param else first.get("msg", "invalid request")
        return error_response(400, message, param=param, code="invalid_value" if kind != "missing" else "missing")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, error: StarletteHTTPException) -> JSONResponse:
        message = {404: "Unknown URL", 405: "Method not allowed for this URL"}.get(error.status_code, str(error.detail))
        return error_response(error.status_code, message, code={404: "unknown_url", 405: "method_not_allowed",
                                                                 413: "request_too_large"}
                              .get(error.status_code), headers=getattr(error, "headers", None))

    @app.exception_handler(DataError)
    async def _unstorable_value(_request: Request, error: DataError) -> JSONResponse:
        # The database refused a value the request carried (a NUL character, a number or string out of the
        # column's range): bad input that validation let through, so the client hears 400, not 500.
        log.info("database refused a request value: %s", error.orig)
        message = str(error.orig).splitlines()[0] if error.orig is not None else "invalid value"
        return error_response(400, f"A value in the request cannot be stored: {message}", code="invalid_value")
    # Unexpected exceptions: services/api/guards.py (answered there without dropping the connection).
