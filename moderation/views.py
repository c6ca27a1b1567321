"""``POST /v1/moderations``, OpenAI-compatible, keyed with the ``moderation`` scope and metered."""

from __future__ import annotations

import uuid

from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.response import Response

from accounts.authentication import HasScope
from accounts.metering import MeteredViewMixin
from accounts.models import SCOPE_MODERATION
from moderation.openapi import ModerationResponseSerializer
from moderation.serializers import ModerationRequestSerializer
from moderation.services import MODERATION_MODEL, moderation_run
from platform.errors import KEYED, RETRY_AFTER, WITH_BODY, error_responses


@extend_schema(
    request=ModerationRequestSerializer, tags=["moderation"], parameters=[RETRY_AFTER],
    responses={200: ModerationResponseSerializer, **error_responses(*KEYED, *WITH_BODY)},
)
class ModerationViewSet(MeteredViewMixin, viewsets.ViewSet):
    """``POST /v1/moderations``, OpenAI's: a score per category for each input, flagged by the account's policy."""

    permission_classes = [HasScope]
    required_scope = SCOPE_MODERATION
    usage_endpoint = "moderations"
    opens_usage = True

    def create(self, request):
        serializer = ModerationRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        results, headers = moderation_run(
            key=request.auth, request_id=request.request_id, texts=serializer.validated_data["input"]
        )
        body = {"id": f"modr-{uuid.uuid4().hex}", "model": MODERATION_MODEL, "results": results}
        return Response(body, headers=headers)
