"""Thin DRF viewsets: validate the body, call one service, serialize the result."""

from __future__ import annotations

from django.conf import settings
from django.db import connection
from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import HasScope
from accounts.metering import MeteredViewMixin
from accounts.models import SCOPE_INFERENCE
from inference import openapi, responses, serializers, services, task_services
from inference.embedding_model import EMBEDDING_MODELS
from inference.engines.factory import engine_status
from inference.warm_up import warm_up_in_background
from inference.registry import available_models
from inference.streaming import sse_chunks, sse_response
from platform.errors import KEYED, RETRY_AFTER, ApiError, error_responses
from platform.parsers import JSONParser


class JSONBodyAsFormParser(JSONParser):
    """Reads a JSON body sent with curl's default form content type (``curl -d '{...}'``)."""

    media_type = "application/x-www-form-urlencoded"


class GenerationViewSet(MeteredViewMixin, viewsets.ViewSet):
    """Shared by the generation endpoints; subclasses name their serializer, job builder and body shapes."""

    permission_classes = [HasScope]
    required_scope = SCOPE_INFERENCE
    opens_usage = True
    request_serializer = None
    build_job = None
    whole_body = None
    stream_chunks = None

    def create(self, request):
        serializer = self.request_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        job = type(self).build_job(data=serializer.validated_data)
        if serializer.validated_data.get("stream"):
            running = services.generation_start(key=request.auth, request_id=request.request_id, job=job)
            return sse_response(sse_chunks(type(self).stream_chunks(running)), headers=running.headers)
        result, headers = services.generation_complete(key=request.auth, request_id=request.request_id, job=job)
        return Response(type(self).whole_body(result, model=job.model), headers=headers)


@extend_schema(
    description="OpenAI's chat completion, whole or streamed (`stream: true`).",
    request=serializers.ChatCompletionRequestSerializer, tags=["generation"], parameters=[RETRY_AFTER],
    responses={(200, "application/json"): openapi.ChatCompletionSerializer, (200, "text/event-stream"): openapi.STREAM,
               **openapi.GENERATION_ERRORS},
)
class ChatCompletionViewSet(GenerationViewSet):
    usage_endpoint = services.ENDPOINT_CHAT
    request_serializer = serializers.ChatCompletionRequestSerializer
    build_job = services.job_for_chat
    whole_body = responses.chat_completion_body
    stream_chunks = responses.chat_completion_chunks


@extend_schema(
    description="OpenAI's text completion, whole or streamed (`stream: true`).",
    request=serializers.CompletionRequestSerializer, tags=["generation"], parameters=[RETRY_AFTER],
    responses={(200, "application/json"): openapi.TextCompletionSerializer, (200, "text/event-stream"): openapi.STREAM,
               **openapi.GENERATION_ERRORS},
)
class CompletionViewSet(GenerationViewSet):
    usage_endpoint = services.ENDPOINT_COMPLETIONS
    request_serializer = serializers.CompletionRequestSerializer
    build_job = services.job_for_completion
    whole_body = responses.text_completion_body
    stream_chunks = responses.text_completion_chunks


@extend_schema(
    # JSON only: the form content type is read as JSON too (curl's default label), never as a form.
    request={"application/json": serializers.GenerateRequestSerializer}, tags=["generation"],
    parameters=[RETRY_AFTER],
    responses={200: serializers.GenerateResponseSerializer, **openapi.GENERATION_ERRORS},
)
class GenerateViewSet(MeteredViewMixin, viewsets.ViewSet):
    """``POST /generate``: the original Flask example's contract, keyed and metered like the rest."""

    permission_classes = [HasScope]
    required_scope = SCOPE_INFERENCE
    opens_usage = True
    usage_endpoint = services.ENDPOINT_GENERATE
    # The Flask example was called with plain `curl -d '{"text": ...}'`, which labels the JSON body as a form.
    parser_classes = [JSONParser, JSONBodyAsFormParser]

    def create(self, request):
        serializer = serializers.GenerateRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        job = services.job_for_generate(data=serializer.validated_data)
        result, headers = services.generation_complete(key=request.auth, request_id=request.request_id, job=job)
        return Response({"text": result.text}, headers=headers)


class TaskViewSet(MeteredViewMixin, viewsets.ViewSet):
    permission_classes = [HasScope]
    required_scope = SCOPE_INFERENCE
    opens_usage = True


