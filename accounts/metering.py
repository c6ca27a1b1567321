"""Every keyed request leaves one usage row, whatever its outcome."""

from __future__ import annotations

from accounts.models import ApiKey
from accounts.services import usage_record_refused


class MeteredViewMixin:
    """For DRF views: a keyed request that ended without opening its own usage row (bad input, refused by a
    limit, an error) still gets one, charged nothing. Views that admit a request open and settle their row
    through accounts.services and set ``request.usage_opened``."""

    usage_endpoint: str = ""

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        key = getattr(request, "_auth", None)
        if isinstance(key, ApiKey) and not getattr(request._request, "usage_opened", False):
            error_code = ""
            data = getattr(response, "data", None)
            if isinstance(data, dict) and isinstance(data.get("error"), dict):
                error_code = data["error"].get("code") or data["error"].get("type") or ""
            usage_record_refused(
                key=key,
                request_id=request._request.request_id,
                endpoint=self.usage_endpoint,
                status_code=response.status_code,
                error_code=error_code,
            )
        return response
