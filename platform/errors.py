"""One error format for the whole API: OpenAI's ``{"error": {"message", "type", "param", "code"}}``.

DRF exceptions raised in views pass through ``api_exception_handler``; Django's own 404/500 (paths outside
DRF, crashes) go through ``not_found`` and ``server_error``, so a client never sees an HTML error page.
A database that cannot be reached (PostgreSQL down, restarting, out of connections) is a 503
``database_unavailable`` with ``Retry-After`` from both, not a 500: the request changed nothing and a retry
will work once the database is back.
"""

from __future__ import annotations

import logging
import sys

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import Http404, JsonResponse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response

logger = logging.getLogger(__name__)


class ApiError(exceptions.APIException):
    """An error with OpenAI's fields. Raise it from services; the handler renders it."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int = status.HTTP_400_BAD_REQUEST,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(detail=message)
        self.status_code = status_code
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}


def error_body(message: str, *, type: str, code: str | None = None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def _first_validation_error(detail, path: str = "") -> tuple[str | None, str]:
    """DRF nests errors by field; OpenAI reports one, with the field's dotted path as ``param``."""
    if isinstance(detail, dict):
        for field, sub in detail.items():
            if field == "non_field_errors":
                name = path
            elif isinstance(field, int):
                name = f"{path}[{field}]"
            else:
                name = f"{path}.{field}" if path else str(field)
            return _first_validation_error(sub, name)
    if isinstance(detail, list):
        for index, sub in enumerate(detail):
            if isinstance(sub, (dict, list)):
                return _first_validation_error(sub, f"{path}[{index}]")
            return (path or None), str(sub)
    return (path or None), str(detail)


_STATUS_TYPES = {
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", "permission_denied"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    406: ("invalid_request_error", "not_acceptable"),
    413: ("invalid_request_error", "request_too_large"),
    415: ("invalid_request_error", "unsupported_media_type"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}


# What a database that cannot be reached raises (connection refused or lost, server shutting down).
DATABASE_UNAVAILABLE = (OperationalError, InterfaceError)
DATABASE_UNAVAILABLE_CODE = "database_unavailable"


def _database_unavailable() -> tuple[dict, dict[str, str]]:
    body = error_body("The service's database is unavailable; retry shortly.", type="server_error",
                      code=DATABASE_UNAVAILABLE_CODE)
    return body, {"Retry-After": str(settings.SLUICE_DB_RETRY_AFTER_S)}


def api_exception_handler(exc, context):
    if isinstance(exc, Http404):
        exc = exceptions.NotFound("No such object.")
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    if isinstance(exc, ApiError):
        body = error_body(exc.message, type=exc.type, code=exc.code, param=exc.param)
        return Response(body, status=exc.status_code, headers=exc.headers)
    if isinstance(exc, RequestDataTooBig):
        body = error_body("Request body is too large.", type="invalid_request_error", code="request_too_large")
        return Response(body, status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    if isinstance(exc, exceptions.ValidationError):
        param, message = _first_validation_error(exc.detail)
        message = f"{param}: {message}" if param else message
        return Response(error_body(message, type="invalid_request_error", param=param), status=400)
    if isinstance(exc, exceptions.ParseError):
        return Response(error_body(f"Invalid JSON body: {exc.detail}", type="invalid_request_error"), status=400)
    if isinstance(exc, (exceptions.NotAuthenticated, exceptions.AuthenticationFailed)):
        message = str(exc.detail) if isinstance(exc, exceptions.AuthenticationFailed) else (
            "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'."
        )
        return Response(error_body(message, type="invalid_request_error", code="invalid_api_key"), status=401)
    if isinstance(exc, exceptions.APIException):
        type_, code = _STATUS_TYPES.get(exc.status_code, ("invalid_request_error", None))
        headers = {}
        if getattr(exc, "wait", None):
            headers["Retry-After"] = str(int(exc.wait))
        return Response(error_body(str(exc.detail), type=type_, code=code), status=exc.status_code, headers=headers)
    if isinstance(exc, DATABASE_UNAVAILABLE):
        body, headers = _database_unavailable()
        return Response(body, status=503, headers=headers)
    logger.exception("Unhandled error in %s", context.get("view").__class__.__name__ if context else "?")
    return Response(error_body("The server had an error processing your request.", type="server_error"), status=500)


def not_found(request, exception=None):
    return JsonResponse(error_body(f"Unknown URL: {request.path}", type="invalid_request_error", code="not_found"), status=404)


def server_error(request):
    # Django calls this while handling the exception (middleware, authentication outside DRF, a crash).
    if isinstance(sys.exc_info()[1], DATABASE_UNAVAILABLE):
        body, headers = _database_unavailable()
        return JsonResponse(body, status=503, headers=headers)
    return JsonResponse(error_body("The server had an error processing your request.", type="server_error"), status=500)


def bad_request(request, exception=None):
    return JsonResponse(error_body("Bad request.", type="invalid_request_error"), status=400)


def permission_denied(request, exception=None):
    return JsonResponse(error_body("Permission denied.", type="permission_error"), status=403)


# The same body in the OpenAPI schema: one shared component, and the statuses each operation can answer.


class ErrorDetailSerializer(serializers.Serializer):
    message = serializers.CharField()
    type = serializers.CharField()
    param = serializers.CharField(allow_null=True)
    code = serializers.CharField(allow_null=True)


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


ERROR_STATUSES = {
    400: "An invalid field (named in `param`), unknown model, over-long prompt, invalid JSON, or a prompt "
         "blocked by the content policy (`content_filter`); an upstream refusal (`upstream_rejected`).",
    401: "A missing, malformed, unknown, revoked, expired or suspended key, or an inactive account "
         "(`invalid_api_key`).",
    403: "The key lacks this endpoint's scope (`permission_denied`) or may not use the model (`model_not_allowed`).",
    404: "No such object here (`not_found`, `model_not_found`).",
    409: "The key is expired, suspended or already rotated (`key_expired`, `key_suspended`, "
         "`key_already_rotated`), or its expiry can no longer change.",
    413: "The body is over `SLUICE_MAX_BODY_BYTES` (`request_too_large`).",
    415: "The body is not JSON (`unsupported_media_type`).",
    429: "Requests or tokens per minute (`rate_limit_exceeded`, with `Retry-After`), or a spent daily or monthly "
         "quota (`insufficient_quota`, `x-should-retry: false`).",
    502: "A remote model's server failed (`upstream_error`).",
    503: "Busy or unavailable for a moment: the engine's queue is full (`engine_overloaded`), the database or a "
         "check cannot be reached, or no upstream server can (`upstream_unavailable`, `upstream_overloaded`); "
         "`Retry-After` says when to retry.",
    504: "A remote model's server was silent too long (`upstream_timeout`).",
}
KEYED = (401, 403, 429, 503)  # what any keyed request can be answered, whatever it asks
WITH_BODY = (400, 413, 415)  # and one that sends a JSON body


def error_responses(*statuses: int) -> dict[int, OpenApiResponse]:
    """``extend_schema(responses=...)`` entries for these error statuses, each with the one error body."""
    return {code: OpenApiResponse(ErrorSerializer, description=ERROR_STATUSES[code])
            for code in sorted(set(statuses))}

RETRY_AFTER = OpenApiParameter("Retry-After", str, location=OpenApiParameter.HEADER, response=[429, 503],
                               description="Seconds to wait before retrying.")
