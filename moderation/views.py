"""``POST /v1/moderations``, OpenAI-compatible, keyed with the ``moderation`` scope and metered."""

from __future__ import annotations

import uuid

from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.response import Response

from accounts.authentication import HasScope
from accounts.metering import MeteredViewMixin
from accounts.models import SCOPE_MODERATION
from moderation.serializers import ModerationRequestSerializer
from moderation.services import MODERATION_MODEL, moderation_run


@extend_schema(request=ModerationRequestSerializer, responses=dict, tags=["moderation"])
class ModerationViewSet(MeteredViewMixin, viewsets.ViewSet):
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
