"""Requests-per-minute per API key as a DRF throttle (runs after authentication, before the view)."""

from __future__ import annotations

from rest_framework.throttling import BaseThrottle

from accounts import limits
from accounts.models import ApiKey
from platform.errors import ApiError


class KeyRequestRateThrottle(BaseThrottle):
    """Counts every keyed request against its key's requests per minute; refuses with 429 past it.

    The counted state is left on the request (``ratelimit_requests``) so every keyed response can carry
    the x-ratelimit-*-requests headers.
    """

    def allow_request(self, request, view):
        key = request.auth
        if not isinstance(key, ApiKey):
            return True
        state = limits.requests_count(key=key, request=request._request)
        request._request.ratelimit_requests = state
        if state is not None and state.exceeded:
            raise ApiError(
                f"Rate limit reached for requests per minute: limit {state.limit}. "
                f"Retry in {limits.retry_after(state)} s.",
                status_code=429,
                type="requests",
                code="rate_limit_exceeded",
                headers={"Retry-After": limits.retry_after(state)},
            )
        return True
