"""What every keyed response gets: a usage row, whatever the outcome, and the rate-limit headers."""

from __future__ import annotations

from accounts import limits
from accounts.models import ApiKey
from accounts.services import usage_record_refused
from platform.errors import DATABASE_UNAVAILABLE_CODE


class MeteredViewMixin:
    """For DRF views serving keyed requests.

    A request that ended without opening its own usage row (bad input, refused by a limit, an error) still
    gets one, charged nothing. Views whose successful requests open and settle their own row through
    accounts.services (``request_admit``/``request_settle``) set ``opens_usage``.
    """

    usage_endpoint: str = ""
    opens_usage: bool = False

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        key = getattr(request, "_auth", None)
        if not isinstance(key, ApiKey):
            return response
        django_request = request._request
        if response.status_code >= 400 or not self.opens_usage:
            error_code = ""
            data = getattr(response, "data", None)
            if isinstance(data, dict) and isinstance(data.get("error"), dict):
                error_code = data["error"].get("code") or data["error"].get("type") or ""
            if error_code == DATABASE_UNAVAILABLE_CODE:  # nothing can be written; nothing was charged
                add_limit_headers(response, key=key, request=django_request)
                return response
            usage_record_refused(
                key=key,
                request_id=django_request.request_id,
                endpoint=self.usage_endpoint,
                status_code=response.status_code,
                error_code=error_code,
            )
        add_limit_headers(response, key=key, request=django_request)
        return response


def add_limit_headers(response, *, key: ApiKey, request) -> None:
    requests_state = getattr(request, "ratelimit_requests", None)
    tokens_state = None if "x-ratelimit-limit-tokens" in response else limits.tokens_peek(key=key)
    for name, value in limits.limit_headers(requests=requests_state, tokens=tokens_state).items():
        response[name] = value
