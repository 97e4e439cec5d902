"""One JSON error envelope for every failure: {"error": {"code": ..., "message": ...}}."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from bot.usecases.errors import UserError
from engine.images import BadImage
from engine.jobs.policy import PermissionDenied
from engine.runtime.diffusion.errors import InvalidRequest
from engine.store.jobs import JobError, JobNotFound, JobStateError, NotJobOwner, QuotaExceeded

CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
         409: "conflict", 413: "too_large", 415: "unsupported_media_type", 422: "invalid_request",
         429: "rate_limited", 500: "internal_error", 503: "unavailable"}  # fmt: skip


class ApiError(HTTPException):
    """An HTTP error with a machine-readable code (and optional headers such as Retry-After)."""

    def __init__(
        self, status: int, message: str, code: str | None = None, headers: dict | None = None
    ) -> None:
        super().__init__(status, message, headers)
        self.code = code or CODES.get(status, "error")


def envelope(status: int, message: str, code: str | None = None, headers: dict | None = None) -> JSONResponse:
    """The JSON error response."""
    body = {"error": {"code": code or CODES.get(status, "error"), "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body", "query", "path"))
        parts.append(f"{loc}: {err.get('msg', 'invalid')}" if loc else str(err.get("msg", "invalid")))
    return "; ".join(parts) or "invalid request"


# (exception type, status, code): the first match wins
MAPPED: tuple[tuple[type[BaseException], int, str], ...] = (
    (QuotaExceeded, 429, "quota_exceeded"),
    (PermissionDenied, 403, "forbidden"),
    (NotJobOwner, 404, "not_found"),  # another user's job is not shown to exist
    (JobNotFound, 404, "not_found"),
    (JobStateError, 409, "conflict"),
    (BadImage, 400, "bad_image"),
    (UserError, 400, "bad_request"),
    (InvalidRequest, 400, "bad_request"),
    (JobError, 429, "rate_limited"),  # the queue refused the job (its limits)
)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every HTTPException, validation error and known user-facing error with the envelope."""

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        return envelope(exc.status_code, str(exc.detail), getattr(exc, "code", None), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return envelope(422, _validation_message(exc))

    for exc_type, status, code in MAPPED:

        async def _mapped(_: Request, exc: Exception, status: int = status, code: str = code) -> JSONResponse:
            return envelope(status, str(exc) or code, code)

        app.add_exception_handler(exc_type, _mapped)
