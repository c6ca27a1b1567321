"""The address a request came from, for the sign-in throttle (django-axes calls ``client_address``).

Behind reverse proxies every request arrives from a proxy, so counting failures per REMOTE_ADDR would lock
everyone out together. With SLUICE_TRUSTED_PROXY_HOPS = N, the proxies each append the address they were
reached from to X-Forwarded-For (nginx: ``$proxy_add_x_forwarded_for``), so the N-th entry from the right is
the one the first trusted proxy saw; whatever a client wrote further left is ignored. 0 (the default): the
peer address, for a server that clients reach directly.
"""

from __future__ import annotations

from django.conf import settings


def client_address(request) -> str:
    hops = settings.SLUICE_TRUSTED_PROXY_HOPS
    if hops:
        forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
        if len(forwarded) >= hops:
            return forwarded[-hops]
    return request.META.get("REMOTE_ADDR", "")
