"""``/v1/admin/models``: the model catalogue for staff, as a DRF viewset.

Who may call it: Django staff users, by their admin session (SessionAuthentication, so CSRF-protected), with
the same model permissions the admin asks for (``DjangoModelPermissions``: add/change/delete catalogue model).
API keys belong to customer accounts and carry scopes over their own account's data; the catalogue is the
operators' and every change must name a person, which a staff user is and an account's key is not.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, viewsets
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import DjangoModelPermissions, IsAdminUser

from inference.catalogue_serializers import CatalogueEntrySerializer
from inference.catalogue_services import catalogue_entry_delete, catalogue_entry_save
from inference.models import CatalogueEntry


@extend_schema(exclude=True)  # the operators' API (README: Models), not part of the customer API's schema
class CatalogueEntryViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                            mixins.UpdateModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet):
    authentication_classes = [SessionAuthentication]
    permission_classes = [IsAdminUser, DjangoModelPermissions]
    throttle_classes: list = []
    serializer_class = CatalogueEntrySerializer
    queryset = CatalogueEntry.objects.all()
    lookup_field = "name"
    lookup_value_regex = r"[^/]+"

    def _save(self, serializer):
        data = dict(serializer.validated_data)
        api_key = data.pop("api_key", None)
        entry = serializer.instance or CatalogueEntry()
        for field, value in data.items():
            setattr(entry, field, value)
        serializer.instance = catalogue_entry_save(entry=entry, user=self.request.user, via="api",
                                                   api_key=api_key or None, clear_api_key=api_key == "")

    perform_create = _save
    perform_update = _save

    def perform_destroy(self, instance):
        catalogue_entry_delete(entry=instance, user=self.request.user, via="api")
