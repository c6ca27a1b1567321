"""``POST /v1/embeddings``: a thin DRF viewset (validate the body, call the service, answer its body)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.response import Response

from accounts.authentication import HasScope
from accounts.metering import MeteredViewMixin
from accounts.models import SCOPE_INFERENCE
from inference import embedding_services
from inference.embedding_serializers import EmbeddingListSerializer, EmbeddingRequestSerializer
from inference.openapi import TASK_ERRORS
from platform.errors import RETRY_AFTER


@extend_schema(
    description="OpenAI's embeddings: one unit-length vector per input text.",
    request=EmbeddingRequestSerializer, tags=["embeddings"], parameters=[RETRY_AFTER],
    responses={200: EmbeddingListSerializer, **TASK_ERRORS},
)
class EmbeddingViewSet(MeteredViewMixin, viewsets.ViewSet):
    permission_classes = [HasScope]
    required_scope = SCOPE_INFERENCE
    opens_usage = True
    usage_endpoint = embedding_services.ENDPOINT_EMBEDDINGS

    def create(self, request):
        serializer = EmbeddingRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        body, headers = embedding_services.embeddings_create(
            key=request.auth, request_id=request.request_id, texts=serializer.validated_data["input"],
            model=serializer.validated_data.get("model"), encoding_format=serializer.validated_data["encoding_format"],
        )
        return Response(body, headers=headers)
