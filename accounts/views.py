"""``/v1/keys`` (a key with keys:manage manages its own account's keys) and ``/v1/usage``."""

from __future__ import annotations

from django.conf import settings
from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from accounts.authentication import HasScope
from accounts.metering import MeteredViewMixin
from accounts.models import SCOPE_KEYS_MANAGE, SCOPE_USAGE_READ, ApiKey
from accounts.openapi import ApiKeyListSerializer, CreatedApiKeySerializer, UsageReportSerializer
from accounts.reports import usage_report
from accounts.serializers import ApiKeySerializer, RotateSerializer, UsageQuerySerializer
from accounts.services import (
    KEY_GRANTED_FIELDS,
    KEY_LIMIT_FIELDS,
    key_create,
    key_expiry_change_check,
    key_grant_check,
    key_granted_settings,
    key_revoke,
    key_rotate,
)
from platform.errors import KEYED, RETRY_AFTER, WITH_BODY, error_responses


KEY_ID = OpenApiParameter("id", str, OpenApiParameter.PATH, description="The key's id (`id` in its object).")


@extend_schema_view(
    list=extend_schema(summary="The account's keys", responses={200: ApiKeyListSerializer, **error_responses(*KEYED)}),
    create=extend_schema(summary="Create a key (its plaintext is in `value`, shown once)",
                         responses={201: CreatedApiKeySerializer, **error_responses(*KEYED, *WITH_BODY)}),
    retrieve=extend_schema(summary="One key", parameters=[KEY_ID],
                           responses={200: ApiKeySerializer, **error_responses(*KEYED, 404)}),
    partial_update=extend_schema(summary="Change a key's name, scopes, models, expiry or limits", parameters=[KEY_ID],
                                 responses={200: ApiKeySerializer, **error_responses(*KEYED, *WITH_BODY, 404, 409)}),
)
@extend_schema(tags=["keys"], parameters=[RETRY_AFTER])
class ApiKeyViewSet(
    MeteredViewMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """``/v1/keys``: a key with the ``keys:manage`` scope manages its own account's keys."""

    permission_classes = [HasScope]
    required_scope = SCOPE_KEYS_MANAGE
    usage_endpoint = "keys"
    serializer_class = ApiKeySerializer
    lookup_field = "lookup_id"
    lookup_url_kwarg = "pk"
    # Ids are base62: anything else is a 404 without a query (a NUL in the path was a 500 on PostgreSQL).
    lookup_value_regex = "[0-9A-Za-z]+"
    http_method_names = ["get", "post", "patch", "head", "options"]

    def get_queryset(self):
        # Another account's key ids simply do not exist here (404, never 403).
        return ApiKey.objects.filter(account=self.request.auth.account).select_related("account").order_by("created_at")

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "account": self.request.auth.account}

    def list(self, request, *args, **kwargs):
        data = self.get_serializer(self.get_queryset(), many=True).data
        return Response({"object": "list", "data": data})

    def create(self, request):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        created = self._create(serializer.validated_data)
        return Response({**self.get_serializer(created.key).data, "value": created.plaintext}, status=201)

    def _create(self, data):
        # A new key inherits what the request does not set from the key creating it, and gets no more than it.
        granted = {**key_granted_settings(self.request.auth), **{f: data[f] for f in KEY_GRANTED_FIELDS if f in data}}
        key_grant_check(grantor=self.request.auth, requested=granted)
        created = key_create(
            account=self.request.auth.account,
            name=data.get("name", ""),
            scopes=granted["scopes"],
            expires_at=granted["expires_at"],
            allowed_models=granted["allowed_models"],
        )
        created.key.allowed_endpoints = granted["allowed_endpoints"]
        for field_name in KEY_LIMIT_FIELDS:
            setattr(created.key, field_name, granted[field_name])
        created.key.save()
        return created

    def perform_update(self, serializer):
        changed = {f: serializer.validated_data[f] for f in KEY_GRANTED_FIELDS if f in serializer.validated_data}
        key_grant_check(grantor=self.request.auth, requested=changed)
        if "expires_at" in changed:
            key_expiry_change_check(key=serializer.instance)
        serializer.save()

    @extend_schema(summary="Revoke a key, for good", request=None, parameters=[KEY_ID],
                   responses={200: ApiKeySerializer, **error_responses(*KEYED, 404)})
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        return Response(self.get_serializer(key_revoke(key=self.get_object())).data)

    # 201: rotation creates a key (as POST /v1/keys does), returned with its plaintext once.
    @extend_schema(summary="A new key with the same settings; the old one works for `grace_seconds` more",
                   request=RotateSerializer, parameters=[KEY_ID],
                   responses={201: CreatedApiKeySerializer, **error_responses(*KEYED, *WITH_BODY, 404, 409)})
    @action(detail=True, methods=["post"])
    def rotate(self, request, pk=None):
        options = RotateSerializer(data=request.data)
        options.is_valid(raise_exception=True)
        old = self.get_object()
        if old.revoked_at is not None:
            raise Http404
        grace = options.validated_data.get("grace_seconds", settings.SLUICE_KEY_ROTATION_GRACE_S)
        key_grant_check(grantor=request.auth, requested=key_granted_settings(old))  # its successor is shown here
        created = key_rotate(key=old, grace_seconds=grace)
        return Response({**self.get_serializer(created.key).data, "value": created.plaintext}, status=201)


@extend_schema(
    tags=["usage"],
    parameters=[UsageQuerySerializer, RETRY_AFTER],
    responses={200: UsageReportSerializer, **error_responses(*KEYED, 400)},
)
class UsageViewSet(MeteredViewMixin, viewsets.ViewSet):
    """``GET /v1/usage``: the key holder's own account, by day, key, endpoint and model."""

    permission_classes = [HasScope]
    required_scope = SCOPE_USAGE_READ
    usage_endpoint = "usage"

    def list(self, request):
        query = UsageQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        report = usage_report(
            since=query.validated_data.get("start_date"),
            until=query.validated_data.get("end_date"),
            account=request.auth.account,
        )
        return Response(report)
