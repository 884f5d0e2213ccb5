"""Errors as HTTP: the ErrorCode -> status table, the JSON error body, and the app's exception handlers.

Every error the portal answers with has the same JSON body, ``{"error": message, "hint": fix}`` (plus
``details`` for request validation errors), so a script can show it as the CLI would. HTML pages get the
same message and hint rendered in the error template instead.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import ErrorCode, ModelBuilderError

logger = logging.getLogger(__name__)

#: The HTTP status of each error code (MLflow's ERROR_CODE_TO_HTTP_STATUS).
ERROR_CODE_TO_HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_ARGUMENT: 400,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.ALREADY_EXISTS: 409,
    ErrorCode.FAILED_PRECONDITION: 409,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.INTERNAL: 500,
}

STATUS_HINTS = {
    404: "Check the address; the API is described at /api-docs and /openapi.json.",
    405: "This endpoint does not accept that HTTP method; see /api-docs.",
    413: "Upload a smaller image: resize or re-compress it (JPEG or PNG, a few megabytes at most).",
}


class PortalHTTPError(ModelBuilderError):
    """An error that only the portal has, with its own HTTP status (403, 413, 415...)."""

    def __init__(self, status_code: int, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status_code = status_code


def status_for(error: ModelBuilderError) -> int:
    """The HTTP status for a modelbuilder error."""
    if isinstance(error, PortalHTTPError):
        return error.status_code
    return ERROR_CODE_TO_HTTP_STATUS.get(error.code, 500)


def error_body(message: str, hint: str | None = None, **extra: Any) -> dict[str, Any]:
    """The JSON body of every error response."""
    return {"error": message, "hint": hint, **extra}


def error_response(status_code: int, message: str, hint: str | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse(error_body(message, hint, **extra), status_code=status_code)


def wants_html(request: Request) -> bool:
    """True for page requests (not /api, not static files, not fragments fetched by scripts)."""
    path = request.url.path
    if path.startswith(("/api/", "/static/")) or path in ("/api", "/openapi.json") or "/_" in path:
        return False
    return "text/html" in request.headers.get("accept", "text/html")


def install_error_handlers(app: FastAPI, templates: Jinja2Templates) -> None:
    """Answer modelbuilder errors, HTTP errors and validation errors with a message and a hint."""

    def respond(request: Request, status_code: int, message: str, hint: str | None, **extra: Any) -> Response:
        if wants_html(request):
            return templates.TemplateResponse(
                request,
                "error.html",
                {"status_code": status_code, "message": message, "hint": hint},
                status_code=status_code,
            )
        return error_response(status_code, message, hint, **extra)

    async def on_modelbuilder_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ModelBuilderError)
        status_code = status_for(exc)
        if status_code >= 500:
            logger.error("%s %s failed: %s", request.method, request.url.path, exc, exc_info=exc)
        return respond(request, status_code, exc.message, exc.hint)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404 and exc.detail in (None, "Not Found"):
            message = f"Nothing here: {request.url.path}"
        else:
            message = str(exc.detail)
        response = respond(request, exc.status_code, message, STATUS_HINTS.get(exc.status_code))
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        return response

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        problems = []
        for item in exc.errors():
            where = ".".join(str(part) for part in item.get("loc", ()))
            problems.append(f"{where}: {item.get('msg', 'invalid')}")
        message = "The request is not valid: " + "; ".join(problems)
        details = [
            {"loc": [str(part) for part in item.get("loc", ())], "msg": str(item.get("msg", ""))}
            for item in exc.errors()
        ]
        hint = "See /api-docs for the parameters of each endpoint."
        return respond(request, 422, message, hint, details=details)

    app.add_exception_handler(ModelBuilderError, on_modelbuilder_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