@extend_schema(
    request=serializers.SentimentRequestSerializer, tags=["tasks"], parameters=[RETRY_AFTER],
    responses={200: openapi.SentimentResponseSerializer, **openapi.TASK_ERRORS},
)
class SentimentViewSet(TaskViewSet):
    """``POST /v1/sentiment``: ``positive`` / ``negative`` with a probability per label."""

    usage_endpoint = task_services.ENDPOINT_SENTIMENT

    def create(self, request):
        serializer = serializers.SentimentRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        body, headers = task_services.sentiment_run(
            key=request.auth, request_id=request.request_id, texts=serializer.validated_data["input"],
            model=serializer.validated_data.get("model"),
        )
        return Response(body, headers=headers)


@extend_schema(
    request=openapi.QA_REQUEST, tags=["tasks"], parameters=[RETRY_AFTER],
    responses={200: openapi.QAResponseSerializer, **openapi.TASK_ERRORS},
)
class QuestionAnsweringViewSet(TaskViewSet):
    """``POST /v1/qa``: an answer that is a span of the context (with offsets), or null when it has none."""

    usage_endpoint = task_services.ENDPOINT_QA

    def create(self, request):
        serializer = serializers.QARequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        body, headers = task_services.qa_run(
            key=request.auth, request_id=request.request_id, pairs=serializer.validated_data["pairs"],
            model=serializer.validated_data.get("model"),
        )
        return Response(body, headers=headers)


@extend_schema(tags=["models"], parameters=[RETRY_AFTER])
class ModelViewSet(MeteredViewMixin, viewsets.ViewSet):
    """``GET /v1/models``, in OpenAI's list shape."""

    usage_endpoint = "models"
    lookup_value_regex = r"[^/]+"

    @staticmethod
    def _model_object(model_id: str) -> dict:
        return {"id": model_id, "object": "model", "created": 0, "owned_by": "sluice"}

    @staticmethod
    def _models_for(key) -> list[str]:
        """The models served here that this key may use (its allowed models, when it has a list): the
        generators, then the embedding models."""
        allowed = getattr(key, "allowed_models", None)
        return [model for model in [*available_models(), *EMBEDDING_MODELS] if not allowed or model in allowed]

    @extend_schema(operation_id="v1_models_list",
                   responses={200: openapi.ModelListSerializer, **error_responses(*KEYED)})
    def list(self, request):
        return Response({"object": "list", "data": [self._model_object(m) for m in self._models_for(request.auth)]})

    @extend_schema(responses={200: openapi.ModelObjectSerializer, **error_responses(*KEYED, 404)})
    def retrieve(self, request, pk=None):
        if pk not in self._models_for(request.auth):
            raise ApiError(f"The model '{pk}' does not exist.", status_code=404, param="model", code="model_not_found")
        return Response(self._model_object(pk))


class HealthView(APIView):
    """``GET /healthz``: the process is up."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(tags=["health"], responses={200: openapi.HealthSerializer})
    def get(self, request):
        return Response({"status": "ok"})


class ReadyView(APIView):
    """``GET /readyz``: the model, the moderation detectors and the task models are loaded and the database
    answers. Starts loading them if nobody has."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(tags=["health"], responses={200: openapi.ReadinessSerializer, 503: openapi.ReadinessSerializer})
    def get(self, request):
        from inference.task_models import task_models_status
        from moderation.detectors import detectors_status

        model = engine_status() if settings.SLUICE_LOCAL_MODEL else "ready"  # remote models load nothing here
        moderation = detectors_status()
        tasks = task_models_status() if settings.SLUICE_LOCAL_MODEL else "ready"  # the task endpoints need it
        if "not loaded" in (model, moderation, tasks):
            warm_up_in_background()
            model, moderation, tasks = ("loading" if part == "not loaded" else part for part in (model, moderation, tasks))
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            database = "ok"
        except Exception as error:  # any database failure means "not ready", never a 500
            database = f"error: {type(error).__name__}"
        ready = model == "ready" and moderation == "ready" and tasks == "ready" and database == "ok"
        return Response({"ready": ready, "model": model, "moderation": moderation, "tasks": tasks, "database": database},
                        status=200 if ready else 503)
